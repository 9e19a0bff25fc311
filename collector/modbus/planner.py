"""Request planning, pure: the fewest Modbus reads that cover the registers a site wants.

Registers of the same function code are merged into one read when the gap between them is at
most ``max_gap`` registers and the read stays within ``max_registers`` (the protocol's 125 or
the device's own lower limit). Greedy in address order is optimal here: each read is a run of
consecutive wanted registers, and extending a run as far as the constraints allow never costs
a read later (the classic interval-cover exchange argument; tests check it against a DP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from collector.modbus.profiles import FUNCTIONS, PROTOCOL_MAX_REGISTERS, Register


@dataclass(frozen=True, slots=True)
class Request:
    function: str              # holding | input
    address: int               # first register, 0-based wire address
    count: int                 # registers to read
    registers: tuple[Register, ...]

    @property
    def function_code(self) -> int:
        return FUNCTIONS[self.function]

    @property
    def end(self) -> int:
        return self.address + self.count


def plan(registers: Sequence[Register], max_gap: int = 10, max_registers: int = PROTOCOL_MAX_REGISTERS) -> tuple[Request, ...]:
    """Group ``registers`` into reads. Raises ``ValueError`` when one register cannot fit a read."""
    limit = min(max_registers, PROTOCOL_MAX_REGISTERS)
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    out: list[Request] = []
    for func in FUNCTIONS:
        rs = sorted((r for r in registers if r.function == func), key=lambda r: r.address)
        cur: list[Register] = []
        start = end = 0
        for r in rs:
            if r.count > limit:
                raise ValueError(f"register {r.name} needs {r.count} registers, over the limit {limit}")
            if cur and r.address - end <= max_gap and max(end, r.end) - start <= limit and r.address >= end:
                cur.append(r)
                end = max(end, r.end)
                continue
            if cur:
                out.append(Request(func, start, end - start, tuple(cur)))
            cur, start, end = [r], r.address, r.end
        if cur:
            out.append(Request(func, start, end - start, tuple(cur)))
    return tuple(out)
