# A simulated board with the same interface as hal_esp32.Board: buttons, accelerometer,
# battery, vibration/LED, watchdog and flash. It lets the firmware core run unchanged on the
# MicroPython unix port (tests, benchmarks) and on CPython (the simulator).
from .clock import Flag, sleep_ms, ticks_ms, wait_event
from .flash import Flash

REST = (0, 0, 1000)  # a still wrist: 1 g on z


class SimButton:
    def __init__(self):
        self._events = []

    def _push(self, level):
        self._events.append((level, ticks_ms()))  # what the IRQ + pin read would give

    async def event(self, timeout_ms):
        if not self._events:
            await wait_event(self._events, timeout_ms)
        return self._events.pop(0) if self._events else None

    async def hold(self, ms):
        self._push("down")
        await sleep_ms(ms)
        self._push("up")

    async def presses(self, times, gap_ms=150, hold_ms=60):
        for _ in range(times):
            await self.hold(hold_ms)
            await sleep_ms(gap_ms)


class SimAccel:
    def __init__(self, hardware_taps=False):
        self.hardware_taps = hardware_taps
        self._queue = []
        self._flag = Flag()

    def feed(self, samples):
        """Queue raw samples (mg) for the software detector."""
        self._queue.extend(samples)

    def samples(self):
        if not self._queue:
            return (REST,)
        batch = self._queue[:10]
        self._queue = self._queue[10:]
        return batch

    def hw_double_tap(self):
        """The tap engine's interrupt fired."""
        self._flag.set()

    async def double_tap(self, timeout_ms):
        fired = await wait_event(self._flag, timeout_ms)
        self._flag.clear()
        return fired


class SimBoard:
    name = "sim"

    def __init__(self, flash_root, hardware_taps=False, flash=None):
        self.flash = flash if flash is not None else Flash(flash_root)
        self.sos_button = SimButton()
        self.duress_button = SimButton()
        self.accel = SimAccel(hardware_taps)
        self.battery = 90
        self.network = None
        self.played = []  # every (pulses, colour) the motor and LED were driven with
        self.watchdog_timeout = None
        self.watchdog_feeds = 0

    def battery_percent(self):
        return self.battery

    async def play(self, pulses, colour):
        self.played.append((pulses, colour))
        await sleep_ms(1)

    def watchdog_start(self, timeout_ms):
        self.watchdog_timeout = timeout_ms

    def watchdog_feed(self):
        self.watchdog_feeds += 1
