# CPython stand-ins for MicroPython's time functions, used only by the simulator.
import asyncio
import time


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, delta):
    return a + delta


async def sleep_ms(ms):
    await asyncio.sleep(ms / 1000)
