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


def trace_on_signal(path: str, frames: int = 6) -> None:
    """Memory diagnostics for a running service (``EDGE_TRACEMALLOC=<file>``): start ``tracemalloc``
    and, on each SIGUSR2, append to ``path`` the allocation sites that grew most since the previous
    signal (or since start), with their sizes and counts."""
    import signal
    import time
    import tracemalloc

    tracemalloc.start(frames)
    state = {"prev": tracemalloc.take_snapshot(), "t0": time.monotonic()}

    def dump(_signum, _frame) -> None:
        snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        stats = snap.compare_to(state["prev"], "traceback")
        cur, peak = tracemalloc.get_traced_memory()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"=== t={time.monotonic() - state['t0']:.0f}s traced={cur / 2**20:.1f}MiB peak={peak / 2**20:.1f}MiB\n")
            for st in stats[:25]:
                f.write(f"{st.size_diff / 1024:+.1f} KiB ({st.count_diff:+d}) total {st.size / 1024:.1f} KiB\n")
                for line in st.traceback.format()[-8:]:
                    f.write(f"    {line}\n")
        state["prev"] = snap

    signal.signal(signal.SIGUSR2, dump)
