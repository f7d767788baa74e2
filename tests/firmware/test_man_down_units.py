# Man-down's parts, run by pytest on CPython and on the MicroPython unix port
# (test_man_down.py runs them there): the pre-alarm table, the man_down config and its bounds,
# the detectors' time while the sampler sleeps, the LIS3DH's FIFO and INT1 set-up and its
# allocation-free batch read, and the simulated board's accelerometer.
import gc
import unittest
from array import array

import traces
from vigil_fw import ConfigError
from vigil_fw import app, mandown
from vigil_fw.config import Config
from vigil_fw.falls import FallDetector, NoMotionDetector
from vigil_fw.feedback import PATTERNS, pulses
from vigil_fw.lis3dh import LIS3DH
from vigil_fw.mandown import ManDown

try:
    import micropython  # noqa: F401
    ON_MICROPYTHON = True
except ImportError:
    ON_MICROPYTHON = False

T0 = 1000
# mandown.py's numbers: private consts there (MicroPython keeps no names for them), checked
# against its names on CPython (test_the_numbers_are_mandowns_and_the_apps)
WATCHING, PRE_FALL, PRE_STILL = 0, 1, 2
FALL, STILL, CANCEL, REPEAT, EXPIRE = 0, 1, 2, 3, 4
NONE, CUE, CANCELLED, RAISE_FALL, RAISE_NO_MOTION = 45, 99, 120, 102, 110


class PreAlarmTable(unittest.TestCase):
    def setUp(self):
        self.md = ManDown(True, 120, 30)

    def test_a_report_starts_the_pre_alarm_and_its_cue(self):
        self.assertEqual(self.md.step(FALL, T0), CUE)
        self.assertEqual(self.md.state, PRE_FALL)
        self.assertEqual(self.md.due_at(), T0 + ManDown.REPEAT_MS)

    def test_the_cue_repeats_until_the_window_ends_then_the_alarm_is_raised(self):
        md = self.md
        md.step(STILL, T0)
        t = T0
        cues = 1
        while True:
            t = md.due_at()
            out = md.tick(t)
            if out != CUE:
                break
            cues += 1
        self.assertEqual((out, t), (RAISE_NO_MOTION, T0 + 30000))
        self.assertEqual(cues, (30000 - 1) // ManDown.REPEAT_MS + 1)
        self.assertEqual((md.state, md.due_at()), (WATCHING, None))
        self.assertEqual(md.tick(t + 60000), NONE)

    def test_a_fall_that_is_not_cancelled_raises_fall(self):
        self.md.step(FALL, T0)
        self.assertEqual(self.md.tick(T0 + 29999), CUE)  # a repeat, not the end
        self.assertEqual(self.md.tick(T0 + 30000), RAISE_FALL)

    def test_a_press_in_the_window_cancels_and_the_detectors_start_afresh(self):
        md = self.md
        for _ in range(500):
            md.feed(0, 0, 1000)
        self.assertEqual(md.still.still, 500)
        md.step(FALL, T0)
        self.assertEqual(md.step(CANCEL, T0 + 5000), CANCELLED)
        self.assertEqual((md.state, md.due_at(), md.still.still), (WATCHING, None, 0))
        self.assertEqual(md.tick(T0 + 30000), NONE)  # nothing raised later

    def test_one_pre_alarm_at_a_time_and_no_cancel_without_one(self):
        md = self.md
        self.assertEqual(md.step(CANCEL, T0), NONE)
        md.step(FALL, T0)
        self.assertEqual(md.step(STILL, T0 + 10), NONE)
        self.assertEqual(md.step(FALL, T0 + 20), NONE)
        self.assertEqual((md.state, md.started), (PRE_FALL, T0))

    def test_every_state_and_event_does_what_the_rules_say(self):
        expected = {
            (WATCHING, FALL): (PRE_FALL, CUE),
            (WATCHING, STILL): (PRE_STILL, CUE),
            (PRE_FALL, CANCEL): (WATCHING, CANCELLED),
            (PRE_STILL, CANCEL): (WATCHING, CANCELLED),
            (PRE_FALL, REPEAT): (PRE_FALL, CUE),
            (PRE_STILL, REPEAT): (PRE_STILL, CUE),
            (PRE_FALL, EXPIRE): (WATCHING, RAISE_FALL),
            (PRE_STILL, EXPIRE): (WATCHING, RAISE_NO_MOTION),
        }
        for state in range(3):
            for event in range(5):
                md = ManDown()
                md.state = state
                out = md.step(event, T0)
                self.assertEqual((md.state, out),
                                 expected.get((state, event), (state, NONE)),
                                 (state, event))

    def test_the_numbers_are_mandowns_and_the_apps(self):
        # (MicroPython compiles private consts away: CPython checks them)
        if ON_MICROPYTHON:
            return
        ours = (WATCHING, PRE_FALL, PRE_STILL, FALL, STILL, CANCEL, REPEAT, EXPIRE, NONE, CUE,
                CANCELLED, RAISE_FALL, RAISE_NO_MOTION)
        self.assertEqual(tuple(getattr(mandown, "_" + n) for n in (
            "WATCHING", "PRE_FALL", "PRE_STILL", "FALL", "STILL", "CANCEL", "REPEAT", "EXPIRE",
            "NONE", "CUE", "CANCELLED", "RAISE_FALL", "RAISE_NO_MOTION")), ours)
        self.assertEqual((app._MD_CANCEL, app._MD_NONE, app._MD_CUE, app._MD_CANCELLED,
                          app._MD_RAISE_FALL, app._MD_RAISE_NO_MOTION),
                         (CANCEL, NONE, CUE, CANCELLED, RAISE_FALL, RAISE_NO_MOTION))
        self.assertEqual(app._ON_MOVEMENT, 1)

    def test_the_pre_alarm_pattern_is_unlike_any_other(self):
        pre = pulses(PATTERNS["prealarm"])
        self.assertTrue(len(pre) >= 3)
        for name, pattern in PATTERNS.items():
            if name != "prealarm":
                self.assertNotEqual(pulses(pattern), pre, name)


class RestingAndSkipping(unittest.TestCase):
    def test_still_samples_make_it_rest_and_a_fall_under_way_keeps_it_reading(self):
        md = ManDown()
        for _ in range(ManDown.REST_MS // 10):
            md.feed(0, 0, 1000)
        self.assertTrue(md.resting())
        trace = traces.forward_fall(seed=1)
        impact = None
        for i in range(len(trace)):
            md.feed(*trace[i])
            if md.fall._impact >= 0 and impact is None:
                impact = i
            if impact is not None and md.fall._impact >= 0:
                self.assertFalse(md.resting(), i)  # lying still, but the fall is not told yet
        self.assertIsNotNone(impact)

    def test_unread_still_samples_count_towards_no_motion(self):
        md = ManDown(True, 30, 30)
        for _ in range(100):
            md.feed(3, -2, 1001)
        self.assertEqual(md.still_left_ms(), 29000)
        self.assertEqual(md.skip(2800), -1)
        self.assertEqual(md.still_left_ms(), 1000)
        self.assertEqual(md.skip(100), STILL)
        self.assertIsNone(md.still_left_ms())  # reported once
        self.assertEqual(md.skip(10000), -1)

    def test_skipping_keeps_the_fall_detectors_time_and_forgets_a_half_free_fall(self):
        d = FallDetector()
        for _ in range(50):
            d.feed(0, 0, 1000)
        for _ in range(5):
            d.feed(0, 0, 200)  # the start of a dip
        self.assertTrue(d.pending())
        d.skip(1000)
        self.assertFalse(d.pending())
        self.assertEqual(d._i, 1055)
        # a fall after the gap is still a fall
        self.assertEqual(sum(1 for s in traces.side_fall(seed=4) if d.feed(*s)), 1)

    def test_no_motion_off_never_reports_but_still_says_when_to_rest(self):
        md = ManDown(True, 0, 30)
        for _ in range(50):
            md.feed(0, 0, 1000)
        self.assertTrue(md.resting())
        self.assertIsNone(md.still_left_ms())
        self.assertEqual(md.skip(10 ** 6), -1)


GOOD = {"version": 1, "device_id": "00c0ffee", "key": "ab" * 32,
        "mqtt": {"host": "broker.local", "username": "00c0ffee", "password": "pw"}}


def config(man_down):
    data = dict(GOOD)
    data["man_down"] = man_down
    return Config(data)


class ManDownConfig(unittest.TestCase):
    def test_absent_is_off_and_an_empty_object_is_the_defaults(self):
        self.assertIsNone(Config(GOOD).man_down)
        self.assertEqual(config({}).man_down, (True, 120, 30))
        self.assertEqual(config({"fall": False, "no_motion_s": 0, "cancel_s": 60}).man_down,
                         (False, 0, 60))
        self.assertEqual(config({"no_motion_s": False}).man_down, (True, 0, 30))
        self.assertEqual(config({"no_motion_s": 30}).man_down[1], 30)
        self.assertEqual(config({"no_motion_s": 1800}).man_down[1], 1800)

    def test_each_mistake_names_its_setting(self):
        cases = [("on", "man_down must be an object"),
                 ({"fall": 1}, "man_down.fall must be true or false"),
                 ({"no_motion_s": 29}, "man_down.no_motion_s must be 0 (off) or from 30 to 1800"),
                 ({"no_motion_s": 1801}, "man_down.no_motion_s"),
                 ({"no_motion_s": True}, "man_down.no_motion_s"),
                 ({"no_motion_s": "120"}, "man_down.no_motion_s"),
                 ({"cancel_s": 9}, "man_down.cancel_s must be from 10 to 120"),
                 ({"cancel_s": 121}, "man_down.cancel_s"),
                 ({"no_motion": 120}, "man_down has no setting 'no_motion'")]
        for given, words in cases:
            try:
                config(given)
            except ConfigError as exc:
                self.assertIn(words, str(exc))
                self.assertTrue(str(exc).startswith("config: "))
            else:
                self.fail("accepted %r" % (given,))

    def test_the_bounds_are_the_detectors(self):
        self.assertEqual(config({}).man_down[1], NoMotionDetector.DEFAULT_S)
        for bad in (NoMotionDetector.MIN_S - 1, NoMotionDetector.MAX_S + 1):
            with self.assertRaises(ConfigError):
                config({"no_motion_s": bad})
            with self.assertRaises(ValueError):
                NoMotionDetector(bad)
        for good in (0, NoMotionDetector.MIN_S, NoMotionDetector.MAX_S):
            self.assertEqual(config({"no_motion_s": good}).man_down[1],
                             NoMotionDetector(good).timeout_s)


def raw(mg):
    value = ((mg // 2) << 4) & 0xFFFF
    return value & 0xFF, value >> 8


class FifoI2C:
    """machine.I2C's memory interface over a LIS3DH register bank with a FIFO: a burst read
    from OUT_X_L takes samples off the FIFO, 6 bytes each, the address rolling back."""

    def __init__(self):
        self.regs = bytearray(256)
        self.regs[0x0F] = 0x33
        self.writes = []
        self.fifo = []
        self.bursts = []

    def push(self, *samples):
        self.fifo.extend(samples)

    def readfrom_mem(self, addr, reg, n):
        out = bytearray(n)
        self.readfrom_mem_into(addr, reg, out)
        return bytes(out)

    def readfrom_mem_into(self, addr, reg, buf):
        reg &= 0x7F
        if reg == 0x2F:  # FIFO_SRC
            n = len(self.fifo)
            buf[0] = (0x40 if n >= 32 else 0) | (n & 0x1F) | (0x20 if n == 0 else 0)
            return
        if reg == 0x28 and self.regs[0x24] & 0x40:
            self.bursts.append(len(buf) // 6)
            for i in range(0, len(buf), 6):
                sample = self.fifo.pop(0)
                for k in range(3):
                    buf[i + 2 * k], buf[i + 2 * k + 1] = raw(sample[k])
            return
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]

    def writeto_mem(self, addr, reg, buf):
        self.writes.append((reg, buf[0]))
        self.regs[reg] = buf[0]


class Lis3dhFifo(unittest.TestCase):
    def test_start_streams_the_fifo_puts_taps_on_int2_and_leaves_int1_quiet(self):
        i2c = FifoI2C()
        LIS3DH(i2c).start()
        regs = dict(i2c.writes)
        self.assertEqual(regs[0x24] & 0x40, 0x40)            # FIFO on
        self.assertEqual(regs[0x2E], 0x80 | (LIS3DH.WATERMARK - 1))  # stream, watermark
        self.assertEqual(regs[0x21], 0x15)                    # high-pass on click and IA1
        self.assertEqual(regs[0x30], 0x2A)                    # X, Y or Z high
        self.assertEqual(regs[0x32], LIS3DH.ACTIVITY_MG // 32)
        self.assertEqual(regs[0x22], 0)                       # INT1: nothing yet
        self.assertEqual(regs[0x25], 0x80)                    # INT2: the tap engine
        self.assertEqual(i2c.writes[-1][0], 0x25)  # the tap interrupt enabled last

    def test_wake_on_says_what_int1_signals(self):
        i2c = FifoI2C()
        part = LIS3DH(i2c)
        for what, value in ((2, 0x04), (1, 0x40), (0, 0)):
            part.wake_on(what)
            self.assertEqual(i2c.regs[0x22], value)
        i2c.regs[0x31] = 0x40 | 0x20
        self.assertTrue(part.moving())
        i2c.regs[0x31] = 0
        self.assertFalse(part.moving())

    def test_a_batch_is_read_in_few_bursts_in_order_without_allocating(self):
        i2c = FifoI2C()
        part = LIS3DH(i2c)
        part.start()
        out = array("h", bytes(6 * 32))
        for n in (27, 32, 1, 0, 25):
            i2c.bursts = []
            samples = [(1000 - 2 * i, -500 + 4 * i, 2 * i - 30) for i in range(n)]
            i2c.push(*samples)
            self.assertEqual(part.read_mg(out), n)
            got = [(out[3 * i], out[3 * i + 1], out[3 * i + 2]) for i in range(n)]
            self.assertEqual(got, samples)
            self.assertEqual(sum(i2c.bursts), n)
            self.assertTrue(len(i2c.bursts) <= 5, i2c.bursts)
            self.assertEqual(i2c.fifo, [])

    def test_the_driver_itself_allocates_nothing_per_batch(self):
        if not ON_MICROPYTHON:
            return  # CPython allocates for every int
        part = LIS3DH(QuietI2C())
        out = array("h", bytes(6 * 32))
        part.read_mg(out)
        gc.collect()
        before = gc.mem_alloc()
        n = 0
        for _ in range(20):
            n += part.read_mg(out)
        self.assertEqual(gc.mem_alloc() - before, 0)
        self.assertEqual(n, 20 * 31)
        self.assertEqual((out[0], out[1], out[2]), (1000, -500, 0))


class QuietI2C:
    """A bank whose FIFO always holds 31 samples of (1000, -500, 0) mg, read without
    allocating (for the driver's allocation check)."""

    def readfrom_mem_into(self, addr, reg, buf):
        if reg & 0x7F == 0x2F:
            buf[0] = 31
            return
        i = 0
        while i < len(buf):
            buf[i], buf[i + 1] = 0x40, 0x1F      # 1000 mg: 500 << 4 = 0x1F40
            buf[i + 2], buf[i + 3] = 0x60, 0xF0  # -500 mg: -250 << 4 = 0xF060
            buf[i + 4], buf[i + 5] = 0, 0
            i += 6

    def writeto_mem(self, addr, reg, buf):
        pass


class SimAccelStandIn(unittest.TestCase):
    def test_it_has_the_parts_watermark_and_movement_threshold(self):
        from vigil_fw.hal_sim import SimAccel
        self.assertEqual((SimAccel.WATERMARK, SimAccel.ACTIVITY_MG, SimAccel.FIFO),
                         (LIS3DH.WATERMARK, LIS3DH.ACTIVITY_MG, 32))
