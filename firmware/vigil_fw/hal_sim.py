# A simulated board with the same interface as hal_esp32.Board: buttons, accelerometer,
# battery, vibration/LED, watchdog and flash. It lets the firmware core run unchanged on the
# MicroPython unix port (tests, benchmarks) and on CPython (the simulator). The buttons and
# the tap engine push edges into the board's EdgeRing exactly as the real IRQs do.
from . import inputs
from .clock import sleep_ms
from .flash import Flash

REST = (0, 0, 1000)  # a still wrist: 1 g on z


class SimButton:
    def __init__(self, ring, down_code):
        self._ring = ring
        self._down = down_code  # the up edge is the next code

    async def hold(self, ms):
        self._ring.push(self._down)
        await sleep_ms(ms)
        self._ring.push(self._down + 1)

    async def presses(self, times, gap_ms=150, hold_ms=60):
        for _ in range(times):
            await self.hold(hold_ms)
            await sleep_ms(gap_ms)


class SimAccel:
    def __init__(self, ring, hardware_taps=False):
        self.hardware_taps = hardware_taps
        self._ring = ring
        self._queue = []

    def start(self):
        """The app wants samples from now on: what was fed before is gone, as it is on a
        part that was not being read."""
        self._queue = []

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
        self._ring.push(inputs.TAP)

    def double_tapped(self):
        return True


class SimBoard:
    name = "sim"

    def __init__(self, flash_root, hardware_taps=False, flash=None):
        self.flash = flash if flash is not None else Flash(flash_root)
        self.inputs = inputs.EdgeRing()
        self.sos_button = SimButton(self.inputs, inputs.SOS_DOWN)
        self.duress_button = SimButton(self.inputs, inputs.DURESS_DOWN)
        self.accel = SimAccel(self.inputs, hardware_taps)
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
