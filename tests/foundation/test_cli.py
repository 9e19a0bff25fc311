"""The `edge` command as a user runs it: check, run with a clean SIGTERM shutdown that flushes."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from simulators.meters import MeterServer

EDGE = [sys.executable, "-m", "edge.app.cli"]


def _site(tmp: Path, port: int, profile: str = "chint-dtsu666", extra: str = "") -> Path:
    p = tmp / "site.yaml"
    p.write_text(f"""
site: {{name: cli-test}}
orgs:
  - {{path: "330000", name: 浙江省}}
  - {{path: "330000/330100", name: 杭州市}}
buildings:
  - {{id: hq, org: "330000/330100", floor_area_m2: 5000, occupants: 100}}
meters:
  - id: m1
    profile: {profile}
    building: hq
    interval_s: 1
    transport: {{kind: tcp, host: 127.0.0.1, port: {port}}}
store: {{kind: embedded, path: {tmp / 'store.sqlite'}, flush_interval_ms: 200}}
outbox: {{path: {tmp / 'outbox.sqlite'}}}
api: {{port: 0}}
{extra}""", encoding="utf-8")
    return p


def test_check_prints_what_would_run(tmp_path):
    site = _site(tmp_path, 5020)
    proc = subprocess.run(EDGE + ["check", "-c", str(site)], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout and "m1" in proc.stdout and "chint-dtsu666" in proc.stdout


def test_check_unknown_profile_names_meter_and_field(tmp_path):
    site = _site(tmp_path, 5020, profile="no-such-meter")
    proc = subprocess.run(EDGE + ["check", "-c", str(site)], capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "no-such-meter" in proc.stderr and "m1" in proc.stderr and "profile" in proc.stderr
    assert "site.yaml" in proc.stderr


async def test_sigterm_stops_cleanly_and_flushes_the_outbox(tmp_path):
    server = MeterServer("chint-dtsu666", unit_ids=[1], port=0, seed=1)
    await server.start()
    try:
        site = _site(tmp_path, server.port)
        proc = subprocess.Popen(EDGE + ["run", "-c", str(site), "--log-level", "info"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        store = tmp_path / "store.sqlite"
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline:
            await _asleep(0.5)
            if store.exists():
                try:
                    n = sqlite3.connect(store).execute("SELECT count(*) FROM points").fetchone()[0]
                except sqlite3.Error:
                    n = 0
                if n > 0:
                    break
        assert n > 0, "no reading reached the store"
        await _asleep(1.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "edge stopped" in err
        depth = sqlite3.connect(tmp_path / "outbox.sqlite").execute("SELECT count(*) FROM outbox").fetchone()[0]
        assert depth == 0, "SIGTERM left points undelivered in the outbox"
    finally:
        await server.stop()


async def _asleep(s: float) -> None:
    import asyncio
    await asyncio.sleep(s)
