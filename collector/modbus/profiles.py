"""Device profiles: one YAML file per real meter model (``device_profiles/*.yaml``), loaded and checked.

A profile lists the registers a meter model offers: name (a schema field name with its unit),
0-based wire address, function (holding|input), type, word order, scale, offset, unit, which
ratio (PT, CT) multiplies it, and a plausible physical range. Loading refuses overlapping
registers, unknown types and addresses past 65535 with a ``ProfileError`` naming file and register.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from edge.errors import ProfileError

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "device_profiles"

#: registers per type, and the struct code of the big-endian value
TYPES: dict[str, tuple[int, str]] = {
    "int16": (1, "h"), "uint16": (1, "H"),
    "int32": (2, "i"), "uint32": (2, "I"),
    "int64": (4, "q"), "uint64": (4, "Q"),
    "float32": (2, "f"), "float64": (4, "d"),
}
WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
FUNCTIONS = {"holding": 3, "input": 4}
RATIOS = ("none", "pt", "ct", "pt*ct")
PROTOCOL_MAX_REGISTERS = 125
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REG_KEYS = {"name", "address", "vendor_address", "function", "type", "word_order", "scale", "offset",
             "unit", "ratio", "min", "max", "counter", "rollover", "description"}
_TOP_KEYS = {"vendor", "model", "carrier", "numbering", "serial", "limits", "defaults", "registers",
             "description"}


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    address: int
    function: str = "holding"
    type: str = "uint16"
    word_order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    ratio: str = "none"
    min: float | None = None
    max: float | None = None
    counter: bool = False
    vendor_address: str = ""
    description: str = ""
    rollover: float | None = None   # a counter's own maximum: where it restarts at 0 (engineering unit, before the ratio)

    @property
    def count(self) -> int:
        return TYPES[self.type][0]

    @property
    def end(self) -> int:
        """One past the last register this value occupies."""
        return self.address + self.count

    @property
    def function_code(self) -> int:
        return FUNCTIONS[self.function]


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    vendor: str
    model: str
    carrier: str
    registers: tuple[Register, ...]
    max_registers: int = PROTOCOL_MAX_REGISTERS
    max_gap: int = 10
    serial: Mapping[str, Any] = field(default_factory=dict)
    numbering: str = ""
    file: str = ""

    def register(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.registers)


def _err(file: str, msg: str, reg: str | None = None, fld: str | None = None) -> ProfileError:
    return ProfileError(msg, file=file, obj=f"register {reg}" if reg else None, field=fld)


def _num(v: Any, file: str, reg: str, fld: str) -> float:
    if isinstance(v, str):  # YAML 1.1 reads 4.3e7 (no dot) as a string
        try:
            return float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _err(file, f"{fld} must be a number, got {v!r}", reg, fld)
    return float(v)


def parse_profile(data: Any, file: str, profile_id: str) -> Profile:
    """Check a profile document (already parsed YAML) and build a ``Profile``."""
    if not isinstance(data, dict):
        raise _err(file, "a profile is a mapping with vendor, model, carrier and registers")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _err(file, f"unknown keys {sorted(unknown)}", fld=sorted(unknown)[0])
    for k in ("vendor", "model", "carrier", "registers"):
        if k not in data:
            raise _err(file, f"missing {k}", fld=k)
    if data["carrier"] not in ("electricity", "water", "gas", "heat"):
        raise _err(file, f"carrier must be electricity|water|gas|heat, got {data['carrier']!r}", fld="carrier")
    limits = data.get("limits") or {}
    max_regs = limits.get("max_registers", PROTOCOL_MAX_REGISTERS)
    if not isinstance(max_regs, int) or not 4 <= max_regs <= PROTOCOL_MAX_REGISTERS:
        raise _err(file, f"limits.max_registers must be an integer 4..125, got {max_regs!r}", fld="limits.max_registers")
    max_gap = limits.get("max_gap", 10)
    if not isinstance(max_gap, int) or max_gap < 0:
        raise _err(file, f"limits.max_gap must be an integer >= 0, got {max_gap!r}", fld="limits.max_gap")
    defaults = data.get("defaults") or {}
    if not isinstance(data["registers"], list) or not data["registers"]:
        raise _err(file, "registers must be a non-empty list", fld="registers")
    regs: list[Register] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["registers"]):
        if not isinstance(raw, dict):
            raise _err(file, f"registers[{i}] must be a mapping", fld="registers")
        d = {**defaults, **raw}
        name = d.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _err(file, f"registers[{i}] needs a snake_case name, got {name!r}", fld="name")
        bad = set(raw) - _REG_KEYS
        if bad:
            raise _err(file, f"unknown keys {sorted(bad)}", name, sorted(bad)[0])
        if name in seen:
            raise _err(file, "duplicate register name", name, "name")
        seen.add(name)
        addr = d.get("address")
        if isinstance(addr, bool) or not isinstance(addr, int) or addr < 0:
            raise _err(file, f"address must be a 0-based integer, got {addr!r}", name, "address")
        typ = d.get("type", "uint16")
        if typ not in TYPES:
            raise _err(file, f"unknown type {typ!r} (known: {', '.join(TYPES)})", name, "type")
        if addr + TYPES[typ][0] - 1 > 65535:
            raise _err(file, f"address {addr} ({typ}) runs past 65535", name, "address")
        func = d.get("function", "holding")
        if func not in FUNCTIONS:
            raise _err(file, f"function must be holding|input, got {func!r}", name, "function")
        order = d.get("word_order", "ABCD")
        if order not in WORD_ORDERS:
            raise _err(file, f"word_order must be one of {WORD_ORDERS}, got {order!r}", name, "word_order")
        ratio = d.get("ratio", "none")
        if ratio not in RATIOS:
            raise _err(file, f"ratio must be one of {RATIOS}, got {ratio!r}", name, "ratio")
        scale = _num(d.get("scale", 1.0), file, name, "scale")
        if scale == 0:
            raise _err(file, "scale may not be 0", name, "scale")
        lo = None if d.get("min") is None else _num(d["min"], file, name, "min")
        hi = None if d.get("max") is None else _num(d["max"], file, name, "max")
        if lo is not None and hi is not None and lo > hi:
            raise _err(file, f"min {lo} > max {hi}", name, "min")
        regs.append(Register(
            name=name, address=addr, function=func, type=typ, word_order=order, scale=scale,
            offset=_num(d.get("offset", 0.0), file, name, "offset"), unit=str(d.get("unit", "")),
            ratio=ratio, min=lo, max=hi, counter=bool(d.get("counter", False)),
            vendor_address=str(d.get("vendor_address", "")), description=str(d.get("description", "")),
            rollover=None if d.get("rollover") is None else _num(d["rollover"], file, name, "rollover")))
    # overlap: per function, sorted by address, each must end before the next starts
    for func in FUNCTIONS:
        rs = sorted((r for r in regs if r.function == func), key=lambda r: r.address)
        for a, b in zip(rs, rs[1:]):
            if b.address < a.end:
                raise _err(file, f"overlaps register {a.name} ({func} {a.address}..{a.end - 1})", b.name, "address")
    return Profile(id=profile_id, vendor=str(data["vendor"]), model=str(data["model"]),
                   carrier=data["carrier"], registers=tuple(regs), max_registers=max_regs,
                   max_gap=max_gap, serial=dict(data.get("serial") or {}),
                   numbering=str(data.get("numbering", "")), file=file)


def load_profile_file(path: str | Path) -> Profile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ProfileError(f"cannot read: {e.strerror}", file=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProfileError(f"not valid YAML: {e}", file=str(p)) from None
    return parse_profile(data, str(p), p.stem)


def profile_dirs(extra: str | Path | None = None) -> list[Path]:
    dirs = [SHIPPED_DIR]
    if extra:
        dirs.append(Path(extra))
    return dirs


@lru_cache(maxsize=8)
def _load_all(dirs: tuple[str, ...]) -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise ProfileError("profiles directory does not exist", file=str(p))
        for f in sorted(p.glob("*.yaml")):
            prof = load_profile_file(f)
            out[prof.id] = prof  # a site's own directory overrides a shipped profile of the same id
    return out


def load_profiles(extra_dir: str | Path | None = None) -> dict[str, Profile]:
    """All profiles by id (file stem): the shipped ones, then ``extra_dir``'s (which override)."""
    return dict(_load_all(tuple(str(d) for d in profile_dirs(extra_dir))))


def find_profile(profiles: Mapping[str, Profile], ref: str) -> Profile:
    """Look a profile up by id (``chint-dtsu666``) or by model name (``DTSU666``), case-insensitive."""
    if ref in profiles:
        return profiles[ref]
    low = ref.lower()
    for p in profiles.values():
        if p.id.lower() == low or p.model.lower() == low:
            return p
    raise KeyError(ref)


_RATIO = {"none": lambda pt, ct: 1.0, "pt": lambda pt, ct: pt, "ct": lambda pt, ct: ct, "pt*ct": lambda pt, ct: pt * ct}


def counter_defaults(profile: Profile, counter: str, rate: str, pt: float = 1.0, ct: float = 1.0) -> dict[str, float]:
    """What a profile says about a meter's counter register ``counter`` (primary side, after the
    PT/CT ratio), as ``analytics.energy.counters.CounterSpec`` fields:

    - ``rollover``: the register's own ``rollover`` when the profile gives one (a meter's display
      maximum), else the range of an unsigned integer register (2^bits raw × scale); none for a
      float or a signed register (a signed counter past its maximum reads negative and is refused
      as implausible);
    - ``rated_kw``: the fastest the counter can plausibly move per hour, the range of the ``rate``
      register (e.g. ``active_power_total_kw``);
    - ``backstep_tolerance`` / ``backstep_relative``: what a re-read can lose without being a
      fault: one count of an integer register (its scale), or two units in the last place of a
      float32 (2^-22 of the reading: 24 kWh at 1e8 kWh).

    Keys are left out where the profile says nothing."""
    regs = {r.name: r for r in profile.registers}
    out: dict[str, float] = {}
    c = regs.get(counter)
    if c is not None:
        f = _RATIO[c.ratio](pt, ct)
        if c.rollover is not None:
            out["rollover"] = c.rollover * f
        elif c.type in ("uint16", "uint32"):
            out["rollover"] = float(2 ** (16 * TYPES[c.type][0])) * abs(c.scale) * f
        if c.type.startswith(("int", "uint")):
            out["backstep_tolerance"] = max(0.05, abs(c.scale) * f * 1.001)
        elif c.type == "float32":
            out["backstep_relative"] = 2.0 ** -22
    r = regs.get(rate)
    if r is not None and (r.min is not None or r.max is not None):
        rated = max(abs(r.min or 0.0), abs(r.max or 0.0)) * _RATIO[r.ratio](pt, ct)
        if rated > 0:
            out["rated_kw"] = rated
    return out


def describe(profile: Profile) -> list[dict[str, Any]]:
    """Rows for ``edge profiles show``."""
    return [{"name": r.name, "address": r.address, "hex": f"0x{r.address:04X}", "vendor": r.vendor_address,
             "function": r.function, "type": r.type, "order": r.word_order, "scale": r.scale,
             "offset": r.offset, "unit": r.unit, "ratio": r.ratio, "min": r.min, "max": r.max}
            for r in profile.registers]
