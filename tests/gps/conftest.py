"""Fixtures of the GPS area: the real outbox behind an Ingest adapter, real brokers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import pytest

from edge.outbox import Outbox
from edge.point import Point, parse_line
from tests.support.mosquitto import Mosquitto, available


class OutboxIngest:
    """The Ingest protocol over the real edge.outbox.Outbox (what the service wires)."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)
        self.counters: Counter[str] = Counter()
        self.changed = asyncio.Event()

    async def submit(self, points: Sequence[Point]) -> None:
        await self.outbox.put(points)
        self.changed.set()

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self.outbox.dead_letter_payload_async(source, raw, reason, topic)
        self.changed.set()

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        self.counters[name] += n

    def points(self) -> list[Point]:
        out, after = [], 0
        while (b := self.outbox.batch(10_000, after)) is not None:
            out.extend(parse_line(ln) for ln in b.lines)
            after = b.last_id
        return out

    def dead(self) -> list[dict]:
        return self.outbox.dead_letters(1_000_000)

    async def wait_for(self, n_points: int, n_dead: int = 0, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.outbox.committed >= n_points and len(self.dead()) >= n_dead:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out: {self.outbox.committed}/{n_points} points, "
                                     f"{len(self.dead())}/{n_dead} dead letters")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.2)
            except TimeoutError:
                pass


@pytest.fixture
def ingest(tmp_path: Path) -> OutboxIngest:
    ing = OutboxIngest(tmp_path / "outbox.sqlite")
    yield ing
    ing.outbox.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Mosquitto:
    if not available():
        pytest.skip("mosquitto binary not installed")
    m = Mosquitto(tmp_path / "mosquitto").start()
    yield m
    m.stop()


class AmqttBroker:
    """EmbeddedBroker with the same face as the Mosquitto fixture (url, restart)."""

    def __init__(self) -> None:
        from edge.broker import EmbeddedBroker

        self.b = EmbeddedBroker()

    @property
    def url(self) -> str:
        return self.b.url

    async def start(self) -> None:
        await self.b.start()

    async def stop(self) -> None:
        await self.b.stop()


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request, tmp_path: Path):
    """Both brokers the service supports: Debian's Mosquitto and the embedded amqtt."""
    if request.param == "mosquitto":
        if not available():
            pytest.skip("mosquitto binary not installed")
        m = Mosquitto(tmp_path / "mosquitto").start()
        yield m
        m.stop()
    else:
        a = AmqttBroker()
        await a.start()
        yield a
        await a.stop()
