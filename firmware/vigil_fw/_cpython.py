# CPython stand-ins for MicroPython's time functions and ThreadSafeFlag, used only by the
# simulator and the CPython-side benchmarks.
import asyncio
import time

TimeoutError = asyncio.TimeoutError


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, delta):
    return a + delta


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)


async def wait_for_ms(awaitable, ms):
    return await asyncio.wait_for(awaitable, ms / 1000)


class Flag:
    """asyncio.ThreadSafeFlag's interface over an asyncio.Event (set from the loop's thread;
    the simulator hands keyboard input to the loop with call_soon_threadsafe)."""

    def __init__(self):
        self._event = asyncio.Event()

    def set(self):
        self._event.set()

    def clear(self):
        self._event.clear()

    async def wait(self):
        await self._event.wait()
        self._event.clear()
