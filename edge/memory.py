"""Give freed heap memory back to the operating system after a heavy computation.

The indicator passes build large numpy arrays and many short-lived objects in worker threads.
glibc keeps what they free in its per-thread arenas, so the process's RSS stays at the pass's
high-water mark although the memory is free: a once-a-day year-to-date recompute would look like
a leak for the rest of the day. ``malloc_trim(0)`` releases free pages of every arena (glibc ≥ 2.8).
Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_trim = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = getattr(_libc, "malloc_trim", None)
    if _trim is not None:
        _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
except OSError:  # pragma: no cover - not glibc
    _trim = None


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if glibc's ``malloc_trim`` ran and released something."""
    if _trim is None:
        return False
    return bool(_trim(0))
