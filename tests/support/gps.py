"""Running a GpsCollector inside a test: start it and wait until it is connected, stop it."""

from __future__ import annotations

import asyncio
import time

import pytest

from collector.gps.subscriber import GpsCollector


async def start(col: GpsCollector, timeout_s: float = 20.0) -> asyncio.Task:
    task = asyncio.create_task(col.run())
    deadline = time.monotonic() + timeout_s
    while not col.connected:
        assert time.monotonic() < deadline, "collector did not connect"
        assert not task.done(), task
        await asyncio.sleep(0.02)
    return task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
