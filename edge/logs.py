"""Structured logs: one line per event, ``key=value`` pairs, logged on transitions."""

from __future__ import annotations

import logging
import sys
import time

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [ts, f"level={record.levelname.lower()}", f"logger={record.name}", f"msg={_q(record.getMessage())}"]
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                parts.append(f"{k}={_q(v)}")
        if record.exc_info:
            parts.append(f"exc={_q(self.formatException(record.exc_info))}")
        return " ".join(parts)


def _q(v: object) -> str:
    s = str(v)
    return f'"{s}"' if (" " in s or "=" in s or not s) else s


class EdgeLogHandler(logging.StreamHandler):
    """The handler ``setup_logging`` installs: a second call replaces it and no one else's."""


def setup_logging(level: str = "info", stream=sys.stderr) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, EdgeLogHandler):
            root.removeHandler(h)
    h = EdgeLogHandler(stream)
    h.setFormatter(KeyValueFormatter())
    root.addHandler(h)
    root.setLevel(level.upper())
    # third-party chatter stays at warning unless asked for
    for noisy in ("amqtt", "transitions", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # pymodbus logs every timeout and stray frame as an ERROR; the poller counts those and logs
    # down/up transitions itself, so pymodbus speaks only at debug level
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)
