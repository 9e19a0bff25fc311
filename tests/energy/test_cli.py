"""`edge analytics energy --from --to` (the sub-app) on a site file and a readings CSV."""

import datetime as dt

import pytest
from typer.testing import CliRunner

from analytics.energy.cli import app
from analytics.periods import LocalCalendar
from edge.point import parse_lines

SITE = """
orgs:
  - {path: "330000", name: Zhejiang}
  - {path: "330000/330100", name: Hangzhou}
buildings:
  - {id: b1, org: "330000/330100", floor_area_m2: 1000, occupants: 50}
meters:
  - id: m1
    profile: eastron-sdm630
    building: b1
    transport: {kind: tcp, host: 127.0.0.1, port: 5020}
"""


def test_energy_verb_prints_indicator_points(tmp_path):
    (tmp_path / "site.yaml").write_text(SITE)
    cal = LocalCalendar()
    t0 = cal.midnight_ns(dt.date(2025, 10, 1)) - 900 * 10**9
    lines = ["meter,time_ns,value"]
    for k in range(96 + 3):
        lines.append(f"m1,{t0 + k * 900 * 10**9},{100 + k * 0.25}")   # 1 kW
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["energy", "--from", "2025-10-01", "--to", "2025-10-01", "--site", str(tmp_path / "site.yaml"),
                                   "--readings", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    pts = parse_lines(res.stdout)
    meter_day = [p for p in pts if p.tags["scope"] == "meter" and p.tags["period"] == "day"]
    # readings in steps of 0.25 kWh, written with repr: their deltas and sums are exact
    assert len(meter_day) == 1 and meter_day[0].fields["consumption_kwh"] == 24.0
    assert meter_day[0].fields["off_hours_share"] == 1.0        # 2025-10-01 is National Day
    assert {p.tags["scope"] for p in pts} == {"meter", "building", "org"}


def test_energy_verb_without_source_says_so(tmp_path):
    (tmp_path / "site.yaml").write_text(SITE)
    res = CliRunner().invoke(app, ["energy", "--from", "2025-10-01", "--to", "2025-10-01", "--site", str(tmp_path / "site.yaml")])
    assert res.exit_code == 2


def test_energy_verb_through_a_wired_query_layer(tmp_path):
    import pytest

    import analytics.energy.cli as cli
    store_mod = pytest.importorskip("edge.store")
    query_mod = pytest.importorskip("edge.query")
    from edge.point import Point

    path = tmp_path / "s.sqlite"
    store = store_mod.EmbeddedStore(path)
    cal = LocalCalendar()
    t0 = cal.midnight_ns(dt.date(2025, 10, 1)) - 900 * 10**9
    store.write_points([Point("meter", {"meter": "m1", "org": "330000/330100", "carrier": "electricity"},
                              {"active_energy_import_kwh": 100 + k * 0.5}, t0 + k * 900 * 10**9) for k in range(99)])
    store.close()
    (tmp_path / "site.yaml").write_text(SITE)
    opened = []

    def factory(site):
        st = store_mod.EmbeddedStore(path)
        opened.append(st)
        return query_mod.StoreQuery(st)

    cli.use_query_factory(factory)
    try:
        res = CliRunner().invoke(app, ["energy", "--from", "2025-10-01", "--to", "2025-10-01", "--site", str(tmp_path / "site.yaml")])
    finally:
        cli.use_query_factory(None)
        for st in opened:
            st.close()
    assert res.exit_code == 0, res.output
    day = [p for p in parse_lines(res.stdout) if p.tags["scope"] == "meter" and p.tags["period"] == "day"]
    assert day[0].fields["consumption_kwh"] == 48.0


def test_building_and_org_totals_per_m2_and_person(tmp_path):
    (tmp_path / "site.yaml").write_text(SITE)
    cal = LocalCalendar()
    t0 = cal.midnight_ns(dt.date(2025, 10, 1)) - 900 * 10**9
    lines = ["meter,time_ns,value"] + [f"m1,{t0 + k * 900 * 10**9},{100 + k * 0.25}" for k in range(99)]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["energy", "--from", "2025-10-01", "--to", "2025-10-01", "--site", str(tmp_path / "site.yaml"),
                                   "--readings", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    pts = parse_lines(res.stdout)
    b_year = next(p for p in pts if p.tags["scope"] == "building" and p.tags["carrier"] == "all"
                  and p.tags["period"] == "year")
    # 24 kWh x 0.1229 kgce over 1000 m2 and 50 people
    assert b_year.fields["kgce"] == pytest.approx(24 * 0.1229)
    assert b_year.fields["kgce_per_m2"] == pytest.approx(24 * 0.1229 / 1000)
    assert b_year.fields["kgce_per_person"] == pytest.approx(24 * 0.1229 / 50)
    assert b_year.fields["kwh_per_m2"] == pytest.approx(0.024)
    assert b_year.fields["kgce_per_m2_target_ratio"] == pytest.approx(24 * 0.1229 / 1000 / (18.48 * 0.95))
    org_top = next(p for p in pts if p.tags["scope"] == "org" and p.tags["id"] == "330000"
                   and p.tags["carrier"] == "all" and p.tags["period"] == "day")
    assert org_top.fields["kgce_per_m2"] == pytest.approx(24 * 0.1229 / 1000)


def test_energy_verb_over_2027_computes_provisionally_and_warns(tmp_path):
    (tmp_path / "site.yaml").write_text(SITE)
    cal = LocalCalendar()
    t0 = cal.midnight_ns(dt.date(2027, 1, 1)) - 900 * 10**9
    lines = ["meter,time_ns,value"] + [f"m1,{t0 + k * 900 * 10**9},{100 + k * 0.25}" for k in range(96 + 3)]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["energy", "--from", "2027-01-01", "--to", "2027-01-01", "--site", str(tmp_path / "site.yaml"),
                                   "--readings", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert "does not cover 2027" in res.stderr and "analytics.holidays_extra" in res.stderr
    pts = parse_lines(res.stdout)
    ind = [p for p in pts if p.measurement == "energy_indicator"]   # energy_item rows do not depend on the calendar
    assert ind and all(p.fields["provisional_calendar"] is True for p in ind)
    (day,) = [p for p in pts if p.tags["scope"] == "meter" and p.tags["period"] == "day"]
    assert day.fields["off_hours_share"] == pytest.approx(0.625)   # a provisional workday: 15 of 24 h outside 08:30-17:30
