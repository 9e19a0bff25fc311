"""Fixtures of the JT/T 808 area: the real outbox behind an Ingest adapter, the server on a real
socket, and a raw terminal client that speaks the simulator's own (independent) encoding."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pytest

from collector.jt808.registry import Registry
from collector.jt808.server import Jt808Server
from edge.config import Site, parse_site
from edge.errors import OutboxFull
from edge.outbox import Outbox
from edge.point import Point, parse_line
from simulators import jt808_terminals as wire
from tests.support.influx import influx_db, influx_server  # noqa: F401  (fixtures: the scale-out test's shared store)

ORG = "330000/330100/330106/inst-042"


class OutboxIngest:
    """The Ingest protocol over the real ``edge.outbox.Outbox`` (what the service wires), with two
    switches a test can use: ``gate`` (cleared: submits wait, as for a slow store) and ``full_cap``
    (above this depth, ``submit`` raises ``OutboxFull``, as the outbox does for sources that
    can hold their data)."""

    def __init__(self, path: Path) -> None:
        self.outbox = Outbox(path)
        self.counters: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.full_cap: int | None = None
        self.submits = 0

    async def submit(self, points: Sequence[Point]) -> None:
        await self.gate.wait()
        if self.full_cap is not None and self.outbox.depth() + len(points) > self.full_cap:
            raise OutboxFull(f"outbox holds {self.outbox.depth()} points, cap {self.full_cap}")
        self.submits += 1
        await self.outbox.put(points)

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self.outbox.dead_letter_payload_async(source, raw, reason, topic)

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        key = name + "".join(f".{k}={v}" for k, v in sorted(labels.items()))
        self.counters[key] += n

    def points(self) -> list[Point]:
        out, after = [], 0
        while (b := self.outbox.batch(10_000, after)) is not None:
            out.extend(parse_line(ln) for ln in b.lines)
            after = b.last_id
        return out

    def dead(self) -> list:
        return self.outbox.dead_letters(1_000_000)


def make_site(n_vehicles: int = 5, **jt808: Any) -> Site:
    """A site with ``n_vehicles`` vehicles on terminals 13800000000... and a jt808 section."""
    cfg = {"listen": "127.0.0.1:0", "heartbeat_s": 60, "handshake_timeout_s": 10, **jt808}
    lines = ["orgs:", "  - {path: '330000', name: Zhejiang}", "  - {path: '330000/330100', name: Hangzhou}",
             "  - {path: '330000/330100/330106', name: Xihu}", f"  - {{path: '{ORG}', name: Inst}}", "vehicles:" if n_vehicles else "vehicles: []"]
    for i in range(n_vehicles):
        lines.append(f"  - {{id: car-{i:03d}, plate: '浙A·{10000 + i}', org: '{ORG}', terminal: '0138{i:08d}'}}")
    import yaml
    lines.append("jt808: " + yaml.safe_dump(cfg, default_flow_style=True).strip())
    return parse_site("\n".join(lines) + "\n")


@pytest.fixture
def ingest(tmp_path: Path):
    ing = OutboxIngest(tmp_path / "outbox.sqlite")
    yield ing
    ing.outbox.close()


class Running:
    def __init__(self, server: Jt808Server, task: asyncio.Task, registry: Registry) -> None:
        self.server, self.task, self.registry = server, task, registry

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.registry.close()


async def start_server(site: Site, ingest: Any, registry_path: Path, **kw: Any) -> Running:
    reg = Registry(registry_path)
    server = Jt808Server(site.jt808, site.vehicles, ingest, reg, **kw)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)
    return Running(server, task, reg)


@pytest.fixture
async def serve(tmp_path: Path, ingest: OutboxIngest):
    """``await serve(site)`` starts a server for ``site`` on a free port; stopped at the end."""
    running: list[Running] = []

    async def start(site: Site | None = None, **kw: Any) -> Running:
        r = await start_server(site or make_site(), ingest, tmp_path / "terminals.sqlite", **kw)
        running.append(r)
        return r

    yield start
    for r in running:
        await r.stop()


_CLIENTS: list["Client"] = []


@pytest.fixture(autouse=True)
async def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()
    await asyncio.sleep(0)  # let the aborted transports finish closing in this loop


class Client:
    """A raw terminal: frames out (the simulator's encoder), answers in, nothing automatic."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, phone: str, version: int | None) -> None:
        self.reader, self.writer, self.phone, self.version = reader, writer, phone, version
        self.serial = 0
        self.buf = b""
        self.got: list[tuple[int, int, bytes]] = []

    @classmethod
    async def connect(cls, address: str, phone: str = "13800000000", version: int | None = None) -> "Client":
        host, _, port = address.rpartition(":")
        r, w = await asyncio.open_connection(host, int(port))
        c = cls(r, w, phone, version)
        _CLIENTS.append(c)
        return c

    def frame(self, msg_id: int, body: bytes = b"", **kw: Any) -> tuple[int, bytes]:
        self.serial += 1
        return self.serial, wire.frame(msg_id, kw.pop("phone", self.phone), self.serial, body, self.version, **kw)

    async def send(self, msg_id: int, body: bytes = b"", **kw: Any) -> int:
        serial, data = self.frame(msg_id, body, **kw)
        self.writer.write(data)
        await self.writer.drain()
        return serial

    async def answer(self, timeout_s: float = 5.0) -> tuple[int, int, bytes] | None:
        """The next frame from the platform (message id, serial, body), None on EOF."""
        deadline = time.monotonic() + timeout_s
        while True:
            frames, self.buf = wire.read_frames(self.buf)
            self.got += frames
            if self.got:
                return self.got.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the platform")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                return None
            self.buf += data

    async def reply(self, timeout_s: float = 5.0) -> tuple[int, int, int]:
        """The next 0x8001: (reply serial, reply id, result)."""
        a = await self.answer(timeout_s)
        assert a is not None, "connection closed"
        msg, _, body = a
        assert msg == wire.PLATFORM_REPLY, hex(msg)
        return struct.unpack_from(">HHB", body)

    async def register(self, plate: str = "浙A12345") -> tuple[int, str]:
        s = await self.send(wire.REGISTER, wire.registration_body(self.version, plate, self.phone))
        msg, _, body = await self.answer()
        assert msg == wire.REGISTER_REPLY
        rs, result = struct.unpack_from(">HB", body)
        assert rs == s
        return result, body[3:].decode("gbk")

    async def authenticate(self, code: str) -> int:
        s = await self.send(wire.AUTHENTICATE, wire.authentication_body(self.version, code, "860000000000001", "fw-2.1"))
        rs, rid, result = await self.reply()
        assert (rs, rid) == (s, wire.AUTHENTICATE)
        return result

    async def login(self) -> str:
        result, code = await self.register()
        assert result == 0 and code
        assert await self.authenticate(code) == 0
        return code

    async def closed(self, timeout_s: float = 5.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout_s)
                if not data:
                    return True
        except TimeoutError:  # (an OSError too: first) still open
            return False
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.writer.transport.abort()


async def wait_until(cond, timeout_s: float = 10.0, every_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every_s)
