# Time for the firmware core: MicroPython's wrapping ticks and sleep_ms, or CPython
# stand-ins so the same core runs in the simulator.
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

# How often a waiting task looks at what it waits for (the MQTT link polls its socket at the
# same rate). asyncio.wait_for_ms would answer at once, but puts two more tasks and three
# coroutine frames on the heap for every waiting task (~700 bytes each on 64-bit MicroPython).
POLL_MS = 20


class Flag:
    """Set by an input or a task, cleared by the task that waits on it with wait_event.
    Lighter than asyncio.Event, whose module and task queue take ~1.5 KB of heap."""

    def __init__(self):
        self.state = False

    def set(self):
        self.state = True

    def clear(self):
        self.state = False

    def __bool__(self):
        return self.state


async def wait_event(what, ms):
    """Wait at most `ms` for `what` to become true (a Flag that is set, a queue that is not
    empty); True if it did."""
    end = ticks_add(ticks_ms(), ms)
    while not what:
        left = ticks_diff(end, ticks_ms())
        if left <= 0:
            return False
        await sleep_ms(min(left, POLL_MS))
    return True
