# A simulated board with the same interface as hal_esp32.Board: buttons, accelerometer,
# battery, vibration/LED, watchdog and flash. It lets the firmware core run unchanged on the
# MicroPython unix port (tests, benchmarks) and on CPython (the simulator). The buttons and
# the tap engine push edges into the board's EdgeRing exactly as the real IRQs do, and the
# accelerometer stand-in feeds samples through a FIFO and INT1 as the LIS3DH does.
import asyncio
from array import array

from . import inputs
from .clock import Flag, sleep_ms, ticks_add, ticks_diff, ticks_ms
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
    """The LIS3DH as the firmware sees it (hal_esp32.Accel, lis3dh.py): it takes a sample every
    10 ms from the trace fed to it (then, the trace over, the wrist as the trace left it) into
    a FIFO of 32, the oldest giving way; INT1 (`flag`) rises for the FIFO watermark or for
    movement (an axis more than ACTIVITY_MG off its running average: the part's high-pass
    filter), as wake_on() says; its tap engine's interrupt pushes an edge into the EdgeRing.
    Its clock is a task of its own that runs only while it has something to signal: at rest,
    or with INT1 off, nothing in it wakes."""

    PERIOD_MS = 10         # 100 Hz
    FIFO = 32
    WATERMARK = 25         # as lis3dh.LIS3DH's
    ACTIVITY_MG = 128      # as lis3dh.LIS3DH's
    LOOK_MS = 250          # how often a playing trace is looked at for movement (the FIFO
                           # holds 320 ms: what led up to it is still there)

    def __init__(self, ring, hardware_taps=False):
        self.hardware_taps = hardware_taps
        self.present = True
        self.flag = Flag()     # INT1
        self._ring = ring
        self._fifo = array("h", bytes(6 * self.FIFO))
        self._head = 0         # the slot the next sample goes to
        self._count = 0
        self.overruns = 0      # samples that gave way unread
        self._source = None    # iterator over the samples still to come
        self._last = REST      # what the part reads once the trace is over
        self._next_at = ticks_ms()  # when the next sample is taken
        self._ax, self._ay, self._az = REST[0] << 4, REST[1] << 4, REST[2] << 4
        self._moved = False    # the movement interrupt's source (latched until moving())
        self._mode = 0         # lis3dh.ON_NOTHING, ON_MOVEMENT or ON_BATCH
        self._high = False     # INT1's level: an edge sets `flag` once
        self._poke = Flag()    # the clock: a trace, a read or a mode changed what is next
        self._clock = None

    # -- what the firmware calls (hal_esp32.Accel's interface) ------------------------------

    def start(self):
        self._run_clock()

    def wake_on(self, what):
        self._take()
        self._mode = what
        self._moved = False  # the movement interrupt looks from now on
        self._high = False
        self._line()
        self._run_clock()

    def moving(self):
        self._take()
        moved = self._moved
        self._moved = False
        return moved

    def read_mg(self, out):
        """Every sample in the FIFO, oldest first, into `out` (x, y, z in mg); how many."""
        self._take()
        n = self._count
        fifo = self._fifo
        j = (self._head - n) % self.FIFO * 3
        for i in range(n * 3):
            out[i] = fifo[j]
            j = j + 1 if j + 1 < self.FIFO * 3 else 0
        self._count = 0
        self._line()
        self._run_clock()
        return n

    def double_tapped(self):
        return True

    # -- what a test does to the wrist ------------------------------------------------------

    def feed(self, samples):
        """Play these samples (mg) from now on, after whatever still plays."""
        self._take()
        self._source = iter(samples) if self._source is None else _chain(self._source, samples)
        self._run_clock()

    def hw_double_tap(self):
        """The tap engine's interrupt fired."""
        self._ring.push(inputs.TAP)

    # -- the part -----------------------------------------------------------------------------

    def _take(self):
        """Take every sample whose time has come."""
        due = ticks_diff(ticks_ms(), self._next_at) // self.PERIOD_MS + 1
        if due <= 0:
            return
        if self._source is None and due > self.FIFO:
            # At rest a long time: the FIFO ends up full of the same sample, no movement in it.
            self.overruns += due - self.FIFO  # (those in the FIFO are counted as they go)
            self._next_at = ticks_add(self._next_at, (due - self.FIFO) * self.PERIOD_MS)
            x, y, z = self._last
            self._ax, self._ay, self._az = x << 4, y << 4, z << 4
            due = self.FIFO
        for _ in range(due):
            sample = self._last
            if self._source is not None:
                try:
                    sample = next(self._source)
                except StopIteration:
                    self._source = None
                else:
                    self._last = sample
            self._push(sample[0], sample[1], sample[2])
            self._next_at = ticks_add(self._next_at, self.PERIOD_MS)
        self._line()

    def _push(self, x, y, z):
        i = self._head * 3
        self._fifo[i], self._fifo[i + 1], self._fifo[i + 2] = x, y, z
        self._head = (self._head + 1) % self.FIFO
        if self._count == self.FIFO:
            self.overruns += 1
        else:
            self._count += 1
        limit = self.ACTIVITY_MG
        if abs(x - (self._ax >> 4)) > limit or abs(y - (self._ay >> 4)) > limit or \
                abs(z - (self._az >> 4)) > limit:
            self._moved = True
        self._ax += x - (self._ax >> 4)
        self._ay += y - (self._ay >> 4)
        self._az += z - (self._az >> 4)

    def _line(self):
        high = (self._mode == 2 and self._count >= self.WATERMARK) or (
            self._mode == 1 and self._moved)
        if high and not self._high:
            self.flag.set()  # the rising edge the board's IRQ sees
        self._high = high

    def _run_clock(self):
        if self._clock is not None:
            self._poke.set()  # it reconsiders what is next
        else:
            try:
                self._clock = asyncio.create_task(self._tick())
            except RuntimeError:
                pass  # no event loop yet (CPython): start() begins it

    async def _tick(self):
        while True:
            self._take()
            if self._mode == 2 and not self._high:
                wait = ticks_diff(self._next_at, ticks_ms()) + (
                    self.WATERMARK - self._count - 1) * self.PERIOD_MS
            elif self._mode == 2:
                wait = -1  # until the FIFO is read
            elif self._mode == 1 and self._source is not None and not self._high:
                wait = self.LOOK_MS
            else:
                self._clock = None  # nothing to signal until a trace, a read or a mode
                return
            if wait < 0:
                await self._poke.wait()
            else:
                # a plain sleep (a wait with a timeout holds two tasks' worth of heap); what
                # changed meanwhile is looked at when it ends
                await sleep_ms(max(0, wait))


def _chain(first, then):
    for sample in first:
        yield sample
    for sample in then:
        yield sample


class SimBoard:
    name = "sim"

    def __init__(self, flash_root, hardware_taps=False, flash=None, gnss=None, wifi_scan=None):
        """`gnss`: the config's gnss setting; given, the board has a GNSS module's UART
        (`gnss`, a SimUart), else None. `wifi_scan`: the config's; given, the board has a
        station whose scan (`wifi_scan()`, as hal_esp32's) hears `station.access_points`."""
        self.flash = flash if flash is not None else Flash(flash_root)
        self.gnss = None
        if gnss is not None:
            from .hal_sim_uart import SimUart  # (a module of its own: no GNSS, no class)
            self.gnss = SimUart()
        if wifi_scan is not None:
            from .hal_sim_wifi import SimStation
            self.station = SimStation()
            self.wifi_scan = self.station.scan
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
