# Time and waiting for the firmware core: MicroPython's wrapping ticks, sleep_ms and
# ThreadSafeFlag, or CPython stand-ins so the same core runs in the simulator.
#
# Rules:
#   a task that has nothing to do waits on a Flag with no timeout: the scheduler then sleeps
#     until an IRQ or another task sets it (no polling, so an idle wearable can sleep)
#   a Flag has one waiter; wait() returns once it is set and clears it
#   Flag.set() is safe in an IRQ (hard or soft) and from another task
#   wait_for(flag, ms) is for the few waits that have a deadline (a retry due, an ack)
try:
    from time import ticks_add, ticks_diff, ticks_ms  # noqa: F401
except ImportError:
    from ._cpython import ticks_add, ticks_diff, ticks_ms  # type: ignore[no-redef]  # noqa

try:
    # MicroPython's own: no wrapper coroutine, whose frame would sit on the heap for as long
    # as each task sleeps.
    from asyncio import ThreadSafeFlag as Flag  # noqa: F401
    from asyncio import TimeoutError, sleep_ms, wait_for_ms  # noqa: F401
except ImportError:
    from ._cpython import Flag, TimeoutError, sleep_ms, wait_for_ms  # type: ignore  # noqa


async def wait_for(flag, ms):
    """Wait at most `ms` for `flag` to be set (and clear it); True if it was."""
    try:
        await wait_for_ms(flag.wait(), ms)
        return True
    except TimeoutError:
        return False
