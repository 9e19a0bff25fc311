"""The bulk import (edge.bulk): the same series, times, values and types in the store as the Point path
would have written, into both stores; and the store's write generations that let readers keep answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.bulk import BulkWriter, Columns, split
from edge.errors import StoreError
from edge.point import Point, to_line
from edge.query import InfluxQLQuery, StoreQuery, Where
from edge.sinks import EmbeddedSink, influx_v1
from edge.store import EmbeddedStore

NS = 1_000_000_000
DAY = 86_400 * NS
T0 = 1_761_580_800 * NS  # 2025-10-28 00:00 +08:00 (local midnight is 16:00 UTC the day before)


def history() -> list[Columns]:
    t = T0 + np.arange(0, 3 * DAY, 900 * NS, dtype=np.int64)
    kwh = 1000.0 + np.cumsum(np.full(len(t), 2.5))
    pos_t = T0 + np.arange(50, dtype=np.int64) * 30 * NS
    lat = 30.27 + np.arange(50) * 1e-4
    lat[7] = np.nan                      # a gap in one field: that point has no lat
    return [
        Columns("meter", {"meter": "hq-main", "org": "330000/330100/330106/inst-042", "carrier": "electricity"}, t,
                {"active_energy_import_kwh": kwh}),
        Columns("position", {"vehicle": "veh-0001", "org": "330000/330100/330106/inst-042"}, pos_t,
                {"lat": lat, "lon": np.full(50, 120.15), "speed_kmh": np.linspace(0, 49, 50),
                 "acc": np.arange(50) % 2 == 0, "satellites": np.full(50, 9, dtype=np.int64)}),
    ]


def _answers(q):
    import asyncio

    async def go():
        out = []
        for m, fields in (("meter", ["active_energy_import_kwh"]), ("position", ["lat", "lon", "speed_kmh", "acc", "satellites"])):
            for s in await q.raw(m, fields, T0 - DAY, T0 + 4 * DAY):
                out.append((s.measurement, tuple(sorted(s.tags.items())), s.field, s.times_ns.tolist(),
                            [x if not isinstance(x, float) else round(x, 9) for x in s.values.tolist()]))
            for r in await q.latest(m):
                out.append(("latest", m, tuple(sorted(r.tags.items())), r.field, r.time_ns, r.value))
        return sorted(out, key=repr)
    return asyncio.run(go())


def test_columns_describe_exactly_the_points_and_their_lines():
    for c in history():
        pts = list(c.points())
        assert c.lines() == [to_line(p) for p in pts]
    pos = list(history()[1].points())
    assert len(pos) == 50 and "lat" not in pos[7].fields and pos[8].fields["lat"] == pytest.approx(30.2708)
    assert pos[0].fields["acc"] is True and pos[1].fields["acc"] is False and pos[3].fields["satellites"] == 9


def test_bulk_into_the_embedded_store_equals_the_point_path(tmp_path):
    a, b = EmbeddedStore(tmp_path / "a.sqlite"), EmbeddedStore(tmp_path / "b.sqlite")
    try:
        for c in history():
            a.write_points(list(c.points()))
        import asyncio
        asyncio.run(BulkWriter.for_sink(EmbeddedSink(b)).write([p for c in history() for p in split(c, 40)]))
        assert _answers(StoreQuery(a)) == _answers(StoreQuery(b))
        assert StoreQuery(b).count_points() == 3 * 96 + 50
    finally:
        a.close()
        b.close()


def test_bulk_refuses_a_field_of_another_type_whole(tmp_path):
    st = EmbeddedStore(tmp_path / "s.sqlite")
    try:
        st.write_points([Point("meter", {"meter": "m"}, {"kwh": 1.0}, T0)])
        with pytest.raises(StoreError, match="field type conflict"):
            st.write_columns("meter", {"meter": "m"}, np.array([T0 + NS]), {"kwh": np.array([True])})
        assert StoreQuery(st).count_points() == 1
    finally:
        st.close()


async def test_bulk_into_influxdb_equals_the_embedded_store(tmp_path, influx_server, influx_db):
    sink = influx_v1(influx_server.url, influx_db)
    try:
        n = await BulkWriter.for_sink(sink, batch_lines=60).write(history())
    finally:
        await sink.aclose()
    assert n == 3 * 96 + 50
    st = EmbeddedStore(tmp_path / "e.sqlite")
    await BulkWriter.for_sink(EmbeddedSink(st)).write(history())
    q = InfluxQLQuery(influx_server.url, influx_db)
    try:
        got = await q.raw("position", ["lat", "speed_kmh", "acc"], T0 - DAY, T0 + DAY, Where(tags={"vehicle": "veh-0001"}))
        want = await StoreQuery(st).raw("position", ["lat", "speed_kmh", "acc"], T0 - DAY, T0 + DAY,
                                        Where(tags={"vehicle": "veh-0001"}))
        assert [(s.field, s.times_ns.tolist()) for s in got] == [(s.field, s.times_ns.tolist()) for s in want]
        for g, w in zip(got, want):
            assert all((x == y) or (isinstance(x, float) and math.isclose(x, y)) for x, y in zip(g.values, w.values))
    finally:
        await q.aclose()
        st.close()


def test_write_generation_moves_with_the_days_and_measurements_written(tmp_path):
    st = EmbeddedStore(tmp_path / "g.sqlite", retention_days=365)
    try:
        g0 = st.generation(["energy_indicator"], T0, T0 + 10 * DAY)
        st.write_points([Point("energy_indicator", {"id": "a"}, {"kwh": 1.0}, T0 + 2 * DAY)])
        g1 = st.generation(["energy_indicator"], T0, T0 + 10 * DAY)
        assert g1 > g0
        # another day, another measurement: the first answer still holds
        st.write_points([Point("energy_indicator", {"id": "a"}, {"kwh": 2.0}, T0 + 8 * DAY)])
        st.write_columns("meter", {"meter": "m"}, np.array([T0 + 2 * DAY]), {"kwh": np.array([5.0])})
        assert st.generation(["energy_indicator"], T0, T0 + 5 * DAY) == g1
        assert st.generation(["energy_indicator"], T0, T0 + 10 * DAY) > g1
        assert st.generation(["meter"], T0 + 2 * DAY, T0 + 3 * DAY) > g1
        # retention changes every answer
        before = st.generation(["energy_indicator"], T0, T0 + 5 * DAY)
        assert st.apply_retention(now_ns=T0 + 800 * DAY) > 0
        assert st.generation(["energy_indicator"], T0, T0 + 5 * DAY) > before
    finally:
        st.close()
