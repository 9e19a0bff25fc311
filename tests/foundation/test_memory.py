"""edge.memory: freed heap pages go back to the OS after a heavy pass (glibc's malloc_trim)."""

import platform
import threading

import numpy as np
import pytest

from edge.memory import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_pages_freed_in_a_worker_thread_are_released():
    def work() -> None:  # like an indicator pass in asyncio.to_thread: below the mmap threshold, in the thread's arena
        blocks = [np.ones(8192) for _ in range(4000)]  # 4000 x 64 KB
        del blocks

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert release_free_memory() is True
    assert isinstance(release_free_memory(), bool)  # nothing left to release: callable again, never raises
