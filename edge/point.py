"""The one record type that crosses every boundary, and InfluxDB line protocol.

``Point(measurement, tags, fields, time_ns)`` maps one-to-one onto a line-protocol line:

    measurement,tag1=v1,tag2=v2 field1=1.5,field2=3i,field3="text" 1700000000000000000

Escaping follows the InfluxDB line-protocol reference: in the measurement, commas and spaces;
in tag keys, tag values and field keys, commas, equals signs and spaces; in string field values,
double quotes and backslashes. Identifiers may not contain backslashes, tabs or line breaks, nor may a measurement start with ``#`` (InfluxDB's
own parser cannot round-trip them) and are refused with a ``LineProtocolError``. Floats are
written with ``repr`` (shortest text that reads back to the same double), integers with ``i``,
unsigned integers (``UInt``) with ``u``; NaN and infinities cannot be written and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

from edge.errors import LineProtocolError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1


class UInt(int):
    """An integer to be written as an unsigned line-protocol field (``42u``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"UInt({int(self)})"


FieldValue = Union[float, int, bool, str]


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    time_ns: int = 0

    def series_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """Identity of the series (measurement and sorted tag set): with ``time_ns``, of the point."""
        return self.measurement, tuple(sorted(self.tags.items()))

    def to_line(self) -> str:
        return to_line(self)


# --- serializer --------------------------------------------------------------------------------

_MEAS = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STR = str.maketrans({"\\": "\\\\", '"': '\\"'})
_BAD_IDENT = ("\\", "\n", "\r", "\t")


def _check_ident(kind: str, s: str) -> None:
    if not s:
        raise LineProtocolError("empty identifier", f"{kind} is empty")
    for ch in _BAD_IDENT:
        if ch in s:
            raise LineProtocolError("bad identifier", f"{kind} {s!r} contains {ch!r}")


def format_field_value(name: str, v: FieldValue) -> str:
    # bool before int: bool is an int subclass
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, UInt):
        if not 0 <= v <= U64_MAX:
            raise LineProtocolError("unsigned out of range", f"field {name!r} = {int(v)}")
        return f"{int(v)}u"
    if isinstance(v, int):
        if not I64_MIN <= v <= I64_MAX:
            raise LineProtocolError("integer out of range", f"field {name!r} = {v}")
        return f"{v}i"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise LineProtocolError("non-finite float", f"field {name!r} = {v}")
        return repr(v)
    if isinstance(v, str):
        return f'"{v.translate(_STR)}"'
    raise LineProtocolError("unsupported field type", f"field {name!r} is {type(v).__name__}")


def to_line(p: Point) -> str:
    _check_ident("measurement", p.measurement)
    if p.measurement[0] == "#":
        raise LineProtocolError("bad identifier", "measurement may not start with '#' (a comment line)")
    parts = [p.measurement.translate(_MEAS)]
    for k in sorted(p.tags):
        v = p.tags[k]
        if v == "":  # line protocol has no empty tag values; an empty tag is an absent tag
            continue
        _check_ident("tag key", k)
        _check_ident(f"tag {k!r} value", v)
        parts.append(f",{k.translate(_KEY)}={v.translate(_KEY)}")
    if not p.fields:
        raise LineProtocolError("no fields", f"point {p.measurement!r} has no fields")
    fs = []
    for k, v in p.fields.items():
        _check_ident("field key", k)
        fs.append(f"{k.translate(_KEY)}={format_field_value(k, v)}")
    if not isinstance(p.time_ns, int) or not I64_MIN <= p.time_ns <= I64_MAX:
        raise LineProtocolError("bad timestamp", f"{p.time_ns!r}")
    return f"{''.join(parts)} {','.join(fs)} {p.time_ns}"


def to_lines(points: Iterable[Point]) -> str:
    return "\n".join(to_line(p) for p in points)


# --- parser ------------------------------------------------------------------------------------


def _scan_ident(s: str, i: int, stops: str) -> tuple[str, int]:
    """Read an escaped identifier from ``i`` up to an unescaped char in ``stops`` (or the end)."""
    out = []
    n = len(s)
    start = i
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in ", =":
            out.append(s[start:i])
            out.append(s[i + 1])
            i += 2
            start = i
            continue
        if c in stops:
            break
        i += 1
    out.append(s[start:i])
    return "".join(out), i


def parse_time(raw: str) -> int | None:
    """A line's timestamp: a 64-bit integer of nanoseconds, or None when ``raw`` is not one."""
    try:
        t = int(raw)
    except ValueError:
        return None
    return t if I64_MIN <= t <= I64_MAX else None


def parse_field_value(raw: str, name: str) -> FieldValue:
    """One field value of line protocol (``1.5``, ``3i``, ``7u``, ``t``); raises ``LineProtocolError``."""
    if not raw:
        raise LineProtocolError("empty field value", f"field {name!r}")
    last = raw[-1]
    try:
        if last == "i":
            v = int(raw[:-1])
            if not I64_MIN <= v <= I64_MAX:
                raise LineProtocolError("integer out of range", raw)
            return v
        if last == "u":
            v = int(raw[:-1])
            if not 0 <= v <= U64_MAX:
                raise LineProtocolError("unsigned out of range", raw)
            return UInt(v)
    except ValueError as e:
        raise LineProtocolError("bad number", f"field {name!r} = {raw!r}") from e
    if raw in ("t", "T", "true", "True", "TRUE"):
        return True
    if raw in ("f", "F", "false", "False", "FALSE"):
        return False
    try:
        v = float(raw)
    except ValueError as e:
        raise LineProtocolError("bad field value", f"field {name!r} = {raw!r}") from e
    if not math.isfinite(v) or raw.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        raise LineProtocolError("non-finite float", f"field {name!r} = {raw!r}")
    return v


def _parse_plain(line: str, default_time_ns: int | None) -> Point | None:
    """``parse_line`` for a line without escapes whose strings hold no space, comma or equals sign (what
    our encoders write for nearly every point): split at the separators instead of scanning each
    character. None when the line is not such a line (``parse_line`` reads it then), so the result and
    the errors stay exactly those of the scanner."""
    if "\\" in line:
        return None
    head, sep, rest = line.partition(" ")
    if not sep or not head:
        return None
    if '"' in rest:
        parts = rest.split('"')
        if len(parts) % 2 == 0 or any(c in q for q in parts[1::2] for c in " ,="):
            return None
    fields_part, sep, raw_t = rest.partition(" ")
    if sep and (not raw_t or " " in raw_t):
        return None
    keys = head.split(",")
    meas = keys[0]
    if not meas:
        return None
    tags: dict[str, str] = {}
    for kv in keys[1:]:
        k, eq, v = kv.partition("=")
        if not eq or not k or not v:
            return None
        tags[k] = v
    fields: dict[str, FieldValue] = {}
    for kv in fields_part.split(","):
        k, eq, v = kv.partition("=")
        if not eq or not k or "=" in k:
            return None
        if v[:1] == '"':
            if len(v) < 2 or v[-1] != '"' or '"' in v[1:-1]:
                return None
            fields[k] = v[1:-1]
        else:
            if '"' in v:
                return None
            fields[k] = parse_field_value(v, k)
    if not sep:
        if default_time_ns is None:
            return None
        t = default_time_ns
    else:
        t = parse_time(raw_t)
        if t is None:
            return None
    return Point(meas, tags, fields, t)


def parse_line(line: str, default_time_ns: int | None = None) -> Point:
    """Parse one line of line protocol into a Point. Raises ``LineProtocolError``."""
    p = _parse_plain(line, default_time_ns)
    return p if p is not None else _parse_scan(line, default_time_ns)


def _parse_scan(line: str, default_time_ns: int | None = None) -> Point:
    """The scanner: any line, character by character, escapes and quoted strings included."""
    n = len(line)
    meas, i = _scan_ident(line, 0, ", ")
    if not meas:
        raise LineProtocolError("missing measurement", line[:80])
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        k, i = _scan_ident(line, i + 1, "=, ")
        if i >= n or line[i] != "=":
            raise LineProtocolError("bad tag", line[:80])
        v, i = _scan_ident(line, i + 1, ", ")
        if not k or not v:
            raise LineProtocolError("empty tag key or value", line[:80])
        tags[k] = v
    if i >= n or line[i] != " ":
        raise LineProtocolError("missing fields", line[:80])
    i += 1
    fields: dict[str, FieldValue] = {}
    while True:
        k, i = _scan_ident(line, i, "=, ")
        if i >= n or line[i] != "=" or not k:
            raise LineProtocolError("bad field", line[:80])
        i += 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            start = i
            while True:
                if i >= n:
                    raise LineProtocolError("unterminated string", line[:80])
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    buf.append(line[start:i])
                    buf.append(line[i + 1])
                    i += 2
                    start = i
                    continue
                if c == '"':
                    buf.append(line[start:i])
                    i += 1
                    break
                i += 1
            fields[k] = "".join(buf)
        else:
            j = i
            while j < n and line[j] not in ", ":
                j += 1
            fields[k] = parse_field_value(line[i:j], k)
            i = j
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    if i >= n:
        if default_time_ns is None:
            raise LineProtocolError("missing timestamp", line[:80])
        t = default_time_ns
    else:
        if line[i] != " ":
            raise LineProtocolError("bad field separator", line[:80])
        raw_t = line[i + 1:]
        t = parse_time(raw_t)
        if t is None:
            raise LineProtocolError("bad timestamp", raw_t[:40])
    return Point(meas, tags, fields, t)


def parse_lines(text: str, default_time_ns: int | None = None) -> list[Point]:
    """Parse many lines. Blank lines and ``#`` comments are skipped.

    Line breaks inside quoted string fields are honoured (a line ends at a newline outside quotes).
    """
    out = []
    for line in _split_lines(text):
        s = line.strip(" \t\r")
        if not s or s.startswith("#"):
            continue
        out.append(parse_line(s, default_time_ns))
    return out


def _split_lines(text: str) -> Iterable[str]:
    if '"' not in text:
        yield from text.split("\n")
        return
    start = 0
    in_fields = False  # quotes open strings only after the key section (first unescaped space)
    in_str = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"' and in_fields and (in_str or text[i - 1] == "="):
            in_str = not in_str  # a quote opens a string only as a field value, right after '='

        elif c == " " and not in_fields:
            in_fields = True
        elif c == "\n" and not in_str:
            yield text[start:i]
            start = i + 1
            in_fields = False
        i += 1
    yield text[start:]
