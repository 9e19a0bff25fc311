"""The I/O shell: one Modbus conversation per connection (TCP socket, serial line, or a serial
gateway reached over TCP), used by many meters in turn.

Each ``Connection`` owns a pymodbus async client, an ``asyncio.Lock`` (one request at a time on
a bus or gateway) and the inter-frame gap (3.5 character times on serial lines). It reconnects
itself with capped exponential backoff. pymodbus exceptions are translated here, and only here,
into ``DeviceError`` with a ``kind``: ``timeout``, ``exception``, ``connection``, ``protocol``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Sequence

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collector.modbus.bus import gap_s
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Transport, TransportKind
from edge.errors import DeviceError

log = logging.getLogger(__name__)


def frame_gap_s(transport: Transport) -> float:
    """Modbus RTU inter-frame silence: 3.5 characters of 11 bits, at least 1.75 ms (spec, > 19200 baud)."""
    if transport.kind is TransportKind.tcp:
        return 0.0
    return gap_s(transport)


class Connection:
    def __init__(self, key: str, transport: Transport, timeout_s: float = 1.0, clock: Clock = SYSTEM_CLOCK,
                 backoff_min_s: float = 0.5, backoff_max_s: float = 30.0) -> None:
        self.key = key
        self.transport = transport
        self.timeout_s = timeout_s
        self.clock = clock
        self.lock = asyncio.Lock()
        self.gap_s = frame_gap_s(transport)
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_io = 0.0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self.connects = 0
        self.up: bool | None = None

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        t = self.transport
        if t.kind is TransportKind.rtu:
            return AsyncModbusSerialClient(port=t.serial_port, framer=FramerType.RTU, baudrate=t.baudrate,
                                           parity=t.parity.value, stopbits=t.stopbits, bytesize=t.bytesize,
                                           timeout=self.timeout_s, retries=0, reconnect_delay=0)
        framer = FramerType.RTU if t.kind is TransportKind.rtu_over_tcp else FramerType.SOCKET
        return AsyncModbusTcpClient(t.host, port=t.port, framer=framer, timeout=self.timeout_s,
                                    retries=0, reconnect_delay=0)

    def _fail_connection(self, why: str) -> DeviceError:
        self._backoff = min(self.backoff_max_s, max(self.backoff_min_s, self._backoff * 2))
        self._next_attempt = self.clock.monotonic() + self._backoff
        if self.up is not False:
            log.warning("modbus connection=%s down reason=%s retry_in_s=%.1f", self.key, why, self._backoff)
        self.up = False
        self.close()
        return DeviceError(f"connection {self.key}: {why}", kind="connection")

    async def _ensure(self) -> None:
        if self._client is not None and self._client.connected:
            return
        if self.clock.monotonic() < self._next_attempt:
            raise DeviceError(f"connection {self.key}: waiting to reconnect", kind="connection")
        self.close()
        self._client = self._make_client()
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as e:
            raise self._fail_connection(str(e) or type(e).__name__) from None
        if not ok:
            raise self._fail_connection("connect failed")
        self.connects += 1
        self._backoff = 0.0
        if self.up is False:
            log.info("modbus connection=%s up", self.key)
        self.up = True

    async def read(self, function_code: int, address: int, count: int, unit: int) -> list[int]:
        """One read; call it holding ``self.lock``. Returns the words or raises ``DeviceError``."""
        client = self._client
        if client is None or not client.connected:
            await self._ensure()
            client = self._client
            assert client is not None
        gap = self.gap_s
        if gap:
            await self._wait_gap(gap)
        try:
            if function_code == 3:
                rr = await client.read_holding_registers(address, count=count, device_id=unit)
            else:
                rr = await client.read_input_registers(address, count=count, device_id=unit)
        except (ModbusException, OSError) as e:
            raise self._translate(e, client) from None
        finally:
            if gap:  # only the inter-frame gap needs the time of the last exchange
                self._last_io = self.clock.monotonic()
        return self._words(rr, count)

    async def read_each(self, requests: Sequence[tuple[int, int, int]], unit: int,
                        on_error: Callable[[int, DeviceError, int], None]) -> tuple[list[list[int] | None], list[int]]:
        """``read`` of each ``(function_code, address, count)`` in turn, each under ``self.lock`` (other
        users of the connection get their turn between them). Returns the words of each read, None where
        it failed, and the wall-clock time (ns) each was sent; ``on_error(index, error, sent_ns)`` is
        called at once for every failed read (its lock still held)."""
        lock, now_ns, read = self.lock, self.clock.now_ns, self.read
        words: list[list[int] | None] = []
        times: list[int] = []
        for i, (function_code, address, count) in enumerate(requests):
            async with lock:
                t = now_ns()
                times.append(t)
                try:
                    words.append(await read(function_code, address, count, unit))
                except DeviceError as e:
                    words.append(None)
                    on_error(i, e, t)
        return words, times

    async def _wait_gap(self, gap: float) -> None:
        wait = self._last_io + gap - self.clock.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _translate(self, e: BaseException, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> DeviceError:
        """The ``DeviceError`` for a pymodbus or OS exception of one exchange (closing what needs closing)."""
        if isinstance(e, ConnectionException):
            return self._fail_connection(str(e) or "connection lost")
        if isinstance(e, ModbusIOException):
            if self.transport.kind is not TransportKind.tcp or not client.connected:
                self.close()  # RTU has no transaction ids: drop stale bytes by reconnecting
            return DeviceError(f"no valid answer: {e}", kind="timeout")
        self.close()
        return DeviceError(f"{type(e).__name__}: {e}", kind="protocol")

    @staticmethod
    def _words(rr: Any, count: int) -> list[int]:
        """The words of a response, or ``DeviceError`` for an exception response or a short answer."""
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            raise DeviceError(f"exception code {code}", kind="exception")
        regs = getattr(rr, "registers", None)
        if regs is None or len(regs) < count:
            raise DeviceError(f"short answer: {0 if regs is None else len(regs)} of {count} registers", kind="protocol")
        # the response's own fresh list (pymodbus builds one per response): no copy unless too long
        return regs if len(regs) == count and type(regs) is list else list(regs[:count])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
