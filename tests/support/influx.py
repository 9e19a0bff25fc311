"""A real InfluxDB 1.x (Debian's ``influxd``, 1.6.7) for tests and benches, on free loopback ports.

    s = InfluxServer(tmp_path)     # generated config: 127.0.0.1 HTTP + RPC ports, data/meta/wal dirs
    s.start(); s.url               # http://127.0.0.1:PORT
    s.create_database("sensing")
    s.query("SELECT count(*) FROM meter", db="sensing")
    s.stop(); s.start()            # an outage: same ports, same data
    s.kill()                       # SIGKILL

Reusable by every area. As pytest fixtures (in a conftest.py)::

    from tests.support.influx import influx_server, influx_db   # noqa: F401  (session server, fresh db)

``influx_server`` is session-scoped and shared: do not stop it in a test; for an outage test make
your own ``InfluxServer`` (starts in about a second). ``auth=True`` turns on authentication and
creates an admin user (``admin_user``/``admin_password``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


def available() -> bool:
    return Path(INFLUXD).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InfluxServer:
    def __init__(self, workdir: str | Path, *, http_port: int | None = None, rpc_port: int | None = None,
                 auth: bool = False, admin_user: str = "admin", admin_password: str = "admin-pw",
                 max_body_size: int = 25_000_000, extra_config: str = "") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = http_port or free_port()
        self.rpc_port = rpc_port or free_port()
        self.auth = auth
        self.admin_user, self.admin_password = admin_user, admin_password
        self.extra_config = extra_config
        self.max_body_size = max_body_size
        self.proc: subprocess.Popen | None = None
        self.conf = self.dir / "influxdb.conf"
        self.log = self.dir / "influxd.log"
        self._admin_made = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        d = self.dir
        self.conf.write_text(f"""
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  write-timeout = "10s"

[retention]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.http_port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  write-tracing = false
  max-row-limit = 0
  max-body-size = {self.max_body_size}

[logging]
  level = "warn"
  suppress-logo = true
{self.extra_config}
""")

    def start(self, timeout_s: float = 30.0) -> "InfluxServer":
        if self.running:
            return self
        self._write_config()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([INFLUXD, "run", "-config", str(self.conf)], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL, cwd=self.dir)
        logf.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/ping", timeout=1.0).status_code == 204:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            self.kill()
            raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s: {self.log.read_text()[-3000:]}")
        if self.auth and not self._admin_made:
            # the first user may be created without credentials; it must be an admin
            self.query(f"CREATE USER \"{self.admin_user}\" WITH PASSWORD '{self.admin_password}' "
                       "WITH ALL PRIVILEGES", auth=False)
            self._admin_made = True
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait (influxd flushes its WAL): an orderly outage."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> "InfluxServer":
        self.stop()
        return self.start()

    # -- small client for test assertions --------------------------------------------------------------

    def query(self, q: str, db: str | None = None, *, auth: bool = True, epoch: str = "ns") -> list[dict]:
        """Run InfluxQL; returns the list of results (each ``{"series": [...]}``); raises on errors."""
        params: dict[str, Any] = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        kw: dict[str, Any] = {}
        if self.auth and auth and self._admin_made:
            kw["auth"] = (self.admin_user, self.admin_password)
        r = httpx.post(self.url + "/query", params=params, timeout=30.0, **kw)
        doc = r.json()
        if r.status_code != 200 or "error" in doc:
            raise RuntimeError(f"influx query failed ({r.status_code}): {doc}")
        for res in doc.get("results", []):
            if "error" in res:
                raise RuntimeError(f"influx query failed: {res['error']} ({q})")
        return doc.get("results", [])

    def rows(self, q: str, db: str) -> list[tuple[dict, dict]]:
        """(tags, row as {column: value}) for every row of the first statement's result."""
        out = []
        for s in self.query(q, db)[0].get("series", []):
            for v in s.get("values", []):
                out.append((s.get("tags") or {}, dict(zip(s["columns"], v, strict=True))))
        return out

    def create_database(self, name: str) -> str:
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"')

    def write(self, db: str, lines: str) -> httpx.Response:
        kw: dict[str, Any] = {}
        if self.auth:
            kw["auth"] = (self.admin_user, self.admin_password)
        return httpx.post(self.url + "/write", params={"db": db, "precision": "ns"}, content=lines.encode(),
                          timeout=30.0, **kw)


def new_db_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# -- pytest fixtures (import them into a conftest.py) ------------------------------------------------


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory):
    """One influxd for the whole session (do not stop it in a test)."""
    if not available():
        pytest.skip("influxd is not installed")
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influx_db(influx_server: InfluxServer):
    """A fresh database on the session server, dropped afterwards."""
    name = influx_server.create_database(new_db_name())
    yield name
    try:
        influx_server.drop_database(name)
    except (RuntimeError, httpx.HTTPError):
        pass
