"""The first end-to-end test: `edge demo --for 20` as a user runs it, in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_for_20_seconds_reads_stores_and_computes(tmp_path: Path):
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    proc = subprocess.run(cmd + ["demo", "--for", "20", "--port", "0", "--data-dir", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["meters_read"] == 6     # incomer, lighting, HVAC, power (behind it), water, gas
    assert summary["vehicles_seen"] == 5
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
