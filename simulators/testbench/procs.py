"""The real processes a bench run drives: influxd 1.x, Mosquitto, the edge, simulator processes.

Each binds loopback ports chosen free at start and keeps its files in the run's directory. The
edge runs as ``python -m edge.app.cli run -c site.yaml`` so that chaos can ``kill -9`` it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_tcp(port: int, proc: subprocess.Popen, log: Path, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout_s} s")


def _terminate(proc: subprocess.Popen | None, timeout_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Influx:
    """influxd 1.x with its data under ``workdir``; ``stop``/``start`` is an outage on the same ports."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.rpc_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "influxd.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> "Influx":
        d = self.dir
        conf = d / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  index-version = "inmem"
  query-log-enabled = false
[retention]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "127.0.0.1:{self.http_port}"
  log-enabled = false
  max-row-limit = 0
[logging]
  level = "warn"
  suppress-logo = true
""")
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([INFLUXD, "run", "-config", str(conf)], stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL, cwd=d)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/ping", timeout=1.0).status_code == 204:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s")

    def create_database(self, name: str) -> None:
        httpx.post(self.url + "/query", params={"q": f'CREATE DATABASE "{name}"'}, timeout=30).raise_for_status()

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


class Mosquitto:
    """Mosquitto with persistence and unbounded offline queues (a fleet's backlog survives an edge restart)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                        f"persistence true\npersistence_location {data}/\nautosave_interval 1\n"
                        "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n"
                        "log_dest stderr\nlog_type error\nlog_type warning\n")
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        _wait_tcp(self.port, self.proc, self.log, 10.0, "mosquitto")
        return self

    def stop(self) -> None:
        _terminate(self.proc)  # SIGTERM: Mosquitto saves its persistence file
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class PythonProc:
    """A Python module run as a child process of the bench (simulators, the edge)."""

    def __init__(self, args: list[str], log: Path, name: str) -> None:
        self.args, self.log, self.name = args, Path(log), name
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None

    def start(self) -> "PythonProc":
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, *self.args], stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.ps = psutil.Process(self.proc.pid)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        _terminate(self.proc, timeout_s)

    def sample(self) -> tuple[float, float] | None:
        """(cpu seconds so far, RSS MB), or None when not running."""
        if not self.alive or self.ps is None:
            return None
        try:
            t = self.ps.cpu_times()
            return t.user + t.system, self.ps.memory_info().rss / 2**20
        except psutil.Error:
            return None


def wait_file(path: Path, proc: PythonProc, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited: {proc.log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not become ready within {timeout_s} s")
