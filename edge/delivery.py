"""Delivery: the loop that moves points from the outbox to a sink, and the wiring helpers.

``Deliverer`` is one consumer of the outbox's log (``consumer``, by default the local sink): it
reads that consumer's oldest batch, writes it to the sink, and moves the consumer's cursor past it
only when the sink confirmed it. Batches leave in commit order and one at a time, so every series
arrives in order. The upstream push to the province is another ``Deliverer`` on the same log with
its own consumer (``api.upstream``). On failure:

* store unreachable, 5xx, 429: the same batch is retried with capped exponential backoff and
  full jitter (``backoff_base_s`` doubling up to ``backoff_cap_s``; a Retry-After header sets a
  floor). Points keep being committed to the outbox meanwhile; there is no limit on how long an
  outage may last other than the outbox's size bound.
* 413: the batch is split in halves until the pieces fit.
* 400: the batch is bisected until the refused points are isolated; they go to the dead-letter
  table with the store's message, everything else is delivered.
* 401/403/404: delivery stops (state ``blocked``), points keep buffering, an ERROR is logged
  once, and the same batch is tried again every ``blocked_retry_s`` (so a fixed token or a
  created database resumes delivery without a restart).

``build_sink`` / ``build_query`` turn the ``store`` section of the site config into a sink and a
query layer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Sequence

from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Outbox as OutboxConfig
from edge.config import Store, StoreKind
from edge.errors import EdgeError, SinkError
from edge.metrics import Metrics
from edge.outbox import LOCAL, Batch, Outbox, ThinRule
from edge.query import InfluxQLQuery, Query, StoreQuery
from edge.sinks import (EmbeddedSink, Sink, SinkBlocked, SinkRejected, SinkTooLarge, SinkUnavailable, influx_v1,
                        influx_v2)
from edge.store import EmbeddedStore

log = logging.getLogger(__name__)


# --- wiring ----------------------------------------------------------------------------------------


def open_store(store_cfg: Store, *, clock: Clock = SYSTEM_CLOCK) -> EmbeddedStore:
    """The embedded store at ``store.path`` with ``store.retention_days``."""
    return EmbeddedStore(Path(store_cfg.path), retention_days=store_cfg.retention_days, clock=clock)


def build_sink(store_cfg: Store, *, clock: Clock = SYSTEM_CLOCK) -> Sink:
    """The sink for the configured store: InfluxDB v1, v2/v3, or the embedded file at ``store.path``."""
    timeout_s = store_cfg.timeout_ms / 1000
    if store_cfg.kind is StoreKind.influxdb_v1:
        return influx_v1(store_cfg.url or "", store_cfg.database, retention_policy=store_cfg.retention_policy,
                         username=store_cfg.username, password=store_cfg.password, timeout_s=timeout_s)
    if store_cfg.kind is StoreKind.influxdb_v2:
        return influx_v2(store_cfg.url or "", store_cfg.org or "", store_cfg.bucket or "", token=store_cfg.token,
                         timeout_s=timeout_s)
    return EmbeddedSink(open_store(store_cfg, clock=clock))


def build_query(store_cfg: Store) -> Query:
    """The query layer for the configured store (InfluxQL over /query, or SQL on the embedded file).

    InfluxDB 2.x: queries go through the v1-compatible ``/query`` with the token, ``db`` = bucket
    (the bucket needs a DBRP mapping, which 2.x creates for buckets made by ``influx v1 dbrp``).
    """
    timeout_s = max(30.0, store_cfg.timeout_ms / 1000)
    if store_cfg.kind is StoreKind.influxdb_v1:
        return InfluxQLQuery(store_cfg.url or "", store_cfg.database, retention_policy=store_cfg.retention_policy,
                             username=store_cfg.username, password=store_cfg.password, timeout_s=timeout_s)
    if store_cfg.kind is StoreKind.influxdb_v2:
        return InfluxQLQuery(store_cfg.url or "", store_cfg.bucket or "", token=store_cfg.token, timeout_s=timeout_s)
    return StoreQuery(open_store(store_cfg))


def build_outbox(outbox_cfg: OutboxConfig, metrics: Metrics | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 thin: ThinRule | None = None) -> Outbox:
    return Outbox(Path(outbox_cfg.path), max_bytes=outbox_cfg.max_bytes, metrics=metrics, clock=clock, thin=thin)


# --- splitting and bisecting -----------------------------------------------------------------------


async def write_resilient(sink: Sink, lines: Sequence[str]) -> list[tuple[int, str]]:
    """Write ``lines``: split on 413, bisect on 400. Returns the refused points as (index, reason).

    ``SinkUnavailable`` and ``SinkBlocked`` propagate: the caller retries the whole batch (points
    already stored by a piece are written again, which InfluxDB treats as the same points).
    """

    async def go(lo: int, hi: int) -> list[tuple[int, str]]:
        try:
            await sink.write(lines[lo:hi])
            return []
        except SinkRejected as e:
            if e.rejected is not None:
                return [(lo + i, reason) for i, reason in e.rejected]
            if hi - lo == 1:
                return [(lo, str(e))]
        except SinkTooLarge as e:
            if hi - lo == 1:
                return [(lo, f"too large for the store: {e}")]
        mid = (lo + hi) // 2
        return await go(lo, mid) + await go(mid, hi)

    if not lines:
        return []
    return await go(0, len(lines))


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random, retry_after_s: float | None = None) -> float:
    """Capped exponential backoff with jitter (half fixed, half random), at least ``retry_after_s``."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max(cap_s, 300.0)))
    return delay


# --- the loop --------------------------------------------------------------------------------------


class Deliverer:
    """Moves the points of ``consumer`` from ``outbox`` to ``sink``. ``run()`` until ``stop()``; ``flush()`` drains."""

    def __init__(self, outbox: Outbox, sink: Sink, metrics: Metrics | None = None, clock: Clock = SYSTEM_CLOCK, *,
                 batch_points: int = 5000, flush_interval_s: float = 1.0, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 10.0, blocked_retry_s: float = 60.0, rng: random.Random | None = None,
                 flush_interval_ms: int | None = None, consumer: str = LOCAL) -> None:
        self.outbox, self.sink, self.metrics, self.clock = outbox, sink, metrics, clock
        self.consumer = consumer
        self.batch_points = batch_points
        self.flush_interval_s = flush_interval_s if flush_interval_ms is None else flush_interval_ms / 1000
        self.backoff_base_s, self.backoff_cap_s, self.blocked_retry_s = backoff_base_s, backoff_cap_s, blocked_retry_s
        self.rng = rng or random.Random()
        self.state = "ok"
        self.last_error: str | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self._since: float | None = None  # monotonic start of the current failure
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None
        self._flush_wanted = 0
        self._partial_wait = False  # commits wake the loop only for a full batch meanwhile
        self._running = False
        self._cursor = 0
        if metrics is not None:
            metrics.set_sink_state("ok")

    @classmethod
    def from_config(cls, outbox: Outbox, sink: Sink, store_cfg: Store, metrics: Metrics | None = None,
                    clock: Clock = SYSTEM_CLOCK) -> "Deliverer":
        return cls(outbox, sink, metrics, clock, batch_points=store_cfg.batch_points,
                   flush_interval_s=store_cfg.flush_interval_ms / 1000, backoff_cap_s=store_cfg.retry_cap_s)

    def _events(self) -> None:
        if self._stop is None:
            self._stop = asyncio.Event()
            self._wake = asyncio.Event()
            self._progress = asyncio.Condition()

    async def run(self) -> None:
        """Deliver until ``stop()``. Never raises for store trouble: it waits and retries.

        One batch is on the wire at a time (per-series order); while it is, the next batch is read
        and the previous one's acknowledgement is committed, so SQLite work overlaps the HTTP write.
        """
        self._events()
        assert self._stop is not None and self._wake is not None
        if self._running:
            raise RuntimeError("Deliverer.run() is already running")
        loop = asyncio.get_running_loop()
        wake = self._wake
        consumer, outbox, full = self.consumer, self.outbox, self.batch_points

        def committed() -> None:  # in the outbox's writer thread
            # waiting out a partial batch, only a full one is worth a wake-up: under heavy ingest
            # (a commit every few ms) each would cost this thread a self-pipe write and the loop a turn
            if self._partial_wait and outbox.lag(consumer) < full:
                return
            loop.call_soon_threadsafe(wake.set)

        unsubscribe = self.outbox.on_commit(committed)
        self._running = True
        partial_since: float | None = None
        prefetched: Batch | None = None
        pending_ack: asyncio.Task | None = None
        self._cursor = 0
        try:
            while not self._stop.is_set():
                wake.clear()
                if prefetched is None and partial_since is None and not self._flush_wanted \
                        and 0 < self.outbox.lag(self.consumer) < self.batch_points:
                    # a partial batch: wait out its flush interval first, then read it once (reading
                    # it now as well would be a SQLite read every interval for nothing)
                    if pending_ack is not None:
                        await pending_ack  # the lag counts what is in flight until it is acknowledged
                        pending_ack = None
                    if 0 < self.outbox.lag(self.consumer) < self.batch_points:
                        partial_since = loop.time()
                        await self._wait_partial(wake, partial_since + self.flush_interval_s)
                        continue
                if prefetched is None and not self.outbox.lag(self.consumer):
                    batch = None  # nothing for this consumer (a consumer of some measurements is woken by every commit)
                else:
                    batch = prefetched or await asyncio.to_thread(self.outbox.batch, self.batch_points, self._cursor,
                                                                  self.consumer)
                prefetched = None
                if batch is None:
                    partial_since = None
                    if pending_ack is not None:
                        await pending_ack
                        pending_ack = None
                    if self._cursor and self.outbox.lag(self.consumer) and self.outbox.batch(1, None, self.consumer):
                        self._cursor = 0  # rows below the cursor (an ack failed): send them again
                        continue
                    await self._notify()
                    await self._wait(wake, None)
                    continue
                if len(batch.lines) < self.batch_points and not self._flush_wanted:
                    now = loop.time()
                    if partial_since is None:
                        partial_since = now
                    if now - partial_since < self.flush_interval_s:
                        if pending_ack is not None:
                            await pending_ack
                            pending_ack = None
                        await self._wait_partial(wake, partial_since + self.flush_interval_s)
                        continue
                partial_since = None
                nxt = asyncio.ensure_future(asyncio.to_thread(self.outbox.batch, self.batch_points, batch.last_id,
                                                              self.consumer))
                rejected = await self._write(batch)
                if rejected is None:  # stopped while retrying
                    nxt.cancel()
                    break
                if pending_ack is not None:
                    await pending_ack
                pending_ack = asyncio.ensure_future(self._ack(batch, rejected))
                self._cursor = batch.last_id
                b2 = await nxt
                # a full next batch goes straight out; a partial one is re-read (more may have come)
                prefetched = b2 if b2 is not None and len(b2.lines) >= self.batch_points else None
        finally:
            if pending_ack is not None:
                await pending_ack
            unsubscribe()
            self._running = False
            await self._notify()

    def stats(self) -> dict:
        """For health and the demo summary: state, counts this run, this consumer's lag, the log's drops."""
        return {"state": self.state, "last_error": self.last_error, "sink": self.sink.name, "consumer": self.consumer,
                "delivered": self.delivered, "dead_lettered": self.dead_lettered,
                "depth": self.outbox.lag(self.consumer), "dropped": self.outbox.dropped}

    def stop(self) -> None:
        self._events()
        assert self._stop is not None
        self._stop.set()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Return when every point committed before the call has been delivered (or dead-lettered).

        Works with or without ``run()`` going (without, it runs the loop until done); raises
        ``TimeoutError`` after ``timeout_s``.
        """
        self._events()
        assert self._progress is not None and self._wake is not None and self._stop is not None
        target = self.outbox.last_id()
        if self._done(target):
            return
        own: asyncio.Task | None = None
        if not self._running:
            self._stop = asyncio.Event()
            own = asyncio.ensure_future(self.run())
        self._flush_wanted += 1
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                async with self._progress:
                    await self._progress.wait_for(lambda: self._done(target) or (own is not None and own.done()))
        finally:
            self._flush_wanted -= 1
            if own is not None:
                self._stop.set()
                await own
        if not self._done(target):
            raise SinkError(f"delivery stopped before the flush completed ({self.last_error})")

    def _done(self, target: int) -> bool:
        return not self.outbox.waiting(self.consumer, target)

    async def _notify(self) -> None:
        if self._progress is not None:
            async with self._progress:
                self._progress.notify_all()

    async def _wait(self, wake: asyncio.Event, timeout: float | None) -> None:
        assert self._stop is not None
        waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _wait_partial(self, wake: asyncio.Event, deadline: float) -> None:
        """Wait out a partial batch's flush interval. Wake early only when a full batch is waiting
        (the outbox's in-memory depth says so), a flush is wanted or delivery stops: re-reading the
        partial batch on every commit would cost a SQLite read per commit under heavy ingest."""
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        self._partial_wait = True
        try:
            while True:
                remaining = deadline - loop.time()
                if (remaining <= 0 or self._stop.is_set() or self._flush_wanted
                        or self.outbox.lag(self.consumer) >= self.batch_points):
                    return
                wake.clear()
                await self._wait(wake, remaining)
        finally:
            self._partial_wait = False

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the injected clock, cut short by ``stop()``."""
        assert self._stop is not None
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([sleeper, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    def _set_state(self, state: str, error: str | None) -> None:
        if state == self.state:
            self.last_error = error or self.last_error
            return
        now = self.clock.monotonic()
        if state == "ok":
            log.info("store up sink=%s after_s=%.1f", self.sink.name, now - (self._since or now))
            self._since = None
            self.last_error = None
        elif state == "retrying":
            self._since = self._since or now
            log.warning("store down sink=%s error=%s (retrying, points keep buffering)", self.sink.name, error)
        else:
            self._since = self._since or now
            log.error("store refuses delivery sink=%s error=%s: delivery stopped, points keep buffering in the "
                      "outbox; fix the credentials or the database (retrying every %.0f s)",
                      self.sink.name, error, self.blocked_retry_s)
        self.state = state
        self.last_error = error
        if self.metrics is not None:
            self.metrics.set_sink_state(state)

    async def _write(self, batch: Batch) -> list[tuple[int, str]] | None:
        """Write one batch, retrying until the store took it; the refused points, or None if stopped."""
        assert self._stop is not None
        attempt = 0
        lines = batch.lines
        while True:
            t0 = time.perf_counter()
            try:
                rejected = await write_resilient(self.sink, lines)
            except SinkUnavailable as e:
                self._failed(batch, "retrying", e)
                delay = backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s, self.rng, e.retry_after_s)
                attempt += 1
            except SinkBlocked as e:
                self._failed(batch, "blocked", e)
                delay = self.blocked_retry_s
            except SinkError as e:  # another refusal of the whole batch: treat as needing an operator
                self._failed(batch, "blocked", e)
                delay = self.blocked_retry_s
            except Exception as e:  # a bug in a sink must not end delivery; back off and say so
                log.exception("sink failed unexpectedly sink=%s", self.sink.name)
                self._failed(batch, "retrying", e)
                delay = backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s, self.rng)
                attempt += 1
            else:
                if self.metrics is not None:
                    self.metrics.write_latency.observe(time.perf_counter() - t0)
                self._set_state("ok", None)
                return rejected
            if self._stop.is_set():
                return None
            await self._sleep(delay)
            if self._stop.is_set():
                return None

    async def _ack(self, batch: Batch, rejected: list[tuple[int, str]]) -> None:
        """Move the consumer's cursor past the delivered batch, dead-lettering the refused points, and count."""
        lines = batch.lines
        bad = [(lines[i], reason) for i, reason in rejected]
        try:
            await self.outbox.ack_async(batch.last_id, bad, self.consumer)
        except EdgeError as e:  # the outbox could not commit: the rows stay and are sent again
            log.error("outbox ack failed sink=%s upto_id=%d error=%s", self.sink.name, batch.last_id, e)
            self._cursor = 0
            return
        n_ok = len(lines) - len(bad)
        self.delivered += n_ok
        self.dead_lettered += len(bad)
        if self.metrics is not None:
            self.metrics.points_delivered.inc(n_ok)
        if bad:
            log.warning("store refused points sink=%s count=%d first_reason=%s (dead-lettered)",
                        self.sink.name, len(bad), bad[0][1][:300])
        await self._notify()

    def _failed(self, batch: Batch, state: str, e: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.points_retried.inc(len(batch.lines))
        self._set_state(state, str(e)[:500])
