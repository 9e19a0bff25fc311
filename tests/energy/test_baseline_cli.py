"""`edge analytics baseline` end to end: a real school's year in the embedded store, its weather file."""

import subprocess
import sys

import numpy as np

from analytics.periods import LocalCalendar
from edge.point import Point, parse_lines
from edge.store import EmbeddedStore
from tests.energy.conftest import school_csv_path


def test_baseline_verb_fits_reports_savings_and_writes_points(tmp_path):
    cal = LocalCalendar()
    rows = [ln.split(",") for ln in school_csv_path().read_text().splitlines()[1:]]
    kwh = np.array([float(r[1]) if r[1] else np.nan for r in rows])
    import datetime as dt
    t0 = cal.midnight_ns(dt.date(2018, 1, 1))
    times = t0 + (np.arange(1, len(rows) + 1) * 3600 * 10**9)  # the counter at each hour's end
    counter = 50_000 + np.nancumsum(kwh)
    store = EmbeddedStore(tmp_path / "store.sqlite")
    store.write_points([Point("meter", {"meter": "school", "org": "330000"}, {"active_energy_import_kwh": float(c)}, int(t))
                        for t, c, k in zip(times, counter, kwh) if not np.isnan(k)])
    store.close()
    site = tmp_path / "site.yaml"
    site.write_text(f"""
orgs: [{{path: "330000", name: Z}}]
meters:
  - {{id: school, profile: chint-dtsu666, org: "330000", transport: {{host: 127.0.0.1, port: 5020}}}}
store: {{kind: embedded, path: {tmp_path / 'store.sqlite'}}}
analytics: {{weather_csv: {school_csv_path()}}}
""")
    proc = subprocess.run([sys.executable, "-m", "edge.app.cli", "analytics", "baseline", "-c", str(site),
                           "--baseline", "2018-01-01:2018-12-31", "--reporting", "2018-07-01:2018-12-31"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "school:" in proc.stderr and "G14" in proc.stderr
    points = parse_lines(proc.stdout)
    base = [p for p in points if p.measurement == "energy_baseline"]
    assert len(base) == 1 and base[0].tags["meter"] == "school"
    f = base[0].fields
    assert f["reporting_days"] > 150 and "g14_ok" in f and "cvrmse" in f
    # the reporting period lies inside the baseline year: predicted and actual agree closely
    assert abs(f["savings_fraction"]) < 0.1


def test_baseline_verb_without_weather_says_what_to_set(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text('orgs: [{path: "330000", name: Z}]\n')
    proc = subprocess.run([sys.executable, "-m", "edge.app.cli", "analytics", "baseline", "-c", str(site),
                           "--baseline", "2018-01-01:2018-12-31", "--reporting", "2019-01-01:2019-06-30"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "analytics.weather_csv" in proc.stderr
