"""Register decoding, pure: 16-bit words from the wire -> engineering values.

Word/byte orders are named by where the bytes of a big-endian value ``A B C D`` (A most
significant) land on the wire: ``ABCD`` high word first (Modbus' usual), ``CDAB`` low word first
(Carlo Gavazzi), ``BADC`` bytes swapped in each word, ``DCBA`` fully little-endian. For 64-bit
values the same rule holds word by word (``CDAB`` = least significant word first).

engineering value = raw × scale + offset; primary value = engineering × ratio (PT, CT or PT×CT).
The plausible range of a profile applies to the engineering value, before the ratio (what the
meter itself measures); a value outside it, or NaN/inf, is reported as implausible, not stored.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Sequence

from collector.modbus.profiles import TYPES, WORD_ORDERS, Register
from edge.errors import PayloadError


def words_to_bytes(words: Sequence[int], order: str) -> bytes:
    """Reassemble the big-endian bytes of one value from its wire words."""
    if order not in WORD_ORDERS:
        raise PayloadError("unknown word order", order)
    ws = list(words)
    if order in ("CDAB", "DCBA"):
        ws.reverse()
    try:
        b = struct.pack(f">{len(ws)}H", *ws)
    except struct.error as e:
        raise PayloadError("bad register word", str(e)) from None
    if order in ("BADC", "DCBA"):
        b = b"".join(b[i + 1:i + 2] + b[i:i + 1] for i in range(0, len(b), 2))
    return b


def decode_raw(words: Sequence[int], type_: str, order: str = "ABCD") -> int | float:
    """The raw number (before scale) of one value. Raises ``PayloadError`` on a wrong word count."""
    if type_ not in TYPES:
        raise PayloadError("unknown type", type_)
    n, code = TYPES[type_]
    if len(words) != n:
        raise PayloadError("wrong register count", f"{type_} needs {n} registers, got {len(words)}")
    return struct.unpack(">" + code, words_to_bytes(words, order))[0]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One register compiled for decoding inside a request's response."""

    name: str
    start: int          # index of its first word within the response
    count: int
    code: str           # struct code of the big-endian value
    order: str
    scale: float
    offset: float
    factor: float       # PT, CT, PT×CT or 1
    lo: float | None
    hi: float | None


def compile_field(reg: Register, start: int, pt: float = 1.0, ct: float = 1.0) -> FieldSpec:
    factor = {"none": 1.0, "pt": pt, "ct": ct, "pt*ct": pt * ct}[reg.ratio]
    n, code = TYPES[reg.type]
    return FieldSpec(reg.name, start, n, code, reg.word_order, reg.scale, reg.offset, factor, reg.min, reg.max)


@dataclass(frozen=True, slots=True)
class Decoded:
    values: dict[str, float]
    implausible: tuple[str, ...] = ()


_STRUCTS: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    st = _STRUCTS.get(fmt)
    if st is None:
        st = _STRUCTS[fmt] = struct.Struct(fmt)
    return st


class BlockDecoder:
    """Decoder of one planned read, compiled once: every high-word-first field comes out of a single
    ``struct`` call over the response (with pad bytes for holes); other word orders field by field."""

    def __init__(self, fields: Sequence[FieldSpec]) -> None:
        self.fields = tuple(fields)
        self.need = max((f.start + f.count for f in self.fields), default=0)
        fast = sorted((f for f in self.fields if f.order == "ABCD"), key=lambda f: f.start)
        fmt, pos = [">"], 0
        for f in fast:
            if f.start > pos:
                fmt.append(f"{2 * (f.start - pos)}x")
            fmt.append(f.code)
            pos = f.start + f.count
        self._fast_fmt = "".join(fmt)
        self._fast_struct = struct.Struct(self._fast_fmt)
        self._slow = [f for f in self.fields if f.order != "ABCD"]
        # plain tuples for the hot loop: (name, scale, offset, factor, lo, hi), fast fields first
        self._params = [(f.name, f.scale, f.offset, f.factor,
                         -math.inf if f.lo is None else f.lo, math.inf if f.hi is None else f.hi)
                        for f in fast + self._slow]
        self._order = {f.name: i for i, f in enumerate(self.fields)}
        self._words_struct: dict[int, struct.Struct] = {}

    def decode(self, words: Sequence[int]) -> Decoded:
        nwords = len(words)
        if nwords < self.need:
            short = next(f for f in self.fields if f.start + f.count > nwords)
            raise PayloadError("short response", f"{short.name} needs words {short.start}..{short.start + short.count - 1}, got {nwords}")
        ws = self._words_struct.get(nwords)
        if ws is None:
            ws = self._words_struct[nwords] = struct.Struct(f">{nwords}H")
        try:
            buf = ws.pack(*words)
        except struct.error as e:
            raise PayloadError("bad register word", str(e)) from None
        raws = list(self._fast_struct.unpack_from(buf, 0))
        for f in self._slow:
            raws.append(_struct(">" + f.code).unpack(words_to_bytes(words[f.start:f.start + f.count], f.order))[0])
        values: dict[str, float] = {}
        bad: list[str] = []
        for (name, scale, offset, factor, lo, hi), raw in zip(self._params, raws):
            eng = raw * scale + offset
            if lo <= eng <= hi and eng != math.inf and eng != -math.inf:  # NaN fails every comparison
                values[name] = eng * factor  # ×1.0 is exact: the same number as a float
            else:
                bad.append(name)
        if len(bad) > 1:
            bad.sort(key=self._order.__getitem__)
        return Decoded(values, tuple(bad))


class PollDecoder:
    """All the planned reads of one poll decoded in one go, for the usual case that every read
    answered in full: one ``struct`` pack and unpack over the concatenated responses, then one loop
    that scales and range-checks each field. It gives the values and implausible names of the reads'
    block decoders one after the other, in the same order, by the same arithmetic. ``usable`` is
    False (use the block decoders) when a field is not high-word-first or a field name repeats;
    ``decode(words)`` takes the responses in plan order, returns ``(values, implausible names)`` and
    raises ``PayloadError`` when a response has not exactly the planned word count or a word does
    not fit 16 bits (then decode read by read)."""

    def __init__(self, blocks: Sequence[tuple[int, BlockDecoder]]) -> None:
        self.counts = [count for count, _ in blocks]
        names = [f.name for _, d in blocks for f in d.fields]
        self.usable = (all(not d._slow and d.need <= count for count, d in blocks)
                       and len(set(names)) == len(names))
        fmt = [">"]
        for count, d in blocks:
            body = d._fast_fmt[1:]
            fmt.append(body)
            pad = 2 * count - struct.calcsize(">" + body)
            if pad > 0:
                fmt.append(f"{pad}x")
            elif pad < 0:  # overlapping fields: the layout is not one struct
                self.usable = False
        self.total = sum(self.counts)
        self._pack = struct.Struct(f">{self.total}H").pack
        self._unpack = struct.Struct("".join(fmt)).unpack if self.usable else None
        self._params = [prm for _, d in blocks for prm in d._params]
        self._order = {name: i for i, name in enumerate(names)}.__getitem__

    def decode(self, words: Sequence[Sequence[int]]) -> tuple[dict[str, float], list[str]]:
        if len(words) != len(self.counts):
            raise PayloadError("wrong response count", f"{len(words)} responses, planned {len(self.counts)}")
        flat: list[int] = []
        for w, n in zip(words, self.counts):
            if len(w) != n:
                raise PayloadError("short response", "a response has not the planned word count")
            flat += w
        try:
            raws = self._unpack(self._pack(*flat))
        except struct.error as e:
            raise PayloadError("bad register word", str(e)) from None
        values: dict[str, float] = {}
        bad: list[str] = []
        for (name, scale, offset, factor, lo, hi), raw in zip(self._params, raws):
            eng = raw * scale + offset
            if lo <= eng <= hi and eng != _INF and eng != _NINF:  # NaN fails every comparison
                values[name] = eng * factor
            else:
                bad.append(name)
        if len(bad) > 1:
            bad.sort(key=self._order)
        return values, bad


_INF, _NINF = math.inf, -math.inf


def decode_block(fields: Sequence[FieldSpec], words: Sequence[int]) -> Decoded:
    """Decode every field of one response. A field is implausible when NaN/inf or outside its range."""
    return BlockDecoder(fields).decode(words)
