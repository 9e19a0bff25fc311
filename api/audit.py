"""The audit trail (GB/T 22239): every change at once, refused requests aggregated, the table bounded.

A change (key created or revoked, dead letter replayed, alert acknowledged) is one entry, written
before the answer. A refused request (401, 403, 404 of another org's thing, 429) is folded into an
aggregate per client address, minute, key, status and action: the first refusal writes the entry
(with its path and detail), later ones only raise its ``count``. So a flood of refused requests
costs one row per client and minute, not one per request, and the refused request does no disk
write of its own: hidden and missing things answer alike, in text and in time.

Entries are written off the event loop, in worker threads, one batch at a time; counts are
written at most every ``flush_s`` seconds and before ``GET /v1/audit`` reads the table
(``drain``). Nothing here is bound to one event loop (test clients run each request in a loop
of its own). After each write the table is cut to its newest ``max_rows`` entries; what that
deletes is counted (``rows_pruned``, ``events_pruned``), and so are the refusals that were merged
into an existing entry (``merged``).

Each entry is also a Point (measurement ``audit``) through the service's ingest when there is one;
an aggregate's Point is sent again with its final ``count`` under the same time and tags, which
overwrites the first in InfluxDB and in the embedded store. Paths and details are redacted
(``api.keys.redact_target``, ``api.keys.scrub``) before they go anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from api.keys import KeyStore, Principal, redact_target, scrub
from edge.point import Point

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass(eq=False)  # entries are compared by identity (one per aggregate)
class Entry:
    at_ns: int
    principal: Principal | None
    org: str
    client: str
    method: str
    path: str
    status: int
    action: str
    detail: str
    count: int = 1
    row_id: int | None = None
    written_count: int = 0
    point_count: int = 0


@dataclass
class _Counters:
    refusals: int = 0
    merged: int = 0
    rows_pruned: int = 0
    events_pruned: int = 0
    write_errors: int = 0


class AuditTrail:
    def __init__(self, keys: KeyStore | None, ingest: Any = None, *, root_org: str = "", max_rows: int = 100_000,
                 flush_s: float = 5.0, clock: Callable[[], int] = time.time_ns) -> None:
        self.keys, self.ingest, self.root_org = keys, ingest, root_org
        self.max_rows, self.flush_s, self._clock = max_rows, flush_s, clock
        self.counters = _Counters()
        self._open: dict[tuple, Entry] = {}       # this minute's aggregates, and older ones not yet written
        self._queue: list[Entry] = []             # aggregates whose row or count is still to be written
        self._lock = threading.Lock()             # one batch written at a time
        self._writer: asyncio.Task | None = None
        self._timer: tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle] | None = None
        self._points: set[asyncio.Task] = set()
        self._rows = keys.audit_rows() if keys is not None else 0
        if keys is not None:
            self._prune()

    # -- what the Guard calls --------------------------------------------------------------------
    def change(self, principal: Principal | None, client: str, method: str, path: str, query: str, status: int,
               action: str, detail: str = "") -> None:
        """A change: written now (the caller answers after it)."""
        e = Entry(self._clock(), principal, self._org(principal), client, method, redact_target(path, query)[:500],
                  status, action, scrub(detail)[:500])
        if self.keys is not None:
            try:
                e.row_id = self.keys.audit(e.at_ns, principal, method, e.path, status, action, e.detail,
                                           client=client, org=e.org)
                e.written_count = 1
                self._rows += 1
                self._prune()
            except Exception:  # the audit table must never take a request down
                self.counters.write_errors += 1
                log.exception("audit write failed")
        self._point(e)

    def refusal(self, principal: Principal | None, client: str, method: str, path: str, query: str, status: int,
                action: str, detail: str = "") -> None:
        """A refused request: merged into this minute's aggregate for its client, key, status and action."""
        now = self._clock()
        self.counters.refusals += 1
        minute = now // (60 * NS)
        key = (minute, client, principal.key_id if principal else "-", status, action)
        e = self._open.get(key)
        if e is not None:
            e.count += 1
            self.counters.merged += 1
        else:
            if len(self._open) > 1000:
                self._close_old(minute)
            e = self._open[key] = Entry(now, principal, self._org(principal), client, method,
                                        redact_target(path, query)[:500], status, action, scrub(detail)[:500])
        if e not in self._queue:
            self._queue.append(e)
        self._schedule(new=e.row_id is None)

    async def drain(self) -> None:
        """Write everything pending (rows and counts), and send the Points of changed counts."""
        if self._queue:
            await asyncio.to_thread(self._write, self._take())
        else:  # a batch may be under way in a worker thread: wait for it
            await asyncio.to_thread(self._wait_for_writes)
        self._send_points()

    def stats(self) -> dict[str, int]:
        c = self.counters
        return {"refusals": c.refusals, "refusals_merged": c.merged, "rows_pruned": c.rows_pruned,
                "events_pruned": c.events_pruned, "write_errors": c.write_errors}

    # -- writing ---------------------------------------------------------------------------------
    def _org(self, p: Principal | None) -> str:
        # unauthenticated refusals belong to the root org: its admins read them
        return (p.org or "") if p is not None else self.root_org

    def _wait_for_writes(self) -> None:
        with self._lock:
            pass

    def _schedule(self, new: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a caller without an event loop: write inline
            self._write(self._take())
            return
        # a task or timer of another loop (one that stopped: test clients) does not count
        if new:
            if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
                self._writer = loop.create_task(self._write_new())
        else:
            self._flush_soon(loop)

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None or self._timer[0] is not loop:
            self._timer = (loop, loop.call_later(self.flush_s, self._flush_later))

    def _flush_later(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.drain())
        self._points.add(task)
        task.add_done_callback(self._points.discard)

    async def _write_new(self) -> None:
        """New aggregates get their row soon after the first refusal; counts wait for the timer."""
        while any(e.row_id is None for e in self._queue):
            await asyncio.to_thread(self._write, self._take(only_new=True))
        self._send_points()
        if self._queue:
            self._flush_soon(asyncio.get_running_loop())

    def _take(self, only_new: bool = False) -> list[Entry]:
        if only_new:
            batch = [e for e in self._queue if e.row_id is None]
            self._queue = [e for e in self._queue if e.row_id is not None]
        else:
            batch, self._queue = self._queue, []
        return batch

    def _write(self, batch: list[Entry]) -> None:
        """(In a worker thread.) Insert new aggregates, update the counts of written ones, prune."""
        if self.keys is None or not batch:
            return
        with self._lock:  # a batch taken meanwhile waits: an entry is inserted once, then only updated
            self._write_locked(batch)

    def _write_locked(self, batch: list[Entry]) -> None:
        try:
            counts = {}
            for e in batch:
                n = e.count
                if e.row_id is None:
                    e.row_id = self.keys.audit(e.at_ns, e.principal, e.method, e.path, e.status, e.action, e.detail,
                                               client=e.client, org=e.org, count=n)
                    self._rows += 1
                elif n != e.written_count:
                    counts[e.row_id] = n
                e.written_count = n
            self.keys.audit_counts(counts)
            self._prune()
        except Exception:
            self.counters.write_errors += 1
            log.exception("audit write failed")

    def _prune(self) -> None:
        """Keep the newest ``max_rows`` entries (cut 1 % further, so pruning is not done on every write)."""
        if self._rows <= self.max_rows:
            return
        keep = self.max_rows - self.max_rows // 100
        rows, events = self.keys.prune_audit(keep)
        self._rows = self.keys.audit_rows()
        if rows:
            self.counters.rows_pruned += rows
            self.counters.events_pruned += events
            log.info("audit table pruned rows=%d events=%d max_rows=%d", rows, events, self.max_rows)

    def _close_old(self, minute: int) -> None:
        """Forget aggregates of past minutes once their row and count are written."""
        self._open = {k: e for k, e in self._open.items()
                      if k[0] >= minute or e.row_id is None or e.written_count != e.count}

    # -- points ----------------------------------------------------------------------------------
    def _point(self, e: Entry) -> None:
        if self.ingest is None:
            return
        tags = {"key": e.principal.key_id if e.principal is not None else "-", "action": e.action}
        if e.org:
            tags["org"] = e.org
        point = Point("audit", tags, {"method": e.method, "path": e.path, "status": e.status, "detail": e.detail,
                                      "client": e.client, "count": e.count}, e.at_ns)
        e.point_count = e.count
        try:
            task = asyncio.get_running_loop().create_task(self.ingest.submit([point]))
        except RuntimeError:
            return
        self._points.add(task)
        task.add_done_callback(self._point_sent)

    def _point_sent(self, task: asyncio.Task) -> None:
        self._points.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters.write_errors += 1
            log.warning("audit point not submitted: %s", task.exception())

    def _send_points(self) -> None:
        """A Point for each new aggregate, and again (same time and tags: it overwrites) when its count grew."""
        for e in list(self._open.values()):
            if e.point_count != e.count:
                self._point(e)
