"""A terminal's conversation, as a state machine: frames in, an ``Outcome`` out (no I/O, no clock).

States: ``new`` (connected: only registration 0x0100 and authentication 0x0102 are served; any
other message is answered 0x8001 "failure" and not stored, so the terminal keeps it) and
``authenticated`` (after a 0x0102 with the right code). A logout (0x0003) forgets the code and
ends the conversation.

What the shell does with an ``Outcome``: commit ``points`` to the outbox, ``dead`` to the
dead-letter table and ``save``/``drop`` to the registry; if all of that is durable, send
``replies`` and then ``acks``; if not, send only ``replies``: the positions and codes in
``acks`` were not acknowledged and the terminal sends them again. ``replies`` never depend on
anything durable (a heartbeat's answer, a refusal).

Answers (0x8001 results): 0 success, 1 failure (not authenticated, wrong auth code, unknown
terminal, another terminal's phone on this connection), 2 message error (a wrong body length,
a location that cannot be read, such as a bad BCD time: sending it again would not help, so it is
kept in the dead-letter table and answered), 3 unsupported (an encrypted body, a message we do
not serve). A frame whose check code is wrong gets no answer: its header cannot be trusted
(the serial to answer may be the corrupted byte), and without an answer the terminal sends the
message again. Sub-packaged messages are answered, package by package, once the whole message
has been handled (JT/T 808 7.12 allows one answer per package).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from collector.gps.codecs.positions import check_range
from collector.gps.validate import check_point
from collector.jt808 import protocol as P
from collector.jt808.registry import Registered, Registry, derived_code, new_code
from edge.config import AuthCodes, Jt808, Registration, Vehicle
from edge.errors import PayloadError
from edge.point import Point

NS = 1_000_000_000
UNKNOWN_ORG = "unknown"
MEASUREMENT = "position"
NEW, AUTHENTICATED, CLOSED = "new", "authenticated", "closed"


@dataclass(slots=True)
class Terminal:
    """What the dispatcher sees of one terminal; lives across its connections."""

    phone: str
    vehicle: str
    org: str
    plate: str = ""
    configured: bool = True
    online: bool = False
    remote: str = ""
    protocol: str | None = None  # "2013" (2011/2013 header) or "2019"
    protocol_version: int | None = None  # the 2019 header's version byte
    connected_ns: int | None = None
    last_seen_ns: int | None = None  # any sound frame
    last_heartbeat_ns: int | None = None
    last_report_ns: int | None = None  # a location message arrived
    last_fix_ns: int | None = None  # the newest fix time stored
    last_auth_ns: int | None = None
    positions: int = 0  # stored and acknowledged since start
    backlog_positions: int = 0
    imei: str = ""
    software_version: str = ""
    model: str = ""
    out_serial: int = 0
    silent_alerted: bool = False

    def next_serial(self) -> int:
        self.out_serial = (self.out_serial + 1) & 0xFFFF
        return self.out_serial


@dataclass(frozen=True)
class Policy:
    registration: Registration = Registration.known
    auth_codes: AuthCodes = AuthCodes.issued
    max_age_report_s: float = 30 * 86400.0
    max_age_batch_s: float = 60 * 86400.0
    live_lag_s: float = 300.0
    max_future_s: float = 300.0
    max_speed_kmh: float = 200.0
    max_auth_failures: int = 3
    max_bad_frames: int = 32  # undecodable segments in a row before the connection is closed
    reassembly_messages: int = 4
    reassembly_bytes: int = 64 * 1024
    reassembly_timeout_s: float = 60.0
    auth_secret: str | None = None  # codes derived from it (edges behind a balancer agree without sharing a file)

    @classmethod
    def from_config(cls, c: Jt808) -> "Policy":
        return cls(c.registration, c.auth_codes, c.max_age_report_days * 86400.0, c.max_age_batch_days * 86400.0,
                   c.live_lag_s, c.max_future_s, c.max_speed_kmh, auth_secret=c.auth_secret)


class Fleet:
    """Terminals by phone: the configured ones (``vehicles[].terminal``) and, with registration
    ``open``, the others that registered or authenticated."""

    def __init__(self, vehicles: Iterable[Vehicle] = (), registration: Registration = Registration.known) -> None:
        self.open = registration is Registration.open
        self.terminals: dict[str, Terminal] = {}
        for v in vehicles:
            if v.terminal:
                phone = P.normal_phone(v.terminal)
                self.terminals[phone] = Terminal(phone, v.id, v.org, v.plate)

    def lookup(self, phone: str) -> Terminal | None:
        t = self.terminals.get(phone)
        if t is None and self.open:
            t = self.terminals[phone] = Terminal(phone, phone, UNKNOWN_ORG, configured=False)
        return t


@dataclass(slots=True)
class Outcome:
    """What one read's frames ask of the shell (see the module docstring)."""

    replies: list[bytes] = field(default_factory=list)
    acks: list[bytes] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)  # (the frame as received, reason)
    save: list[Registered] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # reasons to count
    close: str | None = None
    authenticated: bool = False
    frames: int = 0
    sound: int = 0  # frames whose check code and header were right
    backlog: int = 0  # of ``points``, how many are marked backlog
    newest_fix_ns: int = 0

    @property
    def durable_work(self) -> bool:
        return bool(self.points or self.dead or self.save or self.drop)


class Session:
    def __init__(self, fleet: Fleet, registry: Registry, policy: Policy = Policy(), remote: str = "",
                 connected_ns: int = 0, make_code: Callable[[], str] = new_code) -> None:
        self.fleet, self.registry, self.policy = fleet, registry, policy
        self.remote, self.connected_ns = remote, connected_ns
        self.make_code = make_code
        self.state = NEW
        self.terminal: Terminal | None = None
        self.auth_failures = 0
        self.bad_run = 0
        self._serial = 0  # for answers before we know the terminal
        self.reassembler = P.Reassembler(max_messages=policy.reassembly_messages, max_bytes=policy.reassembly_bytes,
                                         timeout_s=policy.reassembly_timeout_s)

    # -- the entry point ------------------------------------------------------------------------
    def handle(self, seg: bytes, now_ns: int, out: Outcome) -> None:
        """One segment between 0x7e flags (still escaped), as ``protocol.FrameSplitter`` cuts them."""
        out.frames += 1
        try:
            frame = P.parse_frame(P.unescape(seg))
        except P.FrameError as e:  # the header is sound (check code right): tell the terminal
            self.bad_run = 0
            out.sound += 1
            out.errors.append(e.reason)
            self._answer(out, e.header, P.MESSAGE_ERROR, None, now_ns, deferred=False)
            return
        except PayloadError as e:  # check code, escapes, BCD phone: nobody to answer
            out.errors.append(e.reason)
            self.bad_run += 1
            if self.bad_run >= self.policy.max_bad_frames:
                out.close = "garbage"
            return
        self.bad_run = 0
        out.sound += 1
        h, body = frame.header, frame.body
        t = self.terminal
        if t is not None and h.phone != t.phone:
            out.errors.append("phone_mismatch")
            self._answer(out, h, P.FAILURE, None, now_ns, deferred=False)
            return
        if t is not None:
            t.last_seen_ns = now_ns
            t.silent_alerted = False
        if h.encryption:
            out.errors.append("encrypted")
            self._answer(out, h, P.UNSUPPORTED, None, now_ns, deferred=False)
            return
        if h.msg_id == P.LOCATION and t is not None and not h.subpackage and self.state == AUTHENTICATED:
            # the frame of every terminal every few seconds: straight to it, past reassembly and dispatch
            t.last_report_ns = now_ns
            self._location(t, h, body, None, b"\x7e" + seg + b"\x7e", now_ns, out)
            return
        serials: Sequence[int] | None = None
        if h.subpackage:
            try:
                whole = self.reassembler.add(h, body, now_ns / NS)
            except PayloadError as e:
                out.errors.append(e.reason)  # not answered: the terminal sends the packages again
                return
            if whole is None:
                return
            body, serials = whole
        self._dispatch(h, body, serials, b"\x7e" + seg + b"\x7e", now_ns, out)

    def expire(self, now_ns: int) -> int:
        """Drop sub-packaged messages that did not complete in time; returns how many."""
        return self.reassembler.expire(now_ns / NS)

    # -- messages -------------------------------------------------------------------------------
    def _dispatch(self, h: P.Header, body: bytes, serials: Sequence[int] | None, raw: bytes, now_ns: int,
                  out: Outcome) -> None:
        m = h.msg_id
        if m == P.REGISTER:
            return self._register(h, body, serials, now_ns, out)
        if m == P.AUTHENTICATE:
            return self._authenticate(h, body, serials, now_ns, out)
        t = self.terminal
        if self.state != AUTHENTICATED or t is None:
            out.errors.append("not_authenticated")
            self._answer(out, h, P.FAILURE, serials, now_ns, deferred=False)
            return
        if m == P.LOCATION:
            t.last_report_ns = now_ns
            self._location(t, h, body, serials, raw, now_ns, out)
        elif m == P.LOCATION_BATCH:
            t.last_report_ns = now_ns
            self._batch(t, h, body, serials, raw, now_ns, out)
        elif m == P.HEARTBEAT:
            t.last_heartbeat_ns = now_ns
            self._answer(out, h, P.OK, serials, now_ns, deferred=False)
        elif m == P.LOGOUT:
            out.drop.append(t.phone)
            self._answer(out, h, P.OK, serials, now_ns, deferred=True)
            self.state = NEW
            out.close = "logout"
        elif m == P.TERMINAL_REPLY:
            pass  # the terminal answering something of ours: nothing to answer
        else:
            out.errors.append("unsupported")
            self._answer(out, h, P.UNSUPPORTED, serials, now_ns, deferred=False)

    def _register(self, h: P.Header, body: bytes, serials, now_ns: int, out: Outcome) -> None:
        t = self.fleet.lookup(h.phone)
        if t is None:
            out.errors.append("unknown_terminal")
            out.replies.append(self._frame(h, P.REGISTER_REPLY, P.register_reply(h.serial, P.REG_NO_TERMINAL), now_ns))
            out.close = "unknown_terminal"
            return
        try:
            reg = P.parse_registration(body, h.version)
        except PayloadError as e:
            out.errors.append(e.reason)
            self._answer(out, h, P.MESSAGE_ERROR, serials, now_ns, deferred=False)
            return
        code = self.registry.code_of(t.phone)  # registering again: the same code
        if code is None:
            secret = self.policy.auth_secret
            code = derived_code(secret, t.phone) if secret else self.make_code()
        out.save.append(Registered(t.phone, code, now_ns, reg.plate, reg.model, reg.manufacturer, reg.terminal_id))
        t.model = reg.model
        self._note_version(t, h)
        for s in serials or (h.serial,):
            out.acks.append(self._frame(h, P.REGISTER_REPLY, P.register_reply(s, P.REG_OK, code), now_ns))

    def _authenticate(self, h: P.Header, body: bytes, serials, now_ns: int, out: Outcome) -> None:
        t = self.fleet.lookup(h.phone)
        if t is None:
            out.errors.append("unknown_terminal")
            self._answer(out, h, P.FAILURE, serials, now_ns, deferred=False)
            out.close = "unknown_terminal"
            return
        try:
            a = P.parse_authentication(body, h.version)
        except PayloadError as e:
            out.errors.append(e.reason)
            self._answer(out, h, P.MESSAGE_ERROR, serials, now_ns, deferred=False)
            return
        expected = self.registry.code_of(t.phone)
        secret = self.policy.auth_secret
        deferred = False
        if expected is None and (self.policy.auth_codes is AuthCodes.adopt and a.code
                                 or secret and a.code == derived_code(secret, t.phone)):
            out.save.append(Registered(t.phone, a.code, now_ns))  # adopted, or issued by another edge
            deferred = True  # answered once the code is kept
        elif expected is None or a.code != expected:
            out.errors.append("not_registered" if expected is None else "wrong_auth_code")
            self._answer(out, h, P.FAILURE, serials, now_ns, deferred=False)
            self.auth_failures += 1
            if self.auth_failures >= self.policy.max_auth_failures:
                out.close = "auth_failures"
            return
        self.state = AUTHENTICATED
        self.terminal = t
        self.auth_failures = 0
        t.last_auth_ns = t.last_seen_ns = now_ns
        t.silent_alerted = False
        t.remote = self.remote
        t.connected_ns = self.connected_ns
        if a.imei:
            t.imei = a.imei
        if a.software_version:
            t.software_version = a.software_version
        self._note_version(t, h)
        out.authenticated = True
        self._answer(out, h, P.OK, serials, now_ns, deferred=deferred)

    def _location(self, t: Terminal, h: P.Header, body: bytes, serials, raw: bytes, now_ns: int, out: Outcome) -> None:
        try:
            loc = P.parse_location(body)
        except PayloadError as e:
            out.errors.append(e.reason)
            out.dead.append((raw, e.reason))
            self._answer(out, h, P.MESSAGE_ERROR, serials, now_ns, deferred=True)
            return
        reason = self._position(t, loc, now_ns, self.policy.max_age_report_s, False, out)
        if reason:
            out.dead.append((raw, reason))
        self._answer(out, h, P.OK, serials, now_ns, deferred=True)

    def _batch(self, t: Terminal, h: P.Header, body: bytes, serials, raw: bytes, now_ns: int, out: Outcome) -> None:
        try:
            kind, items = P.parse_batch(body)
        except PayloadError as e:
            out.errors.append(e.reason)
            out.dead.append((raw, e.reason))
            self._answer(out, h, P.MESSAGE_ERROR, serials, now_ns, deferred=True)
            return
        backlog = kind == P.BATCH_BACKLOG
        bad: set[str] = set()
        for item in items:
            try:
                loc = P.parse_location(item)
            except PayloadError as e:
                out.errors.append(e.reason)
                bad.add(e.reason)
                continue
            reason = self._position(t, loc, now_ns, self.policy.max_age_batch_s, backlog, out)
            if reason:
                bad.add(reason)
        for reason in sorted(bad):  # the frame once per reason, not once per item
            out.dead.append((raw, reason))
        self._answer(out, h, P.OK, serials, now_ns, deferred=True)

    def _position(self, t: Terminal, loc: P.Location, now_ns: int, max_age_s: float, backlog: bool,
                  out: Outcome) -> str:
        """Add the fix to ``out.points``; returns a dead-letter reason when it is refused ('' if not)."""
        try:
            fields = P.location_fields(loc, t.phone)
        except PayloadError as e:
            out.errors.append(e.reason)
            return "" if e.reason == "no_fix" else e.reason  # a report without a fix is not a position
        if loc.bad_extras:
            out.errors.append("jt808_bad_extra")
        if backlog or now_ns - loc.time_ns > self.policy.live_lag_s * NS:
            fields["backlog"] = True
        fields["lat"], fields["lon"] = loc.lat, loc.lon
        p = Point(MEASUREMENT, {"vehicle": t.vehicle, "org": t.org}, fields, loc.time_ns)
        try:
            check_range(loc.lat, loc.lon)
            check_point(p, now_ns, max_speed_kmh=self.policy.max_speed_kmh, max_future_s=self.policy.max_future_s,
                        max_past_s=max_age_s)
        except PayloadError as e:
            out.errors.append(e.reason)
            return e.reason
        out.points.append(p)
        if "backlog" in fields:
            out.backlog += 1
        if loc.time_ns > out.newest_fix_ns:
            out.newest_fix_ns = loc.time_ns
        return ""

    # -- answers --------------------------------------------------------------------------------
    def _note_version(self, t: Terminal, h: P.Header) -> None:
        t.protocol, t.protocol_version = h.protocol, h.version

    def _frame(self, h: P.Header, msg_id: int, body: bytes, now_ns: int) -> bytes:
        t = self.terminal if self.terminal is not None else self.fleet.terminals.get(h.phone)
        if t is not None:
            serial = t.next_serial()
        else:
            self._serial = serial = (self._serial + 1) & 0xFFFF
        return P.encode_frame(msg_id, h.phone_digits, serial, body, version=h.version)

    def _answer(self, out: Outcome, h: P.Header, result: int, serials: Sequence[int] | None, now_ns: int, *,
                deferred: bool) -> None:
        dest = out.acks if deferred else out.replies
        for s in serials or (h.serial,):
            dest.append(self._frame(h, P.PLATFORM_REPLY, P.general_reply(s, h.msg_id, result), now_ns))

