"""The JT/T 808 access server: asyncio streams around ``session.Session``.

Each connection is an ``asyncio.Protocol`` (no stream, no task of its own): what the socket
has is cut into frames, the session answers them, what must be durable (positions to the outbox
through ``ingest.submit``, refused frames to the dead-letter table, auth codes to the registry) is
committed, and only then are the answers written, in one write per connection and commit. While
that commit is in flight the connection is not read: a slow
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
PROXY_LINE_MAX = 108  # PROXY protocol v1: the longest header line

SilentHook = Callable[[Terminal, int, float], Sequence[Point]]


class _Conn(asyncio.Protocol):
    """One terminal's connection: the transport's callbacks straight into the session, no stream
    and no task per connection (each wake-up of a task per frame costs more than the frame).

    While the outcome of a read waits for its commit the connection is not read
    (``pause_reading``): a slow outbox fills the terminals' TCP windows, never our memory; what
    came in the meantime is handled after the answer. A transport whose write buffer is full (a
    terminal that does not read its answers) is not read either."""

    __slots__ = ("server", "transport", "addr", "port", "session", "splitter", "opened", "last_frame", "partial_since",
                 "close_reason", "counted", "refused", "busy", "held", "reading_paused", "writing_paused", "proxy_buf",
                 "eof")

    def __init__(self, server: "Jt808Server") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.addr, self.port = "", None
        self.session: Session | None = None
        self.splitter = FrameSplitter(server.cfg.max_frame_bytes)
        self.opened = self.last_frame = 0.0
        self.partial_since: float | None = None
        self.close_reason: str | None = None
        self.counted = self.refused = self.busy = self.reading_paused = self.writing_paused = self.eof = False
        self.held: list[bytes] = []
        self.proxy_buf: bytes | None = None

    def close(self, reason: str, *, abort: bool = False) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        tr = self.transport
        if tr is None:
            return
        if abort:
            tr.abort()
        else:
            tr.close()

    # -- the transport's callbacks --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        srv = self.server
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.port = peer[1] if isinstance(peer, tuple) else None
        if len(srv.conns) >= srv.cfg.max_connections:
            self.refused = True
            srv._refuse(transport, "too_many_connections")
            return
        self.opened = self.last_frame = srv.clock.monotonic()
        self.session = Session(srv.fleet, srv.registry, srv.policy, remote="", connected_ns=srv.clock.now_ns())
        srv.conns.add(self)
        if srv.cfg.proxy_protocol is ProxyProtocol.v1:
            self.proxy_buf = b""  # the client's own address comes first (HAProxy ``send-proxy``)
        else:
            self._admit(self.addr, self.port)

    def _admit(self, addr: str, port: int | None) -> None:
        srv = self.server
        if srv.by_address[addr] >= srv.cfg.max_per_address:
            srv.conns.discard(self)
            self.refused = True
            srv._refuse(self.transport, "too_many_from_address")
            return
        srv.by_address[addr] += 1
        self.addr, self.counted = addr, True
        self.session.remote = f"{addr}:{port}" if port is not None else addr

    def data_received(self, data: bytes) -> None:
        if self.close_reason is not None or self.refused:
            return
        if self.busy or self.writing_paused:
            self.held.append(data)
            self._pause()
            return
        try:
            if self.proxy_buf is not None:
                data = self._proxy_header(data)
                if not data:
                    return
            self._feed(data)
        except Exception:  # a bug of ours costs this connection, never the server
            log.exception("jt808 connection failed remote=%s", self.addr)
            self.close("internal_error", abort=True)

    def eof_received(self) -> bool:
        if self.busy or self.held:  # the terminal stopped sending: what it sent is still answered
            self.eof = True
            return True
        return False  # closes the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.close_reason is None:
            self.close_reason = "reset" if exc is not None else "peer_closed"
        self.server._forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume()

    # -- reading --------------------------------------------------------------------------------
    def _pause(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        """Handle what came in while busy, then read again (unless busy once more)."""
        while self.held and not self.busy and not self.writing_paused and self.close_reason is None:
            data = b"".join(self.held)
            self.held.clear()
            self.data_received(data)
        if (self.reading_paused and not self.busy and not self.writing_paused and self.close_reason is None
                and not self.transport.is_closing()):
            self.reading_paused = False
            self.transport.resume_reading()

    def _proxy_header(self, data: bytes) -> bytes:
        """Take a PROXY protocol v1 line off the front; returns what follows it."""
        buf = self.proxy_buf + data
        i = buf.find(b"\r\n")
        if i < 0:
            if len(buf) > 2 * self.server.cfg.max_frame_bytes:
                self.close("bad_proxy_header", abort=True)
            self.proxy_buf = buf
            return b""
        self.proxy_buf = None
        parts = buf[:min(i + 2, PROXY_LINE_MAX)].decode("ascii", "replace").split()
        if len(parts) >= 2 and parts[0] == "PROXY" and parts[1] == "UNKNOWN":
            self._admit(self.addr, self.port)
        elif len(parts) != 6 or parts[0] != "PROXY" or parts[1] not in ("TCP4", "TCP6"):
            self.close("bad_proxy_header", abort=True)
            return b""
        else:
            self._admit(parts[2], self.port if parts[2] == self.addr else None)
        return buf[i + 2:] if not self.refused else b""

    def _feed(self, data: bytes) -> None:
        srv, splitter = self.server, self.splitter
        srv.bytes_read += len(data)
        try:
            segs = splitter.feed(data)
        except PayloadError as e:
            srv._error(e.reason)
            self.close(e.reason, abort=True)
            return
        mono = srv.clock.monotonic()
        if splitter.buf:
            if self.partial_since is None or segs:
                self.partial_since = mono
        else:
            self.partial_since = None
        if not segs:
            return
        out = Outcome()
        now = srv.clock.now_ns()
        handle = self.session.handle
        for seg in segs:
            handle(seg, now, out)
        srv.frames += out.frames
        if out.sound:
            self.last_frame = mono
        for reason in out.errors:
            srv._error(reason)
        if out.save or out.drop:  # a registration or a logout: the registry first (rare, a task of its own)
            self.busy = True
            srv._spawn(srv._keep_registry(self, out))
        elif out.points or out.dead:
            self.busy = True
            srv._pending.append((self, out))
            srv._wake.set()
        else:
            self.answer(out, None, None)

    def answer(self, out: Outcome, result: tuple[int, int, int] | None, error: Exception | None) -> None:
        """The outcome is durable (``result``: positions stored, of them backlog, duplicates) or it
        failed (``error``: nothing of it is acknowledged); send its answers and read on."""
        srv = self.server
        t = self.session.terminal
        ok = error is None
        if not ok:
            n = len(out.points)
            srv.unacknowledged += n
            srv._count("jt808_unacknowledged", "outbox_full" if isinstance(error, OutboxFull) else "commit_failed", n or 1)
            if out.save or out.drop:
                self.close("registry_error")  # the session believed the code kept: start it again
            log.warning("jt808 not acknowledged: %s positions of terminal %s (%s: %s)", n,
                        t.phone if t is not None else "?", type(error).__name__, error)
        elif result is not None:
            n, nb, dups = result
            srv.positions += n
            srv.backlog += nb
            srv.duplicates += dups
            if t is not None and out.points:
                t.positions += n
                t.backlog_positions += nb
                if out.newest_fix_ns > (t.last_fix_ns or 0):
                    t.last_fix_ns = out.newest_fix_ns
        if out.authenticated and self.close_reason is None:  # (not a connection already lost)
            srv._online(self)
        if ok and out.acks:
            data = b"".join(out.replies) + b"".join(out.acks) if out.replies else b"".join(out.acks)
        else:
            data = b"".join(out.replies)
        tr = self.transport
        if data and not tr.is_closing():
            tr.write(data)  # one write per outcome: every answer of this read and its commit
        self.busy = False
        if out.close is not None:
            self.close(out.close, abort=out.close == "garbage")
            return
        if self.held or self.reading_paused:
            self._resume()
        if self.eof and not self.busy and not self.held and self.close_reason is None:
            self.transport.close()  # after the answers are written


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
        self._pending: list[tuple[_Conn, Outcome]] = []
        self._committing = False
        self._tasks: set[asyncio.Task] = set()
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), cfg.host, cfg.port, backlog=1024, reuse_address=True)
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
            # a commit in flight may finish (its answer is lost: the terminal resends)
            deadline = loop.time() + 5
            while (self._pending or self._committing or self._tasks) and loop.time() < deadline:
                await asyncio.sleep(0.01)
            for t in list(self._tasks):
                t.cancel()
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            self._pending = []
            self.ready.clear()
            log.info("jt808 stopped")

    # -- admission ------------------------------------------------------------------------------
    def _refuse(self, transport: asyncio.BaseTransport, reason: str) -> None:
        self.refused[reason] += 1
        self._count("jt808_refused", reason)
        transport.abort()

    def _forget(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if conn.counted:
            conn.counted = False
            self.by_address[conn.addr] -= 1
            if self.by_address[conn.addr] <= 0:
                del self.by_address[conn.addr]
        reason = conn.close_reason or "peer_closed"
        self.closed[reason] += 1
        self._count("jt808_closed", reason)
        t = conn.session.terminal if conn.session is not None else None
        if t is not None and self.by_phone.get(t.phone) is conn:
            del self.by_phone[t.phone]
            t.online = False
            log.info("jt808 terminal %s offline (%s) vehicle=%s", t.phone, reason, t.vehicle)

    # -- commits --------------------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_registry(self, conn: _Conn, out: Outcome) -> None:
        """Registry changes first; then the positions and dead letters through the committer."""
        try:
            for r in out.save:
                await self.registry.save(r)
            for phone in out.drop:
                await self.registry.drop(phone)
        except EdgeError as e:
            conn.answer(out, None, e)
            return
        except Exception:  # a bug of ours costs this connection, never the server
            log.exception("jt808 connection failed remote=%s", conn.addr)
            conn.close("internal_error", abort=True)
            return
        if out.points or out.dead:
            self._pending.append((conn, out))
            self._wake.set()
        else:
            conn.answer(out, (0, 0, 0), None)

    async def _committer(self) -> None:
        """One outbox commit for what every connection has waiting: the terminals' positions of the
        last ``commit_window_ms`` (and whatever came in while the previous commit ran) go in one
        ``ingest.submit``: one transaction, one fsync, one pass of the tracker, however many
        terminals. Then each connection gets its answers, in one write."""
        window = self.cfg.commit_window_ms / 1000.0
        while True:
            await self._wake.wait()
            if window > 0:
                await asyncio.sleep(window)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                self._committing = True
                try:
                    await self._commit_batch(batch)
                finally:
                    self._committing = False

    async def _commit_batch(self, batch: list[tuple[_Conn, Outcome]]) -> None:
        points = [p for _, out in batch for p in out.points]
        topics = [c.session.terminal.phone if c.session.terminal is not None else "" for c, _ in batch]
        dead = [(raw, reason, topics[k]) for k, (_, out) in enumerate(batch) for raw, reason in out.dead]
        verdict = self.tracker.check(points) if points else None
        dups = [0] * len(batch)
        # (positions stored, of them backlog) per connection: all of its points unless some were refused
        per = [[len(out.points), out.backlog] for _, out in batch]
        accepted = verdict.accepted if verdict is not None else ()
        if verdict is not None and verdict.rejected:
            owner = {id(p): k for k, (_, out) in enumerate(batch) for p in out.points}
            for p, err in verdict.rejected:
                k = owner[id(p)]
                per[k][0] -= 1
                if "backlog" in p.fields:
                    per[k][1] -= 1
                if err.reason == "duplicate":
                    dups[k] += 1
                else:
                    self._error(err.reason)
                    dead.append((p.to_line().encode("utf-8"), f"{err.reason}: {err.detail}", topics[k]))
        self.commits += 1
        self.committed_items += len(batch)
        try:
            if dead:
                await asyncio.gather(*(self.ingest.reject(SOURCE, raw, reason, topic) for raw, reason, topic in dead))
            if accepted:
                await self.ingest.submit(list(accepted))
            if verdict is not None:
                self.tracker.commit(verdict)
        except EdgeError as e:  # every waiting connection learns it; none acknowledges
            for conn, out in batch:
                self._answer(conn, out, None, e)
            return
        except Exception:  # a bug of ours costs these connections (nothing acknowledged), never the server
            log.exception("jt808 commit failed")
            for conn, _ in batch:
                conn.close("internal_error", abort=True)
            return
        if accepted:
            self.ingest.count("jt808_positions_stored", len(accepted))
        if any(dups):
            self.ingest.count("jt808_duplicates", sum(dups))
        for k, (conn, out) in enumerate(batch):
            self._answer(conn, out, (per[k][0], per[k][1], dups[k]), None)

    @staticmethod
    def _answer(conn: _Conn, out: Outcome, result, error) -> None:
        try:
            conn.answer(out, result, error)
        except Exception:  # a bug of ours costs this connection, never the server
            log.exception("jt808 connection failed remote=%s", conn.addr)
            conn.close("internal_error", abort=True)

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
