"""Sinks and the delivery loop's error handling: classification, backoff, Retry-After, v2 wire format.

A scripted HTTP server on a real socket stands in for statuses InfluxDB 1.6.7 cannot be made to
return on demand (503, 429 with Retry-After) and records what the v2 sink sends.
"""

from __future__ import annotations

import asyncio
import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.config import Store, StoreKind
from edge.delivery import Deliverer, backoff_s, build_query, build_sink, write_resilient
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.point import parse_line
from edge.query import InfluxQLQuery, StoreQuery
from edge.sinks import (EmbeddedSink, InfluxSink, SinkBlocked, SinkRejected, SinkTooLarge, SinkUnavailable, classify,
                        influx_v1, influx_v2, parse_retry_after, server_message)
from edge.store import EmbeddedStore
from tests.delivery.conftest import RecordingClock, meter_point


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedHttp:
    """Answers requests with the scripted (status, headers, body) in turn, then 204s; records them."""

    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    async def start(self) -> "ScriptedHttp":
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, target, headers, body))
                status, extra, payload = self.script.pop(0) if self.script else (204, {}, b"")
                hdrs = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n{hdrs}\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


# --- pure -------------------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 25 Nov 2026 13:00:30 GMT", now_s=1795611600.0) == 30.0


def test_statuses_are_sorted_into_what_the_deliverer_does():
    assert classify(204, b"") is None
    assert isinstance(classify(503, b"{}"), SinkUnavailable)
    e = classify(429, b'{"message":"slow down"}', "3")
    assert isinstance(e, SinkUnavailable) and e.retry_after_s == 3.0 and "slow down" in str(e)
    assert isinstance(classify(413, b""), SinkTooLarge)
    assert isinstance(classify(401, b'{"error":"authorization failed"}'), SinkBlocked)
    assert isinstance(classify(403, b""), SinkBlocked) and isinstance(classify(404, b""), SinkBlocked)
    bad = classify(400, b'{"error":"partial write: field type conflict: x dropped=1"}')
    assert isinstance(bad, SinkRejected) and bad.rejected is None
    assert str(bad) == "partial write: field type conflict: x dropped=1"  # InfluxDB's words, verbatim
    assert server_message(b'{"code":"invalid","message":"unable to parse"}') == "unable to parse"


async def test_gzip_is_on_by_default_except_to_loopback():
    sinks = [influx_v1("http://influx.example:8086", "d"), influx_v1("http://127.0.0.1:8086", "d"),
             influx_v1("http://localhost:8086", "d"), influx_v1("http://[::1]:8086", "d"),
             influx_v1("http://127.0.0.1:8086", "d", gzip_level=6)]
    assert [s._gzip_level for s in sinks] == [1, None, None, None, 6]
    for s in sinks:
        await s.aclose()


def test_backoff_doubles_is_capped_and_jittered():
    rng = random.Random(1)
    delays = [backoff_s(a, 0.5, 30.0, rng) for a in range(12)]
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0
    assert all(15.0 <= d <= 30.0 for d in delays[7:])  # capped
    assert len({round(d, 6) for d in delays[7:]}) > 1  # jittered
    assert backoff_s(0, 0.5, 30.0, rng, retry_after_s=12.0) == 12.0


# --- against a scripted server ---------------------------------------------------------------------


async def test_v2_sink_sends_token_org_bucket_ns_and_gzip():
    peer = await ScriptedHttp().start()
    sink = influx_v2(peer.url, "my-org", "sensing", token="s3cr3t", gzip_level=1)
    try:
        await sink.write([meter_point(1, 0).to_line(), meter_point(1, 1).to_line()])
    finally:
        await sink.aclose()
        await peer.stop()
    (r,) = peer.requests
    assert r.method == "POST" and r.target.startswith("/api/v2/write?")
    assert "org=my-org" in r.target and "bucket=sensing" in r.target and "precision=ns" in r.target
    assert r.headers["authorization"] == "Token s3cr3t" and r.headers["content-encoding"] == "gzip"
    assert [parse_line(x) for x in gzip.decompress(r.body).decode().split("\n")] == [meter_point(1, 0), meter_point(1, 1)]


async def test_503_and_429_are_retried_with_backoff_honouring_retry_after(tmp_path: Path):
    peer = await ScriptedHttp(script=[(503, {}, b'{"error":"busy"}'), (429, {"Retry-After": "7"}, b""),
                                      (503, {}, b"")]).start()
    clock = RecordingClock()
    m = Metrics()
    ob = Outbox(tmp_path / "o.sqlite", metrics=m)
    sink = InfluxSink(peer.url, "/write", {"db": "x"})
    try:
        await ob.put([meter_point(1, s) for s in range(5)])
        d = Deliverer(ob, sink, m, clock, backoff_base_s=0.5, backoff_cap_s=30.0, rng=random.Random(3))
        await d.flush(timeout_s=10)
    finally:
        await sink.aclose()
        await peer.stop()
        ob.close()
    assert len(peer.requests) == 4 and ob.depth() == 0
    assert len(clock.slept) == 3
    assert 0.25 <= clock.slept[0] <= 0.5 and clock.slept[1] >= 7.0 and 1.0 <= clock.slept[2] <= 2.0
    assert m.value("edge_points_retried_total") == 15 and m.value("edge_points_delivered_total") == 5
    assert len({r.body for r in peer.requests}) == 1  # the same batch every time


async def test_an_unreachable_store_is_retried_until_it_answers(tmp_path: Path):
    clock = RecordingClock()
    ob = Outbox(tmp_path / "o.sqlite")
    sink = InfluxSink("http://127.0.0.1:9", "/write", {"db": "x"}, timeout_s=1.0)  # nothing listens on port 9
    d = Deliverer(ob, sink, None, clock, backoff_base_s=0.5, backoff_cap_s=4.0)
    try:
        await ob.put([meter_point(1, 0)])
        runner = asyncio.create_task(d.run())
        while len(clock.slept) < 6:
            await asyncio.sleep(0.01)
        assert d.state == "retrying" and ob.depth() == 1
        assert max(clock.slept) <= 4.0  # capped
        d.stop()
        await runner
    finally:
        await sink.aclose()
        ob.close()


async def test_bisect_isolates_every_bad_point_in_a_batch():
    """write_resilient against a sink that refuses some lines without saying which (like InfluxDB)."""

    class PickySink:
        name = "picky"

        def __init__(self) -> None:
            self.calls = 0

        async def write(self, lines):
            self.calls += 1
            if any("bad" in ln for ln in lines):
                raise SinkRejected("partial write: bad value dropped=1")

        async def aclose(self) -> None:
            pass

    lines = [f"m v={i} {i}" for i in range(64)]
    lines[5] = "m bad=1 5"
    lines[40] = "m bad=2 40"
    sink = PickySink()
    rejected = await write_resilient(sink, lines)
    assert rejected == [(5, "partial write: bad value dropped=1"), (40, "partial write: bad value dropped=1")]
    assert sink.calls < 30  # log2 bisection, not one request per line


# --- the embedded sink and the wiring helpers -------------------------------------------------------


async def test_embedded_sink_refuses_a_type_conflict_point_by_point(tmp_path: Path):
    store = EmbeddedStore(tmp_path / "s.sqlite")
    sink = EmbeddedSink(store)
    ob = Outbox(tmp_path / "o.sqlite")
    try:
        await ob.put([meter_point(1, 0), meter_point(1, 1, active_power_total_kw="x"), meter_point(1, 2)])  # type: ignore[arg-type]
        await Deliverer(ob, sink).flush(timeout_s=10)
        (dl,) = ob.dead_letters(10)
        assert dl.reason == ('field type conflict: input field "active_power_total_kw" on measurement "meter" is '
                             "type string, already exists as type float")
        assert len(store.select("SELECT * FROM points")) == 4  # two good points, two fields each
    finally:
        ob.close()
        await sink.aclose()


async def test_build_sink_and_query_from_the_store_config(tmp_path: Path):
    cfg = Store(kind=StoreKind.embedded, path=str(tmp_path / "store.sqlite"), retention_days=3650)
    sink = build_sink(cfg)
    q = build_query(cfg)
    assert isinstance(sink, EmbeddedSink) and isinstance(q, StoreQuery)
    await sink.write([meter_point(1, 0).to_line()])
    (row,) = await q.latest("meter", ["active_power_total_kw"])
    assert row.value == 10.0
    assert q.count_points() == 1 and q.count_points("meter") == 1 and q.count_points("position") == 0
    await sink.aclose()
    await q.aclose()
    v1 = Store(kind=StoreKind.influxdb_v1, url="http://127.0.0.1:8086", database="d", username="u", password="p")
    s1, q1 = build_sink(v1), build_query(v1)
    assert isinstance(s1, InfluxSink) and s1.name == "influxdb_v1:d" and isinstance(q1, InfluxQLQuery)
    v2 = Store(kind=StoreKind.influxdb_v2, url="http://127.0.0.1:8086", org="o", bucket="b", token="t")
    s2 = build_sink(v2)
    assert s2.name == "influxdb_v2:b"
    for s in (s1, s2):
        await s.aclose()
    await q1.aclose()


async def test_embedded_store_retention_deletes_old_points(tmp_path: Path):
    clock = FakeClock(start_ns=meter_point(1, 0).time_ns + 10 * 86400 * 10**9)
    store = EmbeddedStore(tmp_path / "s.sqlite", retention_days=5, clock=clock)
    try:
        old = [meter_point(1, 0).to_line()]
        new = [meter_point(1, 8 * 86400).to_line()]
        assert store.write_lines(old + new) == []
        assert store.apply_retention() == 2
        q = StoreQuery(store)
        rows = await q.latest("meter")
        assert {r.time_ns for r in rows} == {meter_point(1, 8 * 86400).time_ns}
        assert len(store.select("SELECT * FROM points")) == 2
    finally:
        store.close()


def test_prometheus_text_has_the_delivery_metrics():
    m = Metrics()
    m.points_delivered.inc(3)
    m.count("rejected", 2, reason="bad_json")
    text = m.text()
    for name in ("edge_points_received_total", "edge_points_committed_total", "edge_points_delivered_total 3.0",
                 "edge_points_retried_total", "edge_points_dead_lettered_total", "edge_points_dropped_total",
                 "edge_outbox_depth_points", "edge_outbox_oldest_age_seconds", "edge_sink_write_seconds_bucket",
                 'edge_rejected_total{reason="bad_json"} 2.0'):
        assert name in text


@pytest.mark.parametrize("bad", ["m,t=1 f=1i 1\nm,t=1 f=1.5 2"])
def test_embedded_store_first_type_wins_within_one_batch(tmp_path: Path, bad: str):
    store = EmbeddedStore(tmp_path / "s.sqlite")
    try:
        rejected = store.write_lines(bad.split("\n"))
        assert [i for i, _ in rejected] == [1] and "already exists as type integer" in rejected[0][1]
    finally:
        store.close()
