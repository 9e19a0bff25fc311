"""One conformance suite, two stores: InfluxQL on a real influxd 1.6.7, and SQL on the embedded store.

The expected answers are computed here independently (zoneinfo, plain Python) from the same
dataset: Asia/Shanghai day buckets across midnight, a month boundary that is a different month in
UTC, org scoping where ``330000/3301000`` must not count as under ``330000/330100``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.point import Point
from edge.query import InfluxQLQuery, Query, StoreQuery, Where
from edge.store import EmbeddedStore
from tests.support.influx import InfluxServer, new_db_name

SH = ZoneInfo("Asia/Shanghai")
NS = 1_000_000_000


def sh(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """A Shanghai wall-clock time as UTC ns."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=SH).timestamp()) * NS


ORGS = {
    "m-1": "330000/330100/330106/inst-1",
    "m-2": "330000/330100/inst-2",
    "m-3": "330000/3301000/inst-3",  # a sibling whose code starts with 330100: not under 330100
    "m-4": "330000/330200/inst-4",
}
TIMES = [
    sh(2026, 1, 15, 10), sh(2026, 1, 31, 22), sh(2026, 1, 31, 23, 30), sh(2026, 1, 31, 23, 59, 59),
    sh(2026, 2, 1, 0, 0, 0), sh(2026, 2, 1, 0, 30), sh(2026, 2, 1, 1, 15), sh(2026, 2, 2, 12),
    sh(2026, 2, 28, 23, 45), sh(2026, 3, 1, 0, 0, 0), sh(2026, 3, 1, 7, 10),
]
START, END = sh(2026, 1, 1), sh(2026, 4, 1)


def dataset() -> list[Point]:
    pts = []
    for k, meter in enumerate(sorted(ORGS)):
        for j, t in enumerate(TIMES):
            power = round(3.0 + k * 10 + ((j * 7) % 5) * 1.5 - (j % 3) * 0.25, 3)
            pts.append(Point("meter", {"meter": meter, "org": ORGS[meter], "carrier": "electricity"},
                             {"active_power_total_kw": power, "active_energy_import_kwh": 100.0 * (k + 1) + j * 2.5},
                             t))
    for j, t in enumerate(TIMES[:6]):
        pts.append(Point("position", {"vehicle": "浙A·12345", "org": ORGS["m-1"]},
                         {"lat": 30.25 + j / 1000, "lon": 120.16, "acc": j % 2 == 0, "satellites": 7 + j,
                          "plate": "浙A·12345"}, t))
    # a later write of the same point overwrites one field and keeps the others (InfluxDB's merge)
    pts.append(Point("meter", {"meter": "m-4", "org": ORGS["m-4"], "carrier": "electricity"},
                     {"active_power_total_kw": 99.5}, TIMES[-1]))
    return pts


def expected_points() -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(meter, field) -> [(time, value)] after overwrites."""
    cur: dict[tuple[str, str, int], float] = {}
    for p in dataset():
        if p.measurement != "meter":
            continue
        for f, v in p.fields.items():
            cur[(p.tags["meter"], f, p.time_ns)] = v
    out: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for (m, f, t), v in sorted(cur.items(), key=lambda kv: kv[0][2]):
        out[(m, f)].append((t, v))
    return out


def reference(meter: str, field: str, label, agg: str, lo: int = START, hi: int = END) -> dict[int, float]:
    groups: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for t, v in expected_points()[(meter, field)]:
        if lo <= t < hi:
            groups[label(t)].append((t, v))
    out = {}
    for w, tv in sorted(groups.items()):
        vals = [v for _, v in tv]
        out[w] = {"mean": sum(vals) / len(vals), "sum": sum(vals), "min": min(vals), "max": max(vals),
                  "count": len(vals), "spread": max(vals) - min(vals), "first": tv[0][1], "last": tv[-1][1]}[agg]
    return out


def day_label(t: int) -> int:
    d = datetime.fromtimestamp(t / NS, SH)
    return int(datetime(d.year, d.month, d.day, tzinfo=SH).timestamp()) * NS


def month_label(t: int) -> int:
    d = datetime.fromtimestamp(t / NS, SH)
    return int(datetime(d.year, d.month, 1, tzinfo=SH).timestamp()) * NS


def fixed_label(every_s: int):
    return lambda t: (t + 8 * 3600 * NS) // (every_s * NS) * (every_s * NS) - 8 * 3600 * NS


# --- the two stores ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(request, tmp_path_factory: pytest.TempPathFactory):
    """Each store loaded once with the dataset; returns a factory of Query objects (per test loop)."""
    lines = [p.to_line() for p in dataset()]
    made: dict[str, object] = {}

    def get(kind: str):
        if kind in made:
            return made[kind]
        if kind == "influxdb":
            server: InfluxServer = request.getfixturevalue("influx_server")
            db = server.create_database(new_db_name("conf"))
            r = server.write(db, "\n".join(lines))
            assert r.status_code == 204, r.text
            made[kind] = lambda: InfluxQLQuery(server.url, db)
        else:
            path = tmp_path_factory.mktemp("store") / "store.sqlite"
            store = EmbeddedStore(path)
            assert store.write_lines(lines) == []
            store.close()
            made[kind] = lambda: StoreQuery(EmbeddedStore(path))
        return made[kind]

    return get


@pytest.fixture(params=["influxdb", "embedded"])
async def q(request, loaded):
    if request.param == "influxdb":
        request.applymarker(pytest.mark.influxdb)
    query: Query = loaded(request.param)()
    yield query
    await query.aclose()


def as_dict(series) -> dict[tuple[str, str], dict[int, float]]:
    return {(s.tags.get("meter", s.tags.get("vehicle")), s.field): dict(zip(s.times_ns.tolist(), s.values.tolist(), strict=True))
            for s in series}


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a)


# --- cases ---------------------------------------------------------------------------------------


async def test_both_stores_implement_the_protocol(q: Query):
    assert isinstance(q, Query)


async def test_latest_per_series_scoped_to_an_org_segment_wise(q: Query):
    rows = await q.latest("meter", ["active_power_total_kw"], Where(org="330000/330100"))
    assert [r.tags["meter"] for r in rows] == ["m-1", "m-2"]  # not m-3 (330000/3301000/...)
    exp = expected_points()
    for r in rows:
        t, v = exp[(r.tags["meter"], "active_power_total_kw")][-1]
        assert (r.time_ns, r.value) == (t, v)
        assert r.tags["org"] == ORGS[r.tags["meter"]] and r.measurement == "meter"


async def test_latest_of_every_field_with_a_tag_filter_and_the_merge_of_a_rewritten_point(q: Query):
    rows = await q.latest("meter", None, Where(tags={"meter": ("m-3", "m-4")}))
    got = {(r.tags["meter"], r.field): (r.time_ns, r.value) for r in rows}
    exp = expected_points()
    assert got == {k: exp[k][-1] for k in exp if k[0] in ("m-3", "m-4")}
    assert got[("m-4", "active_power_total_kw")][1] == 99.5  # overwritten
    assert got[("m-4", "active_energy_import_kwh")][1] == 400.0 + 10 * 2.5  # kept


async def test_org_filter_on_the_exact_path_and_on_an_empty_scope(q: Query):
    assert {r.tags["meter"] for r in await q.latest("meter", ["active_power_total_kw"], Where(org="330000/3301000"))} == {"m-3"}
    assert {r.tags["meter"] for r in await q.latest("meter", ["active_power_total_kw"], Where(org="330000"))} == set(ORGS)
    assert await q.latest("meter", ["active_power_total_kw"], Where(org="330000/330300")) == []
    assert await q.latest("meter", ["active_power_total_kw"], Where(tags={"meter": "nope"})) == []


async def test_latest_since_leaves_out_series_without_recent_values(q: Query):
    rows = await q.latest("position", ["lat"], since_ns=sh(2026, 2, 2))
    assert rows == []
    rows = await q.latest("position", ["lat"], since_ns=sh(2026, 2, 1))
    assert len(rows) == 1 and rows[0].time_ns == TIMES[5]


async def test_raw_range_is_half_open_and_keeps_types(q: Query):
    lo, hi = TIMES[2], TIMES[6]
    series = await q.raw("meter", ["active_power_total_kw", "active_energy_import_kwh"], lo, hi, Where(org="330000/330100"))
    got = as_dict(series)
    exp = expected_points()
    assert set(got) == {(m, f) for m in ("m-1", "m-2") for f in ("active_power_total_kw", "active_energy_import_kwh")}
    for k, d in got.items():
        assert d == {t: v for t, v in exp[k] if lo <= t < hi}
    assert all(s.times_ns.dtype == np.int64 and s.values.dtype == np.float64 for s in series)
    pos = {s.field: s for s in await q.raw("position", ["acc", "satellites", "lat", "plate"], START, END)}
    assert pos["acc"].values.dtype == bool and pos["acc"].values.tolist() == [True, False] * 3
    assert pos["satellites"].values.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    assert pos["plate"].values.tolist() == ["浙A·12345"] * 6
    assert pos["lat"].tags == {"vehicle": "浙A·12345", "org": ORGS["m-1"]}


@pytest.mark.parametrize("agg", ["mean", "sum", "min", "max", "first", "last", "count", "spread"])
async def test_shanghai_day_windows_across_midnight(q: Query, agg: str):
    series = await q.windows("meter", ["active_power_total_kw"], START, END, "day", agg, Where(org="330000/330100"))
    got = as_dict(series)
    assert set(got) == {("m-1", "active_power_total_kw"), ("m-2", "active_power_total_kw")}
    for (m, f), d in got.items():
        exp = reference(m, f, day_label, agg)
        assert close(d, exp), (m, agg, d, exp)
    # 23:59:59 on Jan 31 and 00:00:00 on Feb 1 (Shanghai) fall in different days
    assert sh(2026, 1, 31) in got[("m-1", "active_power_total_kw")]
    assert sh(2026, 2, 1) in got[("m-1", "active_power_total_kw")]
    if agg == "count":
        assert got[("m-1", "active_power_total_kw")][sh(2026, 1, 31)] == 3
        assert series[0].values.dtype == np.int64


@pytest.mark.parametrize("agg", ["mean", "sum", "last", "count", "spread", "max"])
async def test_shanghai_month_windows_across_a_month_boundary(q: Query, agg: str):
    series = await q.windows("meter", ["active_power_total_kw", "active_energy_import_kwh"], START, END, "month", agg,
                             Where(tags={"meter": "m-2"}))
    got = as_dict(series)
    for (m, f), d in got.items():
        exp = reference(m, f, month_label, agg)
        assert close(d, exp), (m, f, agg, d, exp)
    d = got[("m-2", "active_power_total_kw")]
    # 00:00 on March 1 in Shanghai is still February in UTC: it belongs to March here
    assert sorted(d) == [sh(2026, 1, 1), sh(2026, 2, 1), sh(2026, 3, 1)]
    if agg == "count":
        assert [d[k] for k in sorted(d)] == [4, 5, 2]


@pytest.mark.parametrize("every,agg", [(3600, "mean"), ("15m", "max"), ("1h", "count"), ("1d", "sum")])
async def test_fixed_windows(q: Query, every, agg: str):
    every_s = every if isinstance(every, int) else {"15m": 900, "1h": 3600, "1d": 86400}[every]
    series = await q.windows("meter", ["active_power_total_kw"], START, END, every, agg, Where(tags={"meter": "m-1"}))
    (s,) = series
    assert close(dict(zip(s.times_ns.tolist(), s.values.tolist(), strict=True)),
                 reference("m-1", "active_power_total_kw", fixed_label(every_s), agg))


async def test_windows_cut_by_the_range_start_keep_the_calendar_label(q: Query):
    lo = TIMES[3]  # 23:59:59 on Jan 31: the window of Jan 31 holds only that point
    (s,) = await q.windows("meter", ["active_power_total_kw"], lo, END, "day", "count", Where(tags={"meter": "m-1"}))
    assert s.times_ns[0] == sh(2026, 1, 31) and s.values[0] == 1
    (m,) = await q.windows("meter", ["active_power_total_kw"], lo, sh(2026, 2, 15), "month", "count",
                           Where(tags={"meter": "m-1"}))
    assert m.times_ns.tolist() == [sh(2026, 1, 1), sh(2026, 2, 1)] and m.values.tolist() == [1, 4]


async def test_field_keys(q: Query):
    assert await q.field_keys("meter") == ["active_energy_import_kwh", "active_power_total_kw"]
    assert await q.field_keys("position") == ["acc", "lat", "lon", "plate", "satellites"]
    assert await q.field_keys("nothing") == []


async def test_unknown_measurement_or_field_is_empty_not_an_error(q: Query):
    assert await q.raw("nothing", ["x"], START, END) == []
    assert await q.windows("meter", ["no_such_field"], START, END, "day", "mean") == []
    assert await q.latest("nothing", ["x"]) == []
