# Time for the firmware core: MicroPython's wrapping ticks and sleep_ms, or CPython
# stand-ins so the same core runs in the simulator.
import asyncio

try:
    from time import ticks_add, ticks_diff, ticks_ms  # noqa: F401
except ImportError:
    from ._cpython import ticks_add, ticks_diff, ticks_ms  # type: ignore[no-redef]  # noqa

try:
    # MicroPython's own: no wrapper coroutine, whose frame would sit on the heap for as long
    # as each task sleeps.
    from asyncio import sleep_ms  # noqa: F401
except ImportError:
    from ._cpython import sleep_ms  # type: ignore[no-redef]  # noqa

_TIMEOUT = getattr(asyncio, "TimeoutError", OSError)


async def wait_event(event, ms):
    """Wait at most `ms` for an asyncio.Event; True if it was set."""
    try:
        if hasattr(asyncio, "wait_for_ms"):
            await asyncio.wait_for_ms(event.wait(), ms)
        else:
            await asyncio.wait_for(event.wait(), ms / 1000)
        return True
    except _TIMEOUT:
        return False
