"""The fleet job end to end over Points, and `edge analytics fleet` on a line-protocol file."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from analytics.fleet.cli import app
from analytics.fleet.indicators import VehicleInfo
from analytics.fleet.jobs import PointsSource, compute_fleet
from edge.point import Point, parse_lines, to_lines

ORG = "330000/330100/330106/inst-042"


def position_points(tracks, org=ORG):
    pts = []
    for k, vid in enumerate(tracks.vehicles):
        for i in range(int(tracks.offsets[k]), int(tracks.offsets[k + 1])):
            f = {"lat": float(tracks.lat[i]), "lon": float(tracks.lon[i]), "speed_kmh": float(tracks.speed_kmh[i]),
                 "heading_deg": 90.0}
            if tracks.acc[i] >= 0:
                f["acc"] = bool(tracks.acc[i] == 1)
            if not math.isnan(tracks.odometer_km[i]):
                f["odometer_km"] = float(tracks.odometer_km[i])
            pts.append(Point("position", {"vehicle": vid, "org": org}, f, int(tracks.t_ns[i])))
    return pts


def test_job_over_points_gives_indicators_and_trips(builder, at, cn_working):
    b = builder("2025-10-11 08:00").park(1800).drive(3600, 40).park(3600).drive(1800, 40).park(1800)
    source = PointsSource(position_points(b.tracks("浙A·12345")))
    res, rep = compute_fleet(source, [VehicleInfo("浙A·12345", ORG)], at("2025-10-11 00:00"), at("2025-10-12 00:00"),
                             cn_working, now_ns=at("2025-10-12 00:00"), period="day")
    assert rep.fixes_read == len(b.rows)
    (v,) = res.vehicles
    assert v.trips == 2 and v.odometer_note == "trusted"
    assert abs(v.mileage_km - 60.0) < 0.1 and abs(v.odometer_km - 60.0) < 0.15
    kinds = sorted({p.measurement for p in res.points})
    assert kinds == ["fleet_indicator", "trip"]
    trips = [p for p in res.points if p.measurement == "trip"]
    assert [p.fields["weekend"] for p in trips] == [False, False]  # 调休 Saturday


def test_cli_fleet_reads_line_protocol_and_writes_points(builder, at, tmp_path):
    b = builder("2025-10-14 09:00").park(600).drive(1800, 40).park(600)
    src = tmp_path / "positions.lp"
    src.write_text(to_lines(position_points(b.tracks("v1"))), encoding="utf-8")
    out = tmp_path / "fleet.lp"
    r = CliRunner().invoke(app, ["fleet", "--from", "2025-10-14", "--to", "2025-10-15", "--positions", str(src),
                                 "--out", str(out), "--period", "day"])
    assert r.exit_code == 0, r.output
    pts = parse_lines(out.read_text(encoding="utf-8"))
    (trip,) = [p for p in pts if p.measurement == "trip"]
    assert trip.tags == {"vehicle": "v1", "org": ORG}
    assert abs(trip.fields["distance_km"] - 20.0) < 0.05
    org_pts = {p.tags["id"]: p for p in pts if p.tags.get("scope") == "org"}
    assert org_pts["330000"].fields["dispatch_rate"] == 1.0
    assert org_pts["330000"].time_ns == at("2025-10-14 00:00")


def test_cli_refuses_an_empty_period(tmp_path):
    src = tmp_path / "p.lp"
    src.write_text("", encoding="utf-8")
    r = CliRunner().invoke(app, ["fleet", "--from", "2025-10-15", "--to", "2025-10-14", "--positions", str(src)])
    assert r.exit_code != 0


def test_period_bounds_split_on_local_calendar(at):
    from analytics.fleet.jobs import period_bounds
    days = period_bounds("day", at("2025-10-14 12:00"), at("2025-10-16 00:00"))
    assert days == [(at("2025-10-14 12:00"), at("2025-10-15 00:00")), (at("2025-10-15 00:00"), at("2025-10-16 00:00"))]
    weeks = period_bounds("week", at("2025-10-01 00:00"), at("2025-10-20 00:00"))
    assert [a for a, _ in weeks] == [at("2025-10-01 00:00"), at("2025-10-06 00:00"), at("2025-10-13 00:00")]
    months = period_bounds("month", at("2025-11-15 00:00"), at("2026-01-02 00:00"))
    assert [a for a, _ in months] == [at("2025-11-15 00:00"), at("2025-12-01 00:00"), at("2026-01-01 00:00")]


def test_weekly_recompute_flags_the_under_used_vehicle(builder, at, cn_working):
    from analytics.fleet.jobs import recompute
    from analytics.fleet.tracks import Tracks
    busy = builder("2025-11-03 00:00", interval_s=60)
    idle = builder("2025-11-03 00:00", interval_s=60)
    for day in range(28):
        if day % 7 < 5:
            busy.park(9 * 3600).drive(4 * 3600, 30, heading_deg=90 * (day % 4)).park(11 * 3600)
        else:
            busy.park(24 * 3600)
        if day % 7 == 2:
            idle.park(10 * 3600).drive(1200, 30).park(14 * 3600 - 1200)
        else:
            idle.park(24 * 3600)
    src = PointsSource(position_points(Tracks.concat([busy.tracks("busy"), idle.tracks("idle")])))
    infos = [VehicleInfo("busy", ORG), VehicleInfo("idle", ORG)]
    pts, rep = recompute(src, infos, at("2025-11-03 00:00"), at("2025-12-01 00:00"), cn_working,
                         now_ns=at("2025-12-01 00:00"), period="week")
    last = [p for p in pts if p.measurement == "fleet_indicator" and p.time_ns == at("2025-11-24 00:00")]
    flags = {p.tags["id"]: p.fields["under_used"] for p in last}
    assert flags["busy"] is False and flags["idle"] is True and flags[ORG] == 1
    weekly_trips = [p.fields["trips"] for p in pts if p.measurement == "fleet_indicator" and p.tags["id"] == "idle"]
    assert weekly_trips == [1, 1, 1, 1]


async def test_run_fleet_reads_through_the_query_layer(builder, at, cn_working, tmp_path):
    from analytics.fleet.jobs import run_fleet
    from analytics.fleet.tracks import Tracks
    from edge.query import StoreQuery
    from edge.store import EmbeddedStore
    a = builder("2025-10-11 08:00").park(1800).drive(3600, 40).park(3600).drive(1800, 40).park(1800).tracks("浙A·12345")
    b = builder("2025-10-11 09:00", lat=30.3).park(600).drive(1200, 30).park(600).tracks("浙A·54321", acc=False)
    store = EmbeddedStore(tmp_path / "store.sqlite")
    try:
        pts = position_points(Tracks.concat([a, b]))
        store.write_points(pts)
        infos = [VehicleInfo("浙A·12345", ORG), VehicleInfo("浙A·54321", ORG), VehicleInfo("no-data", ORG)]
        out, rep = await run_fleet(StoreQuery(store), infos, at("2025-10-11 00:00"), at("2025-10-12 00:00"),
                                   cn_working, now_ns=at("2025-10-12 00:00"))
    finally:
        store.close()
    assert rep.fixes_read == len(pts)
    trips = [p for p in out if p.measurement == "trip"]
    assert [p.tags["vehicle"] for p in trips] == ["浙A·12345", "浙A·12345", "浙A·54321"]
    assert [p.fields["method"] for p in trips] == ["acc", "acc", "distance"]
    org = next(p for p in out if p.tags.get("scope") == "org" and p.tags["id"] == ORG)
    assert org.fields["vehicles_dispatched"] == 2 and abs(org.fields["dispatch_rate"] - 2 / 3) < 1e-9


async def test_chunked_fleet_pass_gives_the_same_points_as_one_pass(builder, at, cn_working, tmp_path):
    """The service computes today a few vehicles at a time (bounded memory); nothing may change."""
    from analytics.fleet.jobs import run_fleet, run_fleet_chunked
    from analytics.fleet.tracks import Tracks
    from edge.point import to_line
    from edge.query import StoreQuery
    from edge.store import EmbeddedStore
    parts = [builder(f"2025-10-11 0{8 + i % 2}:00", lat=30.27 + 0.01 * i).park(600).drive(1200 + 300 * i, 35)
             .park(900).drive(900, 30).park(600).tracks(f"veh-{i}", acc=(i % 2 == 0)) for i in range(7)]
    store = EmbeddedStore(tmp_path / "store.sqlite")
    try:
        store.write_points(position_points(Tracks.concat(parts)))
        orgs = [ORG, "330000/330100/330106/inst-9"]
        infos = [VehicleInfo(f"veh-{i}", orgs[i % 2]) for i in range(7)] + [VehicleInfo("idle", ORG)]
        args = (StoreQuery(store), infos, at("2025-10-11 00:00"), at("2025-10-12 00:00"), cn_working)
        whole, _ = await run_fleet(*args, now_ns=at("2025-10-12 00:00"))
        chunked = await run_fleet_chunked(*args, now_ns=at("2025-10-12 00:00"), chunk=3)
    finally:
        store.close()
    key = lambda p: (p.measurement, sorted(p.tags.items()), p.time_ns)  # noqa: E731
    a, b = sorted(chunked, key=key), sorted(whole, key=key)
    assert [key(p) for p in a] == [key(p) for p in b]
    for p, q in zip(a, b):  # same values; floats up to summation order
        assert p.fields.keys() == q.fields.keys()
        for k, v in p.fields.items():
            assert v == (pytest.approx(q.fields[k], rel=1e-9) if isinstance(v, float) else q.fields[k]), (k, to_line(p))
    assert sum(p.measurement == "trip" for p in chunked) >= 14


def test_cli_fleet_reads_the_sites_store(builder, at, tmp_path):
    from edge.store import EmbeddedStore
    db = tmp_path / "store.sqlite"
    site = tmp_path / "site.yaml"
    site.write_text(f"""
orgs:
  - {{path: "330000", name: 浙江省}}
  - {{path: "330000/330100", name: 杭州市}}
  - {{path: "330000/330100/330106", name: 西湖区}}
  - {{path: "{ORG}", name: 机关事务管理中心}}
geofences:
  - {{name: compound, circle: {{lat: 30.2741, lon: 120.1551, radius_m: 300}}}}
vehicles:
  - {{id: "浙A·12345", org: "{ORG}", home: compound}}
  - {{id: "浙A·00001", org: "{ORG}"}}
store: {{kind: embedded, path: "{db}"}}
""", encoding="utf-8")
    b = builder("2025-10-01 09:00").park(600).drive(1800, 40).park(3600 * 20)  # holiday, parked away overnight
    store = EmbeddedStore(db)
    try:
        store.write_points(position_points(b.tracks("浙A·12345")))
    finally:
        store.close()
    out = tmp_path / "out.lp"
    r = CliRunner().invoke(app, ["fleet", "--from", "2025-10-01", "--to", "2025-10-03", "--site", str(site),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    pts = parse_lines(out.read_text(encoding="utf-8"))
    day1 = {p.tags["id"]: p for p in pts if p.measurement == "fleet_indicator" and p.time_ns == at("2025-10-01 00:00")}
    assert day1["浙A·12345"].fields["holiday_trips"] == 1
    assert day1[ORG].fields["dispatch_rate"] == 0.5
    day2 = {p.tags["id"]: p for p in pts if p.measurement == "fleet_indicator" and p.time_ns == at("2025-10-02 00:00")}
    assert day2["浙A·12345"].fields["overnight_away"] == 1  # the night into Oct 2, 02:00, 20 km from the compound


def test_params_from_a_config_section():
    from types import SimpleNamespace

    from analytics.fleet.jobs import params_from_config
    from analytics.fleet.trips import Method
    cfg = SimpleNamespace(stop_radius_m=150.0, min_stop_s=300.0, segmentation="distance", max_speed_kmh=160.0,
                          overspeed_kmh=80.0, under_used_weeks=6)
    job, rules = params_from_config(cfg)
    assert (job.trips.stop_radius_m, job.trips.min_stop_s, job.trips.method) == (150.0, 300.0, Method.distance)
    assert job.clean.max_speed_kmh == 160.0 and job.fleet.max_speed_kmh == 160.0
    assert job.fleet.under_used_weeks == 6 and rules.overspeed_kmh == 80.0
    assert job.trips.max_gap_s == 3600.0  # untouched default
