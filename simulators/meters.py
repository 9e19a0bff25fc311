"""Modbus meter simulators: serve a device profile over Modbus TCP or RTU-over-TCP.

An independent peer of ``collector.modbus``: it reads the profile YAML with its own code and
encodes registers with its own code (struct + its own CRC-16), so a decoding bug in the
collector is not mirrored here. Values come from ``simulators.load`` (an office load model
shaped by a real building's data); energy/volume counters integrate power/flow over time.

Faults are injected on the server side, per unit id: ``timeout`` (no answer), ``exception``
(a Modbus exception code), ``drop`` (close the connection), ``garble`` (corrupt the answer),
plus the data faults ``stuck`` and the counter events real buildings have: ``counter_replace``
(a new meter, its counter restarting near zero; ``counter_reset`` is the same at 0),
``counter_set`` (e.g. just below the register's maximum, so it rolls over), ``counter_glitch``
(one read decodes garbage), ``counter_backstep`` (one read a little lower: a re-read). A meter's
own display maximum (``counter_max``, e.g. 100,000,000 kWh for 99999999.9) makes its counters
roll over there; integer registers also wrap at their raw range when encoded.
``served(unit)`` returns the exact engineering values being served (after encoding), for
read-back tests.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from edge.clock import SYSTEM_CLOCK, Clock
from simulators.load import OfficeLoad, conditions, phase_weights, smooth_noise

log = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parents[1] / "device_profiles"
_SIZES = {"int16": (1, "h"), "uint16": (1, "H"), "int32": (2, "i"), "uint32": (2, "I"),
          "int64": (4, "q"), "uint64": (4, "Q"), "float32": (2, "f"), "float64": (4, "d")}
_FC = {"holding": 3, "input": 4}


# --- profile reading (own code, not collector's) ------------------------------------------------

@dataclass(frozen=True)
class SimRegister:
    name: str
    fc: int
    address: int
    type: str
    order: str
    scale: float
    offset: float
    ratio: str


def read_profile(ref: str, profiles_dir: str | Path | None = None) -> tuple[dict, list[SimRegister]]:
    p = Path(ref)
    if not p.suffix:
        dirs = ([Path(profiles_dir)] if profiles_dir else []) + [PROFILES_DIR]
        for d in dirs:
            if (d / f"{ref}.yaml").exists():
                p = d / f"{ref}.yaml"
                break
        else:
            raise FileNotFoundError(f"no device profile {ref!r} in {', '.join(map(str, dirs))}")
    doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    dflt = doc.get("defaults") or {}
    regs = []
    for r in doc["registers"]:
        d = {**dflt, **r}
        regs.append(SimRegister(d["name"], _FC[d.get("function", "holding")], int(d["address"]),
                                d.get("type", "uint16"), d.get("word_order", "ABCD"),
                                float(d.get("scale", 1.0)), float(d.get("offset", 0.0)), d.get("ratio", "none")))
    return doc, regs


def encode(value: float, reg: SimRegister) -> tuple[list[int], float]:
    """Words on the wire for an engineering value, and the exact engineering value they carry."""
    n, code = _SIZES[reg.type]
    raw = (value - reg.offset) / reg.scale
    if code in "fd":
        b = struct.pack(">" + code, raw)
        raw_back = struct.unpack(">" + code, b)[0]
    else:
        bits = 16 * n
        iv = int(round(raw))
        if code.islower():  # signed: clamp
            iv = max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, iv))
        else:               # unsigned counters wrap like the real register
            iv %= 1 << bits
        b = struct.pack(">" + code, iv)
        raw_back = iv
    words = [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]
    if reg.order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if reg.order in ("CDAB", "DCBA"):
        words.reverse()
    return words, raw_back * reg.scale + reg.offset


# --- one simulated meter ------------------------------------------------------------------------

class SimMeter:
    """State of one unit: physics from the load model, counters, pinned values, the register image."""

    COUNTER = {"electricity": ("energy", "active_energy_import_kwh"), "water": ("water", "water_volume_m3"),
               "gas": ("gas", "gas_volume_m3"), "heat": ("heat", "heat_energy_kwh")}

    def __init__(self, regs: list[SimRegister], carrier: str, seed: int, load: OfficeLoad | None,
                 ct_ratio: float = 1.0, pt_ratio: float = 1.0, counter_max: float | None = None) -> None:
        self.regs = regs
        self.carrier = carrier
        self.seed = seed
        names = {r.name for r in regs}
        self.three_phase = "voltage_l2_v" in names or "current_l2_a" in names
        peak = (8.0 if not self.three_phase else 20.0 + (seed * 7919 % 40)) if carrier == "electricity" else 1.0
        self.load = load or OfficeLoad(peak_kw=peak, seed=seed)
        self.weights = phase_weights(seed) if self.three_phase else (1.0, 0.0, 0.0)
        self.ct, self.pt = ct_ratio, pt_ratio
        self.counters: dict[str, float] = {}
        self.counter_max = counter_max
        self._init_counters()
        self.pinned: dict[str, float] = {}
        self.transient: dict[str, list] = {}   # register name -> ["value", served value, reads left]
        self.stuck = False
        self.last_t_ns: int | None = None
        self.last_rate: dict[str, float] = {}
        self.values: dict[str, float] = {}
        self.served: dict[str, float] = {}
        self.image: dict[int, dict[int, int]] = {3: {}, 4: {}}
        self.bounds: dict[int, tuple[int, int]] = {}
        for fc in (3, 4):
            rs = [r for r in regs if r.fc == fc]
            if rs:
                self.bounds[fc] = (min(r.address for r in rs), max(r.address + _SIZES[r.type][0] for r in rs))

    def _init_counters(self) -> None:
        base = 1000.0 + (self.seed * 104729 % 50000)
        self.counters = {"energy": base, "energy_export": 0.0, "water": base / 10, "gas": base / 5,
                         "heat": base * 2, "cooling": base / 3, "reactive": base / 4}

    def reset_counters(self) -> None:
        for k in self.counters:
            self.counters[k] = 0.0

    # physics --------------------------------------------------------------------------------
    def _rates(self, t_ns: int) -> dict[str, float]:
        """Instantaneous quantities at t (primary side, SI-ish units named like the schema)."""
        c = conditions(t_ns, self.load.shape)
        ts = t_ns / 1e9
        s = self.seed
        out: dict[str, float] = {}
        if self.carrier == "electricity":
            p = self.load.power_kw(t_ns)
            pf_base = 0.90 + 0.07 * c.occupancy
            out["frequency_hz"] = 50.0 + 0.03 * smooth_noise(s + 11, ts, 30.0)
            vs, ps, pfs = [], [], []
            for i, w in enumerate(self.weights):
                v = 230.0 * (1.0 + 0.01 * (i - 1) * (1 if s % 2 else -1)) + 1.5 * smooth_noise(s + 20 + i, ts, 20.0)
                pi = p * w * (1.0 + 0.02 * smooth_noise(s + 30 + i, ts, 45.0)) if w else 0.0
                pfi = min(0.999, pf_base + 0.01 * smooth_noise(s + 40 + i, ts, 90.0))
                vs.append(v)
                ps.append(pi)
                pfs.append(pfi)
                k = i + 1
                out[f"voltage_l{k}_v"] = v
                out[f"active_power_l{k}_kw"] = pi
                out[f"power_factor_l{k}"] = pfi
                out[f"current_l{k}_a"] = pi * 1000.0 / (v * pfi) if pi else 0.0
            tot = sum(ps)
            out["active_power_total_kw"] = tot
            pf_tot = sum(ps) / sum(pi / pf for pi, pf in zip(ps, pfs)) if tot else pf_base
            out["power_factor_total"] = pf_tot
            out["apparent_power_total_kva"] = tot / pf_tot
            out["reactive_power_total_kvar"] = tot * math.tan(math.acos(pf_tot))
            if self.three_phase:
                for a, b, nm in ((0, 1, "voltage_l1_l2_v"), (1, 2, "voltage_l2_l3_v"), (2, 0, "voltage_l3_l1_v")):
                    out[nm] = math.sqrt(vs[a] ** 2 + vs[b] ** 2 + vs[a] * vs[b])
            out["_energy_rate"] = tot
            out["_reactive_rate"] = out["reactive_power_total_kvar"]
        elif self.carrier == "water":
            flow = 0.05 + 2.5 * c.occupancy * (1 + 0.1 * smooth_noise(s, ts, 30.0))
            out["flow_m3_h"] = flow
            out["velocity_m_s"] = flow / 3600.0 / (math.pi * 0.025 ** 2)
            out["_water_rate"] = flow
        elif self.carrier == "gas":
            heating = max(0.0, 16.0 - c.temp_c) * 0.8 * (0.3 + 0.7 * c.occupancy)
            canteen = 6.0 if c.workday and (10.5 <= ((t_ns / 1e9 + 8 * 3600) % 86400) / 3600 < 12.5) else 0.0
            flow = 0.2 + heating + canteen
            out["gas_flow_m3_h"] = flow
            out["gas_temp_c"] = c.temp_c + 2.0
            out["gas_pressure_kpa"] = 102.0 + 0.5 * smooth_noise(s, ts, 120.0)
            factor = (out["gas_pressure_kpa"] / 101.325) * (293.15 / (273.15 + out["gas_temp_c"]))
            out["gas_flow_working_m3_h"] = flow / factor
            out["_gas_rate"] = flow
            out["_gas_working_rate"] = flow / factor
        elif self.carrier == "heat":
            heat_kw = 5.0 + 120.0 * max(0.0, (16.0 - c.temp_c) / 16.0) * (0.4 + 0.6 * c.occupancy)
            supply = 55.0 + 15.0 * max(0.0, (16.0 - c.temp_c) / 16.0)
            dT = 8.0 + 10.0 * min(1.0, heat_kw / 80.0)
            out["supply_temp_c"] = supply
            out["return_temp_c"] = supply - dT
            out["flow_m3_h"] = heat_kw / (1.163 * dT)
            out["heat_power_kw"] = heat_kw
            out["_heat_rate"] = heat_kw
        return out

    def update(self, t_ns: int) -> None:
        if self.stuck and self.values:
            return
        rates = self._rates(t_ns)
        if self.last_t_ns is not None and t_ns > self.last_t_ns:
            dt_h = (t_ns - self.last_t_ns) / 3.6e12
            for key, rk in (("energy", "_energy_rate"), ("reactive", "_reactive_rate"), ("water", "_water_rate"),
                            ("gas", "_gas_rate"), ("gas_working", "_gas_working_rate"), ("heat", "_heat_rate")):
                if rk in rates:
                    prev = self.last_rate.get(rk, rates[rk])
                    self.counters[key] = self.counters.get(key, self.counters["gas"] * 1.02) + (prev + rates[rk]) / 2 * dt_h
                    if self.counter_max is not None and self.counters[key] >= self.counter_max:
                        self.counters[key] -= self.counter_max   # the meter's own display rolls over
        self.last_t_ns = t_ns
        self.last_rate = {k: v for k, v in rates.items() if k.startswith("_")}
        ctr = self.counters
        vals = {k: v for k, v in rates.items() if not k.startswith("_")}
        vals.update({
            "active_energy_import_kwh": ctr["energy"], "active_energy_total_kwh": ctr["energy"] + ctr["energy_export"],
            "active_energy_export_kwh": ctr["energy_export"], "reactive_energy_import_kvarh": ctr["reactive"],
            "reactive_energy_export_kvarh": 0.0, "water_volume_m3": ctr["water"], "water_volume_net_m3": ctr["water"],
            "water_volume_reverse_m3": 0.0, "gas_volume_m3": ctr["gas"],
            "gas_volume_working_m3": ctr.get("gas_working", ctr["gas"] * 1.02),
            "heat_energy_kwh": ctr["heat"], "cooling_energy_kwh": ctr["cooling"],
            "ct_ratio_register": self.ct, "pt_ratio_register": self.pt,
        })
        self.values = vals
        self._encode()

    def _encode(self) -> None:
        img: dict[int, dict[int, int]] = {3: {}, 4: {}}
        served: dict[str, float] = {}
        for r in self.regs:
            v = self.pinned.get(r.name, self.values.get(r.name, 0.0))
            if r.name not in self.pinned:  # the meter reports the secondary side of a PT/CT ratio
                div = {"none": 1.0, "pt": self.pt, "ct": self.ct, "pt*ct": self.pt * self.ct}[r.ratio]
                v = v / div
            if r.name in self.transient:
                v = self.transient[r.name][1]
            words, back = encode(v, r)
            for i, w in enumerate(words):
                img[r.fc][r.address + i] = w
            served[r.name] = back
        self.image = img
        self.served = served

    def read(self, fc: int, address: int, count: int) -> list[int] | int:
        """Words for a read, or an exception code (2: illegal data address)."""
        lo_hi = self.bounds.get(fc)
        if lo_hi is None or address < lo_hi[0] or address + count > lo_hi[1]:
            return 2
        img = self.image[fc]
        words = [img.get(a, 0) for a in range(address, address + count)]
        if self.transient:
            done = [n for n in self.transient if self._covers(n, fc, address, count)]
            for n in done:
                self.transient[n][2] -= 1
                if self.transient[n][2] <= 0:
                    del self.transient[n]
            if done:
                self._encode()
        return words

    def _covers(self, name: str, fc: int, address: int, count: int) -> bool:
        return any(r.name == name and r.fc == fc and address <= r.address < address + count for r in self.regs)

    def counter_key(self) -> tuple[str, str]:
        """(counter, register name) of the carrier's main counter."""
        return self.COUNTER[self.carrier]


# --- faults -------------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str                      # timeout | exception | drop | garble
    code: int = 4                  # exception code for kind=exception
    remaining: int | None = None   # requests to affect; None = until cleared
    address: int | None = None     # only requests whose range covers this address


class Faults:
    """Server-side fault injection, per unit id."""

    def __init__(self, server: "MeterServer") -> None:
        self._server = server
        self.active: dict[int, Fault] = {}

    def set(self, unit: int, kind: str, *, code: int = 4, count: int | None = None, address: int | None = None) -> None:
        if kind not in ("timeout", "exception", "drop", "garble"):
            raise ValueError(f"unknown fault {kind!r}")
        self.active[unit] = Fault(kind, code, count, address)

    def clear(self, unit: int | None = None) -> None:
        if unit is None:
            self.active.clear()
        else:
            self.active.pop(unit, None)

    def counter_reset(self, unit: int) -> None:
        self._server.meters[unit].reset_counters()
        self._server.meters[unit].update(self._server.clock.now_ns())

    def counter_replace(self, unit: int, start: float = 0.0) -> None:
        """A new meter in place of the old one: its main counter starts at ``start`` (primary side)."""
        self.counter_set(unit, start)

    def counter_set(self, unit: int, value: float) -> None:
        """Set the main counter (primary side), e.g. just below the register's maximum so it rolls over."""
        m = self._server.meters[unit]
        m.update(self._server.clock.now_ns())
        m.counters[m.counter_key()[0]] = value
        m.update(self._server.clock.now_ns())
        m._encode()

    def counter_glitch(self, unit: int, value: float, reads: int = 1) -> None:
        """The next ``reads`` reads of the main counter register return ``value`` as served (the
        register's own side, before any ratio): a communication error decoding garbage."""
        m = self._server.meters[unit]
        m.transient[m.counter_key()[1]] = ["value", value, reads]
        m._encode()

    def counter_backstep(self, unit: int, amount: float, reads: int = 1) -> None:
        """The next ``reads`` reads return what the counter shows now, ``amount`` lower (as served):
        a stale re-read, a rounding, noise. The meter goes on counting from its true value."""
        m = self._server.meters[unit]
        name = m.counter_key()[1]
        m.transient[name] = ["value", m.served[name] - amount, reads]
        m._encode()

    def stuck(self, unit: int, on: bool = True) -> None:
        self._server.meters[unit].stuck = on

    def take(self, unit: int, address: int, count: int) -> Fault | None:
        f = self.active.get(unit)
        if f is None or (f.address is not None and not address <= f.address < address + count):
            return None
        if f.remaining is not None:
            f.remaining -= 1
            if f.remaining <= 0:
                del self.active[unit]
        return f


# --- framing (own code) -------------------------------------------------------------------------

def _crc_table() -> list[int]:
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC = _crc_table()


def crc16(data: bytes) -> int:
    c = 0xFFFF
    for b in data:
        c = (c >> 8) ^ _CRC[(c ^ b) & 0xFF]
    return c


def rtu_frame(pdu_with_unit: bytes) -> bytes:
    return pdu_with_unit + struct.pack("<H", crc16(pdu_with_unit))


class MeterServer:
    """A Modbus server holding one or many simulated meters (unit ids) of one profile.

    ``framer="socket"`` is Modbus TCP (MBAP header); ``"rtu"`` is RTU frames over TCP, as a
    serial gateway/DTU forwards them.

    ``baud`` makes an RTU server a baud-faithful RS-485 line: each frame is held for its wire time
    (characters × ``bits_per_char`` / baud), the line stays silent 3.5 characters (at least 1.75 ms)
    before the meter answers after ``response_delay_s`` (its turnaround), and one conversation at a
    time holds the line, whatever the number of TCP connections to the gateway.
    """

    def __init__(self, profile: str, unit_ids: Sequence[int] = (1,), host: str = "127.0.0.1", port: int = 0,
                 framer: str = "socket", clock: Clock = SYSTEM_CLOCK, seed: int = 0,
                 load: OfficeLoad | Callable[[int], OfficeLoad] | None = None, profiles_dir: str | None = None,
                 ct_ratio: float = 1.0, pt_ratio: float = 1.0, update_period_s: float = 1.0,
                 response_delay_s: float = 0.0, counter_max: float | None = None, baud: int | None = None,
                 bits_per_char: int = 11) -> None:
        if framer not in ("socket", "rtu"):
            raise ValueError("framer is 'socket' or 'rtu'")
        if baud is not None and framer != "rtu":
            raise ValueError("a baud rate is for an RTU line (framer='rtu')")
        self.baud, self.bits_per_char = baud, bits_per_char
        self._line = asyncio.Lock()   # the RS-485 line: one frame on it at a time
        self.doc, self.regs = read_profile(profile, profiles_dir)
        self.profile = profile
        self.host, self._port, self.framer, self.clock = host, port, framer, clock
        self.update_period_ns = int(update_period_s * 1e9)
        self.response_delay_s = response_delay_s
        self.meters: dict[int, SimMeter] = {}
        for u in unit_ids:
            ld = load(u) if callable(load) else load
            self.meters[u] = SimMeter(self.regs, self.doc["carrier"], seed * 1000 + u, ld, ct_ratio, pt_ratio,
                                      counter_max)
        self.faults = Faults(self)
        self.requests = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._serial_fds: list[int] = []
        now = clock.now_ns()
        for m in self.meters.values():
            m.update(now)
        self._last_update = now

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._port)

    async def stop(self) -> None:
        if self._serial_fds:
            loop = asyncio.get_running_loop()
            for fd in self._serial_fds:
                loop.remove_reader(fd)
            self._serial_fds.clear()
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "MeterServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # values -------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        now = self.clock.now_ns()
        if force or now - self._last_update >= self.update_period_ns:
            for m in self.meters.values():
                m.update(now)
            self._last_update = now

    def continue_counter(self, unit: int, value: float, t_ns: int) -> None:
        """The unit's main counter reads ``value`` at ``t_ns`` and integrates on from there (a meter
        whose history was written by ``simulators.history``: live readings carry on from its end)."""
        m = self.meters[unit]
        m.counters[m.counter_key()[0]] = value
        m.last_t_ns, m.last_rate = None, {}
        m.update(t_ns)
        self._last_update = t_ns

    def set_values(self, unit: int, values: dict[str, float]) -> None:
        """Pin engineering values (as the meter reports them, secondary side) for read-back tests."""
        m = self.meters[unit]
        m.pinned.update(values)
        m._encode()

    def served(self, unit: int) -> dict[str, float]:
        """The exact engineering values the unit serves now (after encoding and quantisation)."""
        self.refresh()
        return dict(self.meters[unit].served)

    # protocol -----------------------------------------------------------------------------------
    def _answer(self, unit: int, fc: int, address: int, count: int) -> tuple[bytes | None, Fault | None]:
        """PDU (without unit) to answer, or None for no answer; and the fault applied."""
        self.requests += 1
        m = self.meters.get(unit)
        if m is None:
            return (bytes([fc | 0x80, 0x0B]) if self.framer == "socket" else None), None
        fault = self.faults.take(unit, address, count)
        if fault is not None:
            if fault.kind in ("timeout", "drop"):
                return None, fault
            if fault.kind == "exception":
                return bytes([fc | 0x80, fault.code]), fault
        if fc not in (3, 4):
            return bytes([fc | 0x80, 1]), fault
        if not 1 <= count <= 125:
            return bytes([fc | 0x80, 3]), fault
        self.refresh()
        words = m.read(fc, address, count)
        if isinstance(words, int):
            return bytes([fc | 0x80, words]), fault
        return struct.pack(f">BB{count}H", fc, 2 * count, *words), fault

    def attach_serial_fd(self, fd: int) -> None:
        """Serve RTU on a serial-like file descriptor (a pty master in tests, a real port's fd)."""
        import os
        loop = asyncio.get_running_loop()
        buf = bytearray()

        def readable() -> None:
            try:
                buf.extend(os.read(fd, 4096))
            except OSError:
                loop.remove_reader(fd)
                return
            while len(buf) >= 8:
                frame = bytes(buf[:8])
                if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
                    del buf[:1]  # resynchronise on the next byte, as a slave waiting for silence would
                    continue
                del buf[:8]
                unit, fc = frame[0], frame[1]
                address, count = struct.unpack(">HH", frame[2:6])
                answer, fault = self._answer(unit, fc, address, count)
                if answer is None or (fault is not None and fault.kind == "drop"):
                    continue
                out = rtu_frame(bytes([unit]) + answer)
                if fault is not None and fault.kind == "garble":
                    out = out[:3] + bytes(b ^ 0x5A for b in out[3:])
                os.write(fd, out)

        loop.add_reader(fd, readable)
        self._serial_fds.append(fd)

    def wire_s(self, chars: int) -> float:
        return chars * self.bits_per_char / self.baud if self.baud else 0.0

    async def _line_exchange(self, writer: asyncio.StreamWriter, unit: int, fc: int, address: int, count: int,
                             request_chars: int) -> None:
        """One request and its answer on a baud-faithful line, holding the line throughout."""
        gap = max(3.5 * self.bits_per_char / self.baud, 0.00175)
        async with self._line:
            # the request's characters take their time; the meter answers after the frame's
            # closing silence and its turnaround; its answer's characters take theirs
            await asyncio.sleep(self.wire_s(request_chars) + gap + self.response_delay_s)
            answer, fault = self._answer(unit, fc, address, count)
            if fault is not None and fault.kind == "drop":
                writer.close()
                return
            if answer is None:
                return
            out = rtu_frame(bytes([unit]) + answer)
            if fault is not None and fault.kind == "garble":
                out = out[:3] + bytes(b ^ 0x5A for b in out[3:])
            await asyncio.sleep(self.wire_s(len(out)))
            writer.write(out)
            await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                if self.framer == "socket":
                    head = await reader.readexactly(7)
                    tid, pid, length, unit = struct.unpack(">HHHB", head)
                    if length < 2 or length > 260:
                        break
                    pdu = await reader.readexactly(length - 1)
                    fc = pdu[0]
                    address, count = struct.unpack(">HH", pdu[1:5]) if len(pdu) >= 5 else (0, 0)
                else:
                    head = await reader.readexactly(2)
                    unit, fc = head[0], head[1]
                    body = await reader.readexactly(6)
                    frame = head + body
                    if crc16(frame[:-2]) != struct.unpack("<H", frame[-2:])[0]:
                        continue  # a real slave ignores a frame with a bad CRC
                    address, count = struct.unpack(">HH", frame[2:6])
                if self.baud is not None:
                    await self._line_exchange(writer, unit, fc, address, count, len(frame))
                    continue
                answer, fault = self._answer(unit, fc, address, count)
                if self.response_delay_s:
                    await asyncio.sleep(self.response_delay_s)
                if fault is not None and fault.kind == "drop":
                    break
                if answer is None:
                    continue
                if self.framer == "socket":
                    out = struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer
                    if fault is not None and fault.kind == "garble":
                        out = out[:7] + bytes([answer[0], 0xFF]) + bytes(b ^ 0x5A for b in out[9:])
                else:
                    out = rtu_frame(bytes([unit]) + answer)
                    if fault is not None and fault.kind == "garble":
                        out = out[:3] + bytes(b ^ 0x5A for b in out[3:])
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # peer gone, or the server is stopping
        finally:
            self._writers.discard(writer)
            writer.close()
