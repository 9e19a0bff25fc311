"""The JT/T 808 access server: asyncio streams around ``session.Session``.

One task per connection reads what the socket has (up to ``READ_BYTES``), cuts it into frames,
lets the session answer them, commits what must be durable (positions to the outbox through
``ingest.submit``, refused frames to the dead-letter table, auth codes to the registry) and only
then writes the answers. While that commit is in flight the connection is not read: a slow
outbox slows the terminals (their TCP windows fill), it never grows our memory. When the commit
fails (``OutboxFull``, any ``EdgeError``) the positions' acknowledgements are not sent; the
terminal keeps them and sends them again.

Duplicates (a terminal resending what we did acknowledge, e.g. because the answer was lost) are
recognised by ``collector.gps.validate.Tracker`` (same vehicle, same fix time) and acknowledged
without being stored again; the store keys a point by measurement, tags and time, so even a
duplicate the tracker no longer remembers is stored once.

Limits and their reasons (counted in ``stats()``, ``/v1/health`` and ``edge_jt808_*`` metrics):
``max_connections`` and ``max_per_address`` (refused at once), ``max_frame_bytes``
(``jt808_frame_too_large``: closed), ``handshake_timeout_s`` (no authentication yet),
``frame_timeout_s`` (a frame begun and not finished: a byte-by-byte sender), idle for
``heartbeat_s`` x ``idle_multiple`` (``idle``), 32 undecodable frames in a row (``garbage``),
3 failed authentications. A terminal silent for the idle time raises ``on_silent`` once
(the service turns it into a ``lost_signal`` alert).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any, Callable, Sequence

from collector.gps.validate import Tracker
from collector.jt808.protocol import FrameSplitter
from collector.jt808.registry import Registry
from collector.jt808.session import AUTHENTICATED, NS, Fleet, Outcome, Policy, Session, Terminal
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Jt808, ProxyProtocol, Vehicle
from edge.errors import EdgeError, OutboxFull, PayloadError
from edge.point import Point

log = logging.getLogger(__name__)

SOURCE = "jt808"
READ_BYTES = 16 * 1024  # taken from a socket per turn: a few dozen 0x0704 batches
PROXY_LINE_MAX = 108  # PROXY protocol v1: the longest header line

SilentHook = Callable[[Terminal, int, float], Sequence[Point]]


class _Pending:
    """A connection's positions and dead letters waiting for the committer, and its answer."""

    __slots__ = ("points", "dead", "topic", "fut")

    def __init__(self, points: list[Point], dead: list[tuple[bytes, str]], topic: str, fut: asyncio.Future) -> None:
        self.points, self.dead, self.topic, self.fut = points, dead, topic, fut


class _Conn:
    __slots__ = ("reader", "writer", "addr", "session", "splitter", "opened", "last_frame", "partial_since",
                 "close_reason", "task")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str, session: Session,
                 splitter: FrameSplitter, opened: float) -> None:
        self.reader, self.writer, self.addr, self.session, self.splitter = reader, writer, addr, session, splitter
        self.opened = self.last_frame = opened
        self.partial_since: float | None = None
        self.close_reason: str | None = None
        self.task: asyncio.Task | None = None

    def close(self, reason: str, *, abort: bool = False) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        tr = self.writer.transport
        if abort:
            tr.abort()
        else:
            tr.close()


class Jt808Server:
    """Serve terminals until cancelled: ``await run()``. ``port`` is the bound port once ``ready``."""

    def __init__(self, cfg: Jt808, vehicles: Sequence[Vehicle], ingest: Any, registry: Registry, *,
                 clock: Clock = SYSTEM_CLOCK, on_silent: SilentHook | None = None) -> None:
        self.cfg = cfg
        self.policy = Policy.from_config(cfg)
        self.fleet = Fleet(vehicles, cfg.registration)
        self.ingest = ingest
        self.registry = registry
        self.clock = clock
        self.on_silent = on_silent
        self.tracker = Tracker(cfg.max_speed_kmh)
        self.conns: set[_Conn] = set()
        self.by_address: Counter[str] = Counter()
        self.by_phone: dict[str, _Conn] = {}
        self.errors: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.frames = 0
        self.positions = 0
        self.backlog = 0
        self.duplicates = 0
        self.unacknowledged = 0  # positions whose commit failed: not acknowledged, the terminal resends
        self.bytes_read = 0
        self.commits = 0  # committer transactions
        self.committed_items = 0  # connections' outcomes they carried
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._server: asyncio.Server | None = None

    # -- public ---------------------------------------------------------------------------------
    def terminals(self) -> list[Terminal]:
        return list(self.fleet.terminals.values())

    def terminal(self, phone: str) -> Terminal | None:
        return self.fleet.terminals.get(phone.lstrip("0") or "0")

    def stats(self) -> dict[str, Any]:
        return {
            "listening": f"{self.cfg.host}:{self.port}" if self.port is not None else None,
            "connections": len(self.conns),
            "authenticated": sum(1 for c in self.conns if c.session.state == AUTHENTICATED),
            "terminals": len(self.fleet.terminals),
            "online": sum(1 for t in self.fleet.terminals.values() if t.online),
            "frames": self.frames,
            "positions_stored": self.positions,
            "backlog_stored": self.backlog,
            "duplicates": self.duplicates,
            "unacknowledged": self.unacknowledged,
            "commits": self.commits,
            "mean_terminals_per_commit": round(self.committed_items / self.commits, 1) if self.commits else None,
            "errors": dict(self.errors),
            "closed": dict(self.closed),
            "refused": dict(self.refused),
        }

    async def run(self) -> None:
        cfg = self.cfg
        self._server = await asyncio.start_server(self._serve, cfg.host, cfg.port, limit=2 * cfg.max_frame_bytes,
                                                  backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("jt808 listening on %s:%s (registration %s)", cfg.host, self.port, cfg.registration.value)
        self.ready.set()
        committer = asyncio.create_task(self._committer(), name="jt808-committer")
        try:
            await self._sweep_forever()
        finally:
            self._server.close()
            for c in list(self.conns):
                c.close("shutdown", abort=True)
            tasks = [c.task for c in list(self.conns) if c.task is not None]
            if tasks:  # a commit in flight may finish (its answer is lost: the terminal resends)
                _, pending = await asyncio.wait(tasks, timeout=5)
                for t in pending:
                    t.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=1)
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            for it in self._pending:
                if not it.fut.done():
                    it.fut.cancel()
            self._pending = []
            self.ready.clear()
            log.info("jt808 stopped")

    # -- admission ------------------------------------------------------------------------------
    def _refuse(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.refused[reason] += 1
        self._count("jt808_refused", reason)
        writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if len(self.conns) >= self.cfg.max_connections:
            self._refuse(writer, "too_many_connections")
            return
        mono = self.clock.monotonic()
        conn = _Conn(reader, writer, addr, Session(self.fleet, self.registry, self.policy, remote="", connected_ns=self.clock.now_ns()),
                     FrameSplitter(self.cfg.max_frame_bytes), mono)
        conn.task = asyncio.current_task()
        self.conns.add(conn)
        counted = False
        try:
            if self.cfg.proxy_protocol is ProxyProtocol.v1:
                conn.addr = await self._proxy_header(conn)
            if self.by_address[conn.addr] >= self.cfg.max_per_address:
                self.conns.discard(conn)
                self._refuse(writer, "too_many_from_address")
                return
            self.by_address[conn.addr] += 1
            counted = True
            port = peer[1] if isinstance(peer, tuple) and conn.addr == addr else None
            conn.session.remote = f"{conn.addr}:{port}" if port is not None else conn.addr
            await self._read_loop(conn)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            conn.close_reason = conn.close_reason or "reset"
        except asyncio.CancelledError:  # shutting down: the task ends here (asyncio's stream callback
            conn.close_reason = conn.close_reason or "shutdown"  # would log a cancelled task as an error)
        except Exception:  # a bug of ours costs this connection, never the server
            log.exception("jt808 connection failed remote=%s", conn.addr)
            conn.close_reason = conn.close_reason or "internal_error"
        finally:
            self._forget(conn, counted)

    async def _proxy_header(self, conn: _Conn) -> str:
        """The client's own address from a PROXY protocol v1 line (HAProxy ``send-proxy``)."""
        try:
            line = await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), self.cfg.handshake_timeout_s)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            conn.close("bad_proxy_header", abort=True)
            raise ConnectionError("no PROXY header") from None
        parts = line[:PROXY_LINE_MAX].decode("ascii", "replace").split()
        if len(parts) >= 2 and parts[0] == "PROXY" and parts[1] == "UNKNOWN":
            return conn.addr
        if len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
            conn.close("bad_proxy_header", abort=True)
            raise ConnectionError("bad PROXY header")
        return parts[2]

    def _forget(self, conn: _Conn, counted: bool) -> None:
        self.conns.discard(conn)
        if counted:
            self.by_address[conn.addr] -= 1
            if self.by_address[conn.addr] <= 0:
                del self.by_address[conn.addr]
        reason = conn.close_reason or "peer_closed"
        self.closed[reason] += 1
        self._count("jt808_closed", reason)
        t = conn.session.terminal
        if t is not None and self.by_phone.get(t.phone) is conn:
            del self.by_phone[t.phone]
            t.online = False
            log.info("jt808 terminal %s offline (%s) vehicle=%s", t.phone, reason, t.vehicle)
        with contextlib.suppress(Exception):
            conn.writer.close()

    # -- the connection -------------------------------------------------------------------------
    async def _read_loop(self, conn: _Conn) -> None:
        reader, session, splitter, clock = conn.reader, conn.session, conn.splitter, self.clock
        while conn.close_reason is None:
            data = await reader.read(READ_BYTES)
            if not data:
                return
            self.bytes_read += len(data)
            try:
                segs = splitter.feed(data)
            except PayloadError as e:
                self._error(e.reason)
                conn.close(e.reason, abort=True)
                return
            mono = clock.monotonic()
            if splitter.partial:
                if conn.partial_since is None or segs:
                    conn.partial_since = mono
            else:
                conn.partial_since = None
            if not segs:
                continue
            out = Outcome()
            now = clock.now_ns()
            for seg in segs:
                session.handle(seg, now, out)
            self.frames += out.frames
            if out.sound:
                conn.last_frame = mono
            await self._finish(conn, out)
            if out.close is not None:
                conn.close(out.close, abort=out.close == "garbage")
                return

    async def _finish(self, conn: _Conn, out: Outcome) -> None:
        """Make the outcome durable, then answer."""
        for reason in out.errors:
            self._error(reason)
        ok = True
        if out.durable_work:
            ok = await self._commit(conn, out)
        if out.authenticated:
            self._online(conn)
        if ok:
            data = b"".join(out.replies) + b"".join(out.acks) if out.acks else b"".join(out.replies)
        else:
            data = b"".join(out.replies)
        if data:
            conn.writer.write(data)
            await conn.writer.drain()

    async def _commit(self, conn: _Conn, out: Outcome) -> bool:
        """Registry changes, then the positions and dead letters through the committer; False when
        any of it failed (then nothing of this outcome is acknowledged)."""
        t = conn.session.terminal
        try:
            for r in out.save:
                await self.registry.save(r)
            for phone in out.drop:
                await self.registry.drop(phone)
            n = nb = dups = 0
            if out.points or out.dead:
                item = _Pending(out.points, out.dead, t.phone if t is not None else "",
                                asyncio.get_running_loop().create_future())
                self._pending.append(item)
                self._wake.set()
                n, nb, dups = await item.fut
        except EdgeError as e:
            n = len(out.points)
            self.unacknowledged += n
            self._count("jt808_unacknowledged", "outbox_full" if isinstance(e, OutboxFull) else "commit_failed", n or 1)
            if out.save or out.drop:
                conn.close("registry_error")  # the session believed the code kept: start it again
            log.warning("jt808 not acknowledged: %s positions of terminal %s (%s: %s)", n,
                        t.phone if t is not None else "?", type(e).__name__, e)
            return False
        self.positions += n
        self.backlog += nb
        self.duplicates += dups
        if t is not None and out.points:
            t.positions += n
            t.backlog_positions += nb
            if out.newest_fix_ns > (t.last_fix_ns or 0):
                t.last_fix_ns = out.newest_fix_ns
        return True

    async def _committer(self) -> None:
        """One outbox commit for what every connection has waiting: the terminals' positions of the
        last ``commit_window_ms`` (and whatever came in while the previous commit ran) go in one
        ``ingest.submit``: one transaction, one fsync, one pass of the tracker, however many
        terminals. Each connection waits for its part's result before it answers and reads on."""
        window = self.cfg.commit_window_ms / 1000.0
        while True:
            await self._wake.wait()
            if window > 0:
                await asyncio.sleep(window)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit_batch(batch)

    async def _commit_batch(self, batch: list["_Pending"]) -> None:
        points = [p for it in batch for p in it.points]
        owner = {id(p): k for k, it in enumerate(batch) for p in it.points} if len(batch) > 1 else None
        dead = [(raw, reason, it.topic) for it in batch for raw, reason in it.dead]
        verdict = self.tracker.check(points) if points else None
        dups = [0] * len(batch)
        if verdict is not None:
            for p, err in verdict.rejected:
                k = owner[id(p)] if owner is not None else 0
                if err.reason == "duplicate":
                    dups[k] += 1
                else:
                    self._error(err.reason)
                    dead.append((p.to_line().encode("utf-8"), f"{err.reason}: {err.detail}", batch[k].topic))
        accepted = verdict.accepted if verdict is not None else ()
        self.commits += 1
        self.committed_items += len(batch)
        try:
            if dead:
                await asyncio.gather(*(self.ingest.reject(SOURCE, raw, reason, topic) for raw, reason, topic in dead))
            if accepted:
                await self.ingest.submit(list(accepted))
            if verdict is not None:
                self.tracker.commit(verdict)
        except Exception as e:  # noqa: BLE001  every waiting connection learns it; none acknowledges
            for it in batch:
                if not it.fut.done():
                    it.fut.set_exception(e)
            return
        if accepted:
            self.ingest.count("jt808_positions_stored", len(accepted))
        if any(dups):
            self.ingest.count("jt808_duplicates", sum(dups))
        per = [[0, 0] for _ in batch]
        for p in accepted:
            c = per[owner[id(p)] if owner is not None else 0]
            c[0] += 1
            if "backlog" in p.fields:
                c[1] += 1
        for k, it in enumerate(batch):
            if not it.fut.done():
                it.fut.set_result((per[k][0], per[k][1], dups[k]))

    def _online(self, conn: _Conn) -> None:
        t = conn.session.terminal
        assert t is not None
        old = self.by_phone.get(t.phone)
        if old is not None and old is not conn:
            old.close("replaced")  # the terminal came back on a new connection: the old one is dead
        self.by_phone[t.phone] = conn
        if not t.online:
            t.online = True
            log.info("jt808 terminal %s online vehicle=%s protocol=%s remote=%s", t.phone, t.vehicle,
                     t.protocol if t.protocol_version is None else f"{t.protocol} v{t.protocol_version}", t.remote)

    # -- time -----------------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        cfg = self.cfg
        every = max(0.05, min(cfg.handshake_timeout_s, cfg.frame_timeout_s, cfg.idle_s) / 4)
        while True:
            await self.clock.sleep(every)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a sweep costs that sweep, never the terminals' connections
                log.exception("jt808 sweep failed")

    async def sweep(self) -> None:
        """Close connections past their limits; tell of terminals silent too long."""
        cfg, clock = self.cfg, self.clock
        mono, now = clock.monotonic(), clock.now_ns()
        for c in list(self.conns):
            if c.close_reason is not None:
                continue
            # aborted, not closed: a peer that does not read would keep a closing transport forever
            if c.session.state != AUTHENTICATED and mono - c.opened > cfg.handshake_timeout_s:
                c.close("handshake_timeout", abort=True)
            elif c.partial_since is not None and mono - c.partial_since > cfg.frame_timeout_s:
                c.close("frame_timeout", abort=True)
            elif mono - c.last_frame > cfg.idle_s:
                c.close("idle", abort=True)
            else:
                n = c.session.expire(now)
                if n:
                    self._error("subpackage_timeout", n)
        idle_ns = int(cfg.idle_s * NS)
        for t in list(self.fleet.terminals.values()):
            if t.last_seen_ns is None or t.silent_alerted or now - t.last_seen_ns <= idle_ns:
                continue
            t.silent_alerted = True
            silent_s = (now - t.last_seen_ns) / NS
            log.warning("jt808 terminal %s silent for %.0f s vehicle=%s", t.phone, silent_s, t.vehicle)
            self._count("jt808_silent", "idle")
            if self.on_silent is not None:
                try:
                    pts = list(self.on_silent(t, now, silent_s))
                    if pts:
                        await self.ingest.submit(pts)
                except EdgeError as e:
                    log.warning("jt808 silence alert for %s not stored: %s", t.phone, e)

    # -- counting -------------------------------------------------------------------------------
    def _error(self, reason: str, n: int = 1) -> None:
        self.errors[reason] += n
        self._count("jt808_errors", reason, n)

    def _count(self, name: str, reason: str, n: int = 1) -> None:
        self.ingest.count(name, n, reason=reason)
