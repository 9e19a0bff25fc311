"""Sinks: where the outbox's lines go. InfluxDB v1 and v2/v3 over HTTP, or the embedded store.

A sink takes a batch of line-protocol lines and either stores all of them or raises a
``SinkError`` saying what happened, sorted so the deliverer knows what to do:

==============================  =========================================  ============================
error                           when                                       the deliverer
==============================  =========================================  ============================
``SinkUnavailable``             network error, timeout, 5xx, 429           retries with capped backoff
                                                                           and jitter (``retry_after_s``
                                                                           from Retry-After is honoured)
``SinkTooLarge``                413                                        splits the batch in two
``SinkRejected``                400 (bad line, field type conflict,        bisects to the bad points,
                                partial write)                             dead-letters them with the
                                                                           server's message, delivers
                                                                           the rest
``SinkBlocked``                 401, 403 (credentials), 404 (no such       stops delivering, keeps
                                database/bucket)                           buffering, logs an error,
                                                                           tries again slowly
==============================  =========================================  ============================

httpx exceptions are translated here and nowhere else. Bodies are sent with ``precision=ns`` and
gzip-compressed at level 1 (``gzip_level="auto"``, the default), except to a loopback address
(127.0.0.0/8, ::1, localhost), where compressing only burns CPU that the local influxd needs;
pass ``gzip_level=1..9`` or ``None`` to choose.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import ipaddress
import logging
import time
from typing import Literal, Protocol, Sequence, Union, runtime_checkable

import httpx
import orjson

from edge.errors import SinkError

log = logging.getLogger(__name__)


class SinkUnavailable(SinkError):
    """The store could not take the write now (network, 5xx, 429): retry later."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, status=status, retryable=True, retry_after_s=retry_after_s)


class SinkTooLarge(SinkError):
    """413: the batch is larger than the store accepts; send it in smaller pieces."""

    def __init__(self, message: str, *, status: int | None = 413) -> None:
        super().__init__(message, status=status, retryable=False)


class SinkRejected(SinkError):
    """400: the store refused some points.

    ``rejected`` lists (index in the batch, reason) when the sink knows which points were bad
    (the embedded store does); ``None`` when it does not (InfluxDB says only "partial write"),
    and the deliverer bisects. The points not listed were stored.
    """

    def __init__(self, message: str, *, status: int | None = 400,
                 rejected: Sequence[tuple[int, str]] | None = None) -> None:
        super().__init__(message, status=status, retryable=False)
        self.rejected = tuple(rejected) if rejected is not None else None


class SinkBlocked(SinkError):
    """401/403/404: credentials or the database are wrong. An operator has to act."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, status=status, retryable=False)


@runtime_checkable
class Sink(Protocol):
    """Stores lines of line protocol. ``write`` returns when all are stored, else raises ``SinkError``."""

    name: str

    async def write(self, lines: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


# --- pure helpers ----------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def server_message(body: bytes) -> str:
    """The server's own words: ``{"error": ...}`` (v1), ``{"message": ...}`` (v2/v3), else the text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:2000]
    if isinstance(doc, dict):
        for k in ("error", "message"):
            if isinstance(doc.get(k), str):
                return doc[k]
    return body.decode("utf-8", "replace").strip()[:2000]


def classify(status: int, body: bytes, retry_after: str | None = None, where: str = "") -> SinkError | None:
    """Turn an HTTP response into the error the deliverer acts on (None for success)."""
    if 200 <= status < 300:
        return None
    msg = server_message(body)
    text = f"{where}: HTTP {status}: {msg}" if where else f"HTTP {status}: {msg}"
    if status == 429 or status >= 500 or status == 408:
        return SinkUnavailable(text, status=status, retry_after_s=parse_retry_after(retry_after))
    if status == 413:
        return SinkTooLarge(text, status=status)
    if status in (401, 403, 404):
        return SinkBlocked(text, status=status)
    if status == 400 or status == 422:
        # keep InfluxDB's message verbatim: it is what the dead-letter row shows
        err = SinkRejected(msg, status=status)
        return err
    return SinkBlocked(text, status=status)  # an unexpected status: do not loop fast on it


# --- InfluxDB over HTTP ----------------------------------------------------------------------------

GzipLevel = Union[int, None, Literal["auto"]]


def is_loopback(url: str) -> bool:
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



class InfluxSink:
    """Line protocol over HTTP to InfluxDB. Use ``influx_v1`` / ``influx_v2`` to build one."""

    def __init__(self, url: str, path: str, params: dict[str, str], *, headers: dict[str, str] | None = None,
                 auth: tuple[str, str] | None = None, timeout_s: float = 10.0, gzip_level: GzipLevel = "auto",
                 name: str = "influxdb") -> None:
        self.name = name
        self.url = url.rstrip("/")
        if gzip_level == "auto":
            gzip_level = None if is_loopback(self.url) else 1
        self._path = path
        self._params = params
        self._gzip_level = gzip_level
        base_headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gzip_level is not None:
            base_headers["Content-Encoding"] = "gzip"
        base_headers.update(headers or {})
        self._client = httpx.AsyncClient(base_url=self.url, headers=base_headers, auth=auth,
                                         timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=4))

    def encode(self, lines: Sequence[str]) -> bytes:
        body = "\n".join(lines).encode("utf-8")
        if self._gzip_level is not None:
            body = gzip.compress(body, compresslevel=self._gzip_level, mtime=0)
        return body

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        if self._gzip_level is not None and len(lines) > 2000:  # compressing ~0.5 MB: off the loop
            body = await asyncio.to_thread(self.encode, lines)
        else:
            body = self.encode(lines)
        await self.post(body)

    async def post(self, body: bytes) -> None:
        try:
            r = await self._client.post(self._path, params=self._params, content=body)
        except httpx.TimeoutException as e:
            raise SinkUnavailable(f"{self.url}: timeout ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise SinkUnavailable(f"{self.url}: {type(e).__name__}: {e}") from e
        err = classify(r.status_code, r.content, r.headers.get("Retry-After"), self.url)
        if err is not None:
            raise err

    async def aclose(self) -> None:
        await self._client.aclose()

    close = aclose


def influx_v1(url: str, database: str, *, retention_policy: str | None = None, username: str | None = None,
              password: str | None = None, timeout_s: float = 10.0, gzip_level: GzipLevel = "auto") -> InfluxSink:
    """InfluxDB 1.x ``/write?db=&rp=&precision=ns`` with basic auth when a user is given."""
    params = {"db": database, "precision": "ns"}
    if retention_policy:
        params["rp"] = retention_policy
    auth = (username, password or "") if username else None
    return InfluxSink(url, "/write", params, auth=auth, timeout_s=timeout_s, gzip_level=gzip_level,
                      name=f"influxdb_v1:{database}")


def influx_v2(url: str, org: str, bucket: str, *, token: str | None = None, timeout_s: float = 10.0,
              gzip_level: GzipLevel = "auto") -> InfluxSink:
    """InfluxDB 2.x / 3.x ``/api/v2/write?org=&bucket=&precision=ns`` with ``Authorization: Token``."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    return InfluxSink(url, "/api/v2/write", {"org": org, "bucket": bucket, "precision": "ns"},
                      headers=headers, timeout_s=timeout_s, gzip_level=gzip_level, name=f"influxdb_v2:{bucket}")


# --- the embedded store ----------------------------------------------------------------------------


class EmbeddedSink:
    """Writes into the embedded SQLite store (``edge.store.EmbeddedStore``) from a thread."""

    def __init__(self, store, *, retention_every_s: float = 3600.0) -> None:  # store: edge.store.EmbeddedStore
        self.store = store
        self.name = f"embedded:{store.path}"
        self._retention_every_s = retention_every_s
        self._last_retention = float("-inf")

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        rejected = await asyncio.to_thread(self.store.write_lines, lines)
        now = time.monotonic()
        if self.store.retention_s is not None and now - self._last_retention >= self._retention_every_s:
            self._last_retention = now
            await asyncio.to_thread(self.store.apply_retention)
        if rejected:
            raise SinkRejected(f"{len(rejected)} of {len(lines)} points refused: {rejected[0][1]}",
                               rejected=rejected)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.store.close)

    close = aclose
