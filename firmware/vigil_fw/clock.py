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

# How often a waiting task looks at its event on MicroPython (the MQTT link polls its socket at
# the same rate). asyncio.wait_for_ms would answer at once, but puts two more tasks and three
# coroutine frames on the heap for every waiting task (~700 bytes each on 64-bit).
POLL_MS = 20


async def wait_event(event, ms):
    """Wait at most `ms` for an asyncio.Event; True if it was set."""
    if hasattr(asyncio, "sleep_ms"):
        end = ticks_add(ticks_ms(), ms)
        while not event.is_set():
            left = ticks_diff(end, ticks_ms())
            if left <= 0:
                return False
            await sleep_ms(min(left, POLL_MS))
        return True
    try:
        await asyncio.wait_for(event.wait(), ms / 1000)
        return True
    except asyncio.TimeoutError:
        return False
