"""The first end-to-end test: `edge demo --for 20` as a user runs it, in a subprocess."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_for_20_seconds_reads_stores_and_computes(tmp_path: Path):
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    proc = subprocess.run(cmd + ["demo", "--for", "20", "--days", "0", "--port", "0", "--data-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout)
    assert "history" not in summary
    assert summary["meters_read"] == 30    # 5 buildings: incomer, lighting, HVAC, power (behind it), water, gas
    assert summary["vehicles_seen"] == 20
    assert summary["points_stored"] > 20
    assert summary["indicators_computed"] >= 7  # 2 meters' consumption + 5 vehicles' distance today
    assert summary["errors"] == 0, summary["error_detail"]
    assert "API http://127.0.0.1:" in proc.stderr


def test_check_refuses_a_broken_file_naming_object_and_field(tmp_path: Path):
    site = tmp_path / "site.yaml"
    site.write_text("orgs:\n  - {path: '330000', name: Z}\nvehicles:\n  - {id: car-7, plate: 浙A·1}\n", encoding="utf-8")
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    proc = subprocess.run(cmd + ["check", "-c", str(site)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "site.yaml:4" in proc.stderr and "vehicles[0] (id=car-7)" in proc.stderr and "vehicles.org" in proc.stderr


FAKETIME = shutil.which("faketime")


def test_demo_on_monday_4_january_2027_computes_with_a_provisional_calendar(tmp_path: Path):
    """Issue 15 §3: chinese_calendar ends with 2026. `edge demo --for 20` as a process whose clock
    says 2027-01-04 10:00 Beijing time (02:00 UTC; libfaketime, wall clock only) reports no errors,
    computes indicators, and every indicator says provisional_calendar=true. Before: every pass
    raised CalendarNotCovered and the demo exited 2."""
    assert FAKETIME, "faketime is not installed: `make system-deps` installs it (Debian package faketime)"
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    data = tmp_path / "demo"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TZ": "UTC",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # asyncio and timeouts keep real monotonic time
    proc = subprocess.run([FAKETIME, "2027-01-04 02:00:00"] + cmd + ["demo", "--for", "20", "--days", "0", "--port", "0",
                                                                  "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["errors"] == 0, summary["error_detail"]
    assert summary["indicators_computed"] >= 7
    assert summary["meters_read"] == 30 and summary["vehicles_seen"] == 20  # the demo district: 5 buildings of 6 meters
    assert summary["provisional_calendar_years"] == [2027]
    assert "does not cover 2027" in proc.stderr and "analytics.holidays_extra" in proc.stderr

    from edge.query import StoreQuery
    from edge.store import EmbeddedStore
    store = EmbeddedStore(data / "store.sqlite")
    try:
        q = StoreQuery(store)
        for measurement in ("energy_indicator", "fleet_indicator"):
            series = asyncio.run(q.raw(measurement, ["provisional_calendar"], 0, 2**62))
            flags = [bool(v) for s in series for v in s.values]
            assert flags and all(flags), measurement
            # the points are of 2027 (the process's clock): days, the month and the year from 2027-01-01 local
            assert min(int(t) for s in series for t in s.times_ns) >= 1798732800 * 10**9, measurement
    finally:
        store.close()


def test_demo_starts_from_its_history_and_shows_the_district(tmp_path: Path):
    """`edge demo --days 30`: a month of history written and computed before the live part starts; while
    it runs, the district's roll-up ranks its institutions with their month's figures and trips."""
    import re
    import threading

    import httpx

    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    proc = subprocess.Popen(cmd + ["demo", "--for", "25", "--days", "30", "--port", "0", "--data-dir", str(tmp_path / "demo")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    err: list[str] = []
    seen = threading.Event()
    url: list[str] = []

    def read_err() -> None:
        for line in proc.stderr:
            err.append(line)
            m = re.search(r"API (http://127\.0\.0\.1:\d+)/docs", line)
            if m and not url:
                url.append(m.group(1))
                seen.set()

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    try:
        assert seen.wait(120), "".join(err)[-3000:]
        with httpx.Client(base_url=url[0], timeout=10) as c:
            r = c.get("/v1/rollup", params={"org": "330000/330100/330106", "period": "month"})
            assert r.status_code == 200, r.text
            doc = r.json()
            kwh = {x["org"]: x["kwh_per_m2"] for x in doc["rows"]}
            assert len(kwh) == 3 and all(v is not None and v > 0 for v in kwh.values()), doc
            assert [x["rank"] for x in doc["rows"]] == [1, 2, 3] and doc["total"]["vehicles"] == 20
            trips = c.get("/v1/trips", params={"from": "2000-01-01T00:00:00", "limit": 5}).json()["items"]
            assert trips, "the history's trips"
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert proc.returncode == 0, "".join(err)[-3000:]
    summary = json.loads(out)
    assert summary["errors"] == 0, summary["error_detail"]
    h = summary["history"]
    assert h["days"] == 30 and h["readings"] > 30 * 96 * 30 and h["positions"] > 0 and h["indicator_points"] > 0
    assert summary["meters_read"] == 30 and summary["vehicles_seen"] == 20   # and live data on top of it
