"""analytics/ does no network I/O outside the query layer it is handed: importing every energy
module must not pull in a network library."""

import subprocess
import sys
from pathlib import Path

MODULES = ["analytics.periods", "analytics.workcal", "analytics.energy.factors", "analytics.energy.counters", "analytics.energy.indicators",
           "analytics.energy.baseline", "analytics.energy.anomalies", "analytics.energy.jobs", "analytics.energy.cli"]
NETWORK = ["httpx", "aiomqtt", "paho", "pymodbus", "requests", "socket"]


def test_energy_modules_import_no_network_library():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES)
            + f"print(','.join(n for n in {NETWORK!r} if n in sys.modules and n != 'socket'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
