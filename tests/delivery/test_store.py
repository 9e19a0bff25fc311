"""The embedded store on its own: InfluxDB's write semantics, and garbage in never crashes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.point import Point, UInt
from edge.query import StoreQuery
from edge.store import EmbeddedStore


@pytest.fixture
def store(tmp_path: Path):
    s = EmbeddedStore(tmp_path / "s.sqlite")
    yield s
    s.close()


async def test_types_round_trip_and_a_rewrite_merges_fields(store: EmbeddedStore):
    p = Point("position", {"vehicle": "浙A·12345", "org": "330000"},
              {"lat": 30.25, "acc": True, "satellites": 9, "odo": UInt(12), "plate": 'say "hi"'}, 10)
    assert store.write_points([p]) == []
    assert store.write_points([Point("position", {"vehicle": "浙A·12345", "org": "330000"}, {"lat": 30.5}, 10)]) == []
    rows = {r.field: r.value for r in await StoreQuery(store).latest("position")}
    assert rows == {"lat": 30.5, "acc": True, "satellites": 9, "odo": 12, "plate": 'say "hi"'}
    assert type(rows["acc"]) is bool and type(rows["odo"]) is UInt and type(rows["satellites"]) is int


async def test_an_empty_tag_is_an_absent_tag(store: EmbeddedStore):
    store.write_points([Point("meter", {"meter": "m1", "building": ""}, {"v": 1.0}, 1)])
    store.write_points([Point("meter", {"meter": "m1"}, {"v": 2.0}, 2)])
    assert [sid for sid, _ in store.series("meter")] == [1]


@settings(max_examples=150)
@given(st.lists(st.text(max_size=60), max_size=8))
def test_any_text_is_stored_or_refused_with_a_reason_never_a_crash(tmp_path_factory, lines):
    s = EmbeddedStore(tmp_path_factory.mktemp("h") / "s.sqlite")
    try:
        rejected = s.write_lines(lines)
        assert all(0 <= i < len(lines) and reason for i, reason in rejected)
    finally:
        s.close()


async def test_lines_of_a_known_series_read_the_same_as_new_ones(tmp_path: Path):
    """A series stored before takes a fast path for its plain lines; it must store and refuse
    exactly what the full parser does (a type conflict, a new field, a non-finite number)."""
    lines = ["pos,vehicle=a lat=30.5,acc=true,sat=9i 1", "pos,vehicle=a lat=31.5,acc=false,sat=10i,fuel=2.5 2",
             "pos,vehicle=a lat=1i 3", "pos,vehicle=a lat=1e999 4", "pos,vehicle=a acc=T,sat=-3i 5",
             "pos,vehicle=a lat=32.5,lat=33.5 6", "pos,vehicle=a lat=tru 7"]
    fresh = EmbeddedStore(tmp_path / "fresh.sqlite")  # each line in a write of its own, after the first
    warm = EmbeddedStore(tmp_path / "warm.sqlite")
    try:
        got_fresh = [fresh.write_lines([ln]) for ln in lines]
        warm.write_lines(lines[:1])
        got_warm = [[]] + [warm.write_lines([ln]) for ln in lines[1:]]
        assert [bool(r) for r in got_warm] == [False, False, True, True, False, False, True]
        assert got_warm == got_fresh
        q_fresh, q_warm = StoreQuery(fresh), StoreQuery(warm)
        for f in ("lat", "acc", "sat", "fuel"):
            a = await q_fresh.raw("pos", [f], 0, 100)
            b = await q_warm.raw("pos", [f], 0, 100)
            assert [(list(s.times_ns), list(s.values)) for s in a] == [(list(s.times_ns), list(s.values)) for s in b]
        assert [(list(s.times_ns), list(s.values)) for s in await q_warm.raw("pos", ["lat"], 0, 100)] == [
            ([1, 2, 6], [30.5, 31.5, 33.5])]
    finally:
        fresh.close()
        warm.close()
