"""One exception tree for the whole service.

Library exceptions (pymodbus, httpx, aiomqtt, sqlite3) are translated into these in one place
per integration, so callers catch ``EdgeError`` subclasses and never a third party's types.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error sensing-edge raises on purpose."""


class ConfigError(EdgeError):
    """A site file, profile or option is wrong. The message names file, object and field."""

    def __init__(self, message: str, *, file: str | None = None, obj: str | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        self.file, self.obj, self.field, self.line = file, obj, field, line
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if obj:
            where.append(obj)
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ProfileError(ConfigError):
    """A device profile (device_profiles/*.yaml) is invalid."""


class DeviceError(EdgeError):
    """A field device failed a request (timeout, exception code, CRC error, refused connection)."""

    def __init__(self, message: str, *, device: str | None = None, kind: str = "error") -> None:
        self.device, self.kind = device, kind
        super().__init__(f"device {device}: {message}" if device else message)


class PayloadError(EdgeError):
    """A message payload could not be decoded or failed validation; ``reason`` is short and stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class LineProtocolError(PayloadError):
    """Text that is not valid InfluxDB line protocol."""


class SinkError(EdgeError):
    """The store refused or could not take a write."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True,
                 retry_after_s: float | None = None) -> None:
        self.status, self.retryable, self.retry_after_s = status, retryable, retry_after_s
        super().__init__(message)


class StoreError(EdgeError):
    """A query against the store failed."""


class OutboxError(EdgeError):
    """The durable outbox could not commit or read."""


class OutboxFull(OutboxError):
    """The outbox is full and the put's source can hold its data: nothing of the put was committed.

    Raised for puts made with ``on_full=OnFull.refuse`` (MQTT and JT/T 808 positions). The source
    keeps the data and offers it again: an MQTT message is not acknowledged (the broker keeps it
    and redelivers it), a JT/T 808 terminal gets no 0x8001 and resends."""
