"""Fixtures for the Modbus tests: a list-collecting Ingest, an Outbox-backed Ingest, site builders."""

from __future__ import annotations

from typing import Any, Sequence

import pytest

from edge.config import Site
from edge.outbox import Outbox
from edge.point import Point

ORG = "330000/330100/330106/inst-042"


class ListIngest:
    """Collects what a collector hands over (pure unit tests)."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.rejects: list[tuple[str, bytes, str]] = []
        self.counters: dict[tuple, int] = {}

    async def submit(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        self.rejects.append((source, raw, reason))

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        k = (name, tuple(sorted(labels.items())))
        self.counters[k] = self.counters.get(k, 0) + n

    def of(self, meter: str) -> list[Point]:
        return [p for p in self.points if p.tags["meter"] == meter]


class OutboxIngest(ListIngest):
    """Puts points into the real durable outbox too."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox

    async def submit(self, points: Sequence[Point]) -> None:
        await self.outbox.put(points)
        await super().submit(points)


def make_site(meters: list[dict[str, Any]]) -> Site:
    return Site.model_validate({
        "orgs": [{"path": "330000", "name": "Zhejiang"}, {"path": "330000/330100", "name": "Hangzhou"},
                 {"path": "330000/330100/330106", "name": "Xihu"}, {"path": ORG, "name": "Institution 42"}],
        "buildings": [{"id": "b1", "org": ORG, "floor_area_m2": 5000, "occupants": 200}],
        "meters": meters,
    })


def meter(id: str, profile: str, port: int, *, unit: int = 1, kind: str = "tcp", carrier: str = "electricity",
          **kw: Any) -> dict[str, Any]:
    return {"id": id, "profile": profile, "building": "b1", "carrier": carrier, "unit_id": unit,
            "transport": {"kind": kind, "host": "127.0.0.1", "port": port}, **kw}


@pytest.fixture
def ingest() -> ListIngest:
    return ListIngest()


@pytest.fixture
def outbox_ingest(tmp_path):
    ob = Outbox(tmp_path / "outbox.sqlite")
    yield OutboxIngest(ob)
    ob.close()
