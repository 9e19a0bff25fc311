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
