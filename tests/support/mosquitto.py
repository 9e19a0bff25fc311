"""A real Mosquitto (Debian's ``mosquitto`` binary) for tests and benches, on a free loopback port.

    m = Mosquitto(tmp_path)        # generated config: 127.0.0.1 listener, anonymous, persistence
    m.start(); m.url               # mqtt://127.0.0.1:PORT
    m.restart()                    # stop (SIGTERM, persistence saved) and start on the same port
    m.stop()

Reusable by every area: ``extra_config`` appends lines to the generated mosquitto.conf.
Offline queues and in-flight windows are raised from Mosquitto's defaults (1000 queued, 20
in flight) so a fleet's backlog survives an edge restart.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def available() -> bool:
    return Path(MOSQUITTO).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, workdir: str | Path, port: int | None = None, extra_config: str = "", *,
                 users: dict[str, str] | None = None, tls: object | None = None) -> None:
        """``users``: name -> password (anonymous access is then off); ``tls``: a
        ``tests.support.certs.Certs`` (the listener then speaks TLS and requires a client certificate)."""
        self.users = users
        self.tls = tls
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        listener = f"listener {self.port} 127.0.0.1\n"
        if self.tls is not None:
            t = self.tls
            listener += (f"cafile {t.ca}\ncertfile {t.server_cert}\nkeyfile {t.server_key}\n"
                         "require_certificate true\n")
        auth = "allow_anonymous true\n"
        if self.users:
            pw = self.dir / "passwords"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-U", str(pw)],
                           check=True, capture_output=True)
            auth = f"allow_anonymous false\npassword_file {pw}\n"
        self.conf.write_text(
            listener + auth +
            # as root Mosquitto drops to user "mosquitto", which cannot write our temp directory
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes false\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 1000\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            + self.extra_config + "\n"
        )

    def start(self, timeout_s: float = 10.0) -> "Mosquitto":
        if self.proc is not None:
            return self
        self._write_config()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):  # TCP is enough
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Mosquitto writes its persistence file and exits."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
