# Firmware units, run by pytest on CPython and on the MicroPython unix port
# (tests/test_micropython.py): gestures, the alarm table, config checks, flash records,
# the LIS3DH driver and the software tap detector.
import unittest

import traces
from vigil_fw import ConfigError
from vigil_fw import alarms as fsm
from vigil_fw.config import Config
from vigil_fw.counters import CounterStore
from vigil_fw.feedback import COLOURS, PATTERNS, pulses
from vigil_fw.flash import TMP, read_sealed, seal, unseal, write_atomic
from vigil_fw.gestures import DOWN, TICK, UP, DuressGesture, SosButton
from vigil_fw.lis3dh import LIS3DH, AccelError
from vigil_fw.taps import DoubleTapDetector

SOS = 1
DURESS = 2


class MemoryFlash:
    """A dict standing in for flash, with the same interface as vigil_fw.flash.Flash."""

    def __init__(self):
        self.files = {}

    def mkdir(self, name):
        pass

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.files[name] = bytes(data)

    def rename(self, old, new):
        self.files[new] = self.files.pop(old)

    def remove(self, name):
        self.files.pop(name, None)

    def listdir(self, name):
        prefix = name + "/"
        return sorted(k[len(prefix):] for k in self.files if k.startswith(prefix))

    def read_into(self, name, buf):
        data = self.files.get(name)
        if data is None:
            return -1
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n

    def exists(self, name):
        return name in self.files


class Gestures(unittest.TestCase):
    def test_four_quick_presses_are_the_duress_gesture(self):
        g = DuressGesture()
        self.assertEqual([g.press(t) for t in (0, 400, 800, 1200)], [False, False, False, True])

    def test_slow_or_too_few_presses_are_not(self):
        g = DuressGesture()
        self.assertEqual([g.press(t) for t in (0, 1100, 2200, 3300, 4400)], [False] * 5)
        g = DuressGesture()
        self.assertEqual([g.press(t) for t in (0, 300, 600)], [False] * 3)

    def test_sos_hold_arms_then_raises_after_the_cancel_window(self):
        b = SosButton()
        self.assertIsNone(b.feed(DOWN, 0))
        self.assertIsNone(b.feed(TICK, SosButton.HOLD_MS - 1))
        self.assertEqual(b.feed(TICK, SosButton.HOLD_MS), "armed")
        self.assertIsNone(b.feed(UP, SosButton.HOLD_MS + 100))
        self.assertEqual(b.feed(TICK, SosButton.HOLD_MS + SosButton.CANCEL_MS), "raise")

    def test_sos_press_in_the_cancel_window_cancels(self):
        b = SosButton()
        b.feed(DOWN, 0)
        b.feed(TICK, SosButton.HOLD_MS)
        b.feed(UP, SosButton.HOLD_MS + 50)
        self.assertEqual(b.feed(DOWN, SosButton.HOLD_MS + 500), "cancelled")
        self.assertIsNone(b.feed(TICK, SosButton.HOLD_MS + SosButton.CANCEL_MS + 10))

    def test_short_press_does_nothing(self):
        b = SosButton()
        b.feed(DOWN, 0)
        self.assertIsNone(b.feed(UP, 500))
        self.assertIsNone(b.feed(TICK, 5000))


LIFECYCLE = {
    (fsm.RAISED, fsm.EV_SENT): (fsm.SENT, None),
    (fsm.RAISED, fsm.EV_RECEIVED): (fsm.RECEIVED, "received"),
    (fsm.RAISED, fsm.EV_DELIVERED): (fsm.DELIVERED, "delivered"),
    (fsm.RAISED, fsm.EV_ACKNOWLEDGED): (fsm.ACKNOWLEDGED, "acknowledged"),
    (fsm.RAISED, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.RAISED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.RAISED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.SENT, fsm.EV_RECEIVED): (fsm.RECEIVED, "received"),
    (fsm.SENT, fsm.EV_DELIVERED): (fsm.DELIVERED, "delivered"),
    (fsm.SENT, fsm.EV_ACKNOWLEDGED): (fsm.ACKNOWLEDGED, "acknowledged"),
    (fsm.SENT, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.SENT, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.SENT, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.RECEIVED, fsm.EV_DELIVERED): (fsm.DELIVERED, "delivered"),
    (fsm.RECEIVED, fsm.EV_ACKNOWLEDGED): (fsm.ACKNOWLEDGED, "acknowledged"),
    (fsm.RECEIVED, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.RECEIVED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.RECEIVED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.DELIVERED, fsm.EV_ACKNOWLEDGED): (fsm.ACKNOWLEDGED, "acknowledged"),
    (fsm.DELIVERED, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.DELIVERED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.DELIVERED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.ACKNOWLEDGED, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.ACKNOWLEDGED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.ACKNOWLEDGED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.PROMPTED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.PROMPTED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.PROMPTED, fsm.EV_DOUBLE_TAP): (fsm.CONFIRMED, "confirmed"),
    (fsm.CONFIRMED, fsm.EV_HELP): (fsm.HELP_DISPATCHED, "help_dispatched"),
    (fsm.CONFIRMED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
    (fsm.HELP_DISPATCHED, fsm.EV_PROMPT): (fsm.PROMPTED, "prompt"),
    (fsm.HELP_DISPATCHED, fsm.EV_RESOLVED): (fsm.CLOSED, "resolved"),
}


# Events that take a fresh SOS alarm to each open state.
PATH_TO = {
    fsm.RAISED: (),
    fsm.SENT: (fsm.EV_SENT,),
    fsm.RECEIVED: (fsm.EV_RECEIVED,),
    fsm.DELIVERED: (fsm.EV_DELIVERED,),
    fsm.ACKNOWLEDGED: (fsm.EV_ACKNOWLEDGED,),
    fsm.PROMPTED: (fsm.EV_PROMPT,),
    fsm.CONFIRMED: (fsm.EV_PROMPT, fsm.EV_DOUBLE_TAP),
    fsm.HELP_DISPATCHED: (fsm.EV_HELP,),
}


class AlarmTable(unittest.TestCase):
    def setUp(self):
        self.flash = MemoryFlash()
        self.alarms = fsm.Alarms(self.flash)

    def test_sos_stages_show_only_what_is_true(self):
        self.alarms.add(7, SOS)
        shown = [self.alarms.apply(7, e) for e in (fsm.EV_SENT, fsm.EV_RECEIVED,
                                                   fsm.EV_DELIVERED, fsm.EV_PROMPT)]
        self.assertEqual(shown, [None, "received", "delivered", "prompt"])
        self.assertEqual(self.alarms.prompted(), 7)
        self.assertEqual(self.alarms.apply(7, fsm.EV_DOUBLE_TAP), "confirmed")
        self.assertEqual(self.alarms.apply(7, fsm.EV_RESOLVED), "resolved")
        self.assertEqual(self.alarms.open, {})

    def test_duress_never_shows_anything_and_is_never_prompted(self):
        self.alarms.add(9, DURESS)
        for event in (fsm.EV_SENT, fsm.EV_RECEIVED, fsm.EV_DELIVERED, fsm.EV_ACKNOWLEDGED,
                      fsm.EV_PROMPT, fsm.EV_DOUBLE_TAP, fsm.EV_HELP, fsm.EV_RESOLVED):
            self.assertIsNone(self.alarms.apply(9, event))
        self.assertIsNone(self.alarms.prompted())

    def test_stages_never_go_backwards(self):
        self.alarms.add(3, SOS)
        self.alarms.apply(3, fsm.EV_DELIVERED)
        self.assertIsNone(self.alarms.apply(3, fsm.EV_RECEIVED))
        self.assertEqual(self.alarms.state(3), fsm.DELIVERED)

    def test_double_tap_without_prompt_changes_nothing(self):
        self.alarms.add(3, SOS)
        self.assertIsNone(self.alarms.apply(3, fsm.EV_DOUBLE_TAP))
        self.assertIsNone(self.alarms.prompted())

    def test_state_survives_a_reboot(self):
        self.alarms.add(3, SOS)
        self.alarms.apply(3, fsm.EV_PROMPT)
        again = fsm.Alarms(self.flash)
        self.assertEqual(again.prompted(), 3)
        self.assertEqual(again.listing(), [(3, SOS, fsm.PROMPTED)])

    def test_every_transition_moves_between_known_states(self):
        self.assertEqual(len(fsm.TRANSITIONS), len(fsm.STATES) * (fsm.EV_DOUBLE_TAP + 1))
        self.assertEqual(len(fsm.PATTERN_NAMES), len(fsm.STATES))
        for cell in fsm.TRANSITIONS:
            self.assertTrue(cell == ord("-") or 0 <= cell - ord("0") < len(fsm.STATES), cell)

    def test_downlink_codes_give_their_events_by_an_offset(self):
        # app.on_downlink: event = first event of its kind + (code - first code)
        import vigil_protocol as p
        stages = {p.RECEIVED: fsm.EV_RECEIVED, p.DELIVERED: fsm.EV_DELIVERED}
        actions = {p.ACKNOWLEDGED: fsm.EV_ACKNOWLEDGED, p.PROMPT_DOUBLE_TAP: fsm.EV_PROMPT,
                   p.HELP_DISPATCHED: fsm.EV_HELP, p.RESOLVED: fsm.EV_RESOLVED}
        self.assertEqual(sorted(stages), sorted(p.STAGES))
        self.assertEqual(sorted(actions), sorted(p.ACTIONS))
        for code, event in stages.items():
            self.assertEqual(fsm.EV_RECEIVED + code - p.RECEIVED, event)
        for code, event in actions.items():
            self.assertEqual(fsm.EV_ACKNOWLEDGED + code - p.ACKNOWLEDGED, event)

    def test_every_state_and_event_does_what_the_lifecycle_says(self):
        # The whole table, cell by cell: (state, event) -> (next state, pattern shown);
        # every pair not listed changes nothing and shows nothing.
        for state in range(fsm.CLOSED):
            for event in range(fsm.EV_DOUBLE_TAP + 1):
                alarms = fsm.Alarms(MemoryFlash())
                alarms.add(5, SOS)
                for step in PATH_TO[state]:  # reach the state through the table itself
                    alarms.apply(5, step)
                self.assertEqual(alarms.state(5), state)
                shown = alarms.apply(5, event)
                want_state, want_shown = LIFECYCLE.get((state, event), (state, None))
                self.assertEqual(shown, want_shown, (state, event))
                if want_state == fsm.CLOSED:
                    self.assertFalse(5 in alarms.open, (state, event))
                else:
                    self.assertEqual(alarms.state(5), want_state, (state, event))


class OutboxBound(unittest.TestCase):
    def test_a_full_outbox_evicts_only_low_battery_and_no_motion(self):
        import vigil_protocol as p
        from vigil_fw.outbox import Outbox

        def add(counter, kind):
            frame = p.encode(p.Alarm(0x00C0FFEE, counter, kind), bytes(32))
            return box.add(counter, kind, frame)

        box = Outbox(MemoryFlash())
        self.assertTrue(add(1, p.LOW_BATTERY))
        for counter in range(2, Outbox.CAPACITY + 1):
            self.assertTrue(add(counter, SOS))
        self.assertFalse(add(100, p.NO_MOTION))  # an evictable kind never evicts another
        self.assertTrue(add(101, DURESS))  # takes the LOW_BATTERY alarm's place
        self.assertEqual((len(box), box.has(1)), (Outbox.CAPACITY, False))
        self.assertFalse(add(102, SOS))  # nothing left that may go
        self.assertEqual(len(box), Outbox.CAPACITY)


    def test_a_reboot_reloads_every_entry_and_sends_the_exact_bytes(self):
        import vigil_protocol as p
        from vigil_fw.outbox import Outbox
        flash = MemoryFlash()
        box = Outbox(flash)
        frames = {}
        for counter in (7, 3, 5):
            frames[counter] = p.encode(p.Alarm(0x00C0FFEE, counter, SOS), bytes(32))
            box.add(counter, SOS, frames[counter])
        flash.files["ob/%08x" % 9 + TMP] = b"torn"  # a write cut short: never sent
        again = Outbox(flash)
        order = [again.counters[i] for i in again.oldest_first()]
        self.assertEqual(order, [3, 5, 7])
        sent = [again.frame(i) for i in again.oldest_first()]
        self.assertEqual(sent, [frames[3], frames[5], frames[7]])
        self.assertFalse(("ob/%08x" % 9 + TMP) in flash.files)
        self.assertEqual(again.wait_ms(), 0)  # all due at once after a reboot
        for i in list(again.oldest_first()):
            again.sent(i)
        self.assertTrue(again.wait_ms() >= Outbox.RETRY_FIRST_MS * 3 // 4)


class CrashLoops(unittest.TestCase):
    def test_boots_that_do_not_last_lead_to_safe_mode_and_a_healthy_run_ends_it(self):
        from vigil_fw.bootguard import BootGuard
        flash = MemoryFlash()
        seen = []
        for _ in range(BootGuard.FAST_BOOTS + 1):
            seen.append(BootGuard(flash).safe)
        self.assertEqual(seen, [False] * BootGuard.FAST_BOOTS + [True])
        BootGuard(flash).healthy()
        self.assertFalse(BootGuard(flash).safe)


class EdgeRingOrder(unittest.TestCase):
    def test_edges_come_out_in_order_with_their_times_and_an_overrun_is_counted(self):
        from vigil_fw import inputs
        ring = inputs.EdgeRing()
        self.assertEqual(ring.pop(), -1)
        for i in range(40):  # 8 more than it holds: the oldest 8 are overwritten
            ring.push(i % 5)
            ring.times[(ring.head - 1) & 31] = 1000 + i  # as if 1 ms apart
        self.assertEqual(ring.lost, 8)
        got = []
        while True:
            code = ring.pop()
            if code < 0:
                break
            got.append((code, ring.time))
        want = []
        for i in range(8, 40):
            want.append((i % 5, 1000 + i))
        self.assertEqual(got, want)


class Patterns(unittest.TestCase):
    def test_every_pattern_is_whole_and_the_prompt_is_unlike_any_other(self):
        for name, pattern in PATTERNS.items():
            self.assertEqual(len(pattern) % 2, 1, name)
            self.assertTrue(pattern[0] < len(COLOURS) and pulses(pattern), name)
        prompt = pulses(PATTERNS["prompt"])
        others = [pulses(p) for n, p in PATTERNS.items() if n != "prompt"]
        self.assertTrue(prompt not in others and len(prompt) == 6)

    def test_every_pattern_the_alarm_table_can_ask_for_exists(self):
        for name in fsm.PATTERN_NAMES:
            self.assertTrue(name is None or name in PATTERNS)


GOOD = {"version": 1, "device_id": "00c0ffee", "key": "ab" * 32,
        "mqtt": {"host": "broker.local", "username": "00c0ffee", "password": "pw"}}


def with_(**changes):
    data = dict(GOOD)
    data["mqtt"] = dict(GOOD["mqtt"])
    for k, v in changes.items():
        if k.startswith("mqtt_"):
            data["mqtt"][k[5:]] = v
        elif v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return data


class ConfigChecks(unittest.TestCase):
    def message(self, data):
        try:
            Config(data)
        except ConfigError as exc:
            return str(exc)
        return None

    def test_a_good_config_loads_with_defaults(self):
        c = Config(GOOD)
        self.assertEqual((c.device_id, c.mqtt["port"], c.checkin_interval_s),
                         (0x00C0FFEE, 1883, 300))
        self.assertEqual(c.topic("up"), "vigil/up/00c0ffee")

    def test_each_mistake_names_its_key_and_hides_secrets(self):
        cases = [(with_(key="12"), "key"), (with_(device_id="xyz"), "device_id"),
                 (with_(version=2), "version"), (with_(mqtt_port=70000), "mqtt.port"),
                 (with_(mqtt_username="someone"), "mqtt.username"),
                 (with_(mqtt_tls=True), "mqtt.ca_file"), (with_(mqtt_prefix="a/b"), "mqtt.prefix"),
                 (with_(checkin_interval_s=1), "checkin_interval_s"),
                 (with_(counter_floor=-1), "counter_floor"),
                 (with_(mqtt_password=""), "mqtt.password")]
        for data, key in cases:
            msg = self.message(data)
            self.assertIsNotNone(msg, key)
            self.assertIn(key, msg)
            self.assertTrue("ab" * 32 not in msg and "pw" not in msg.split(":", 1)[1])


class CounterFloor(unittest.TestCase):
    def test_a_fresh_flash_starts_at_the_floor_and_a_used_one_never_goes_back(self):
        f = MemoryFlash()
        self.assertEqual(CounterStore(f).next(), 1)
        fresh = MemoryFlash()
        store = CounterStore(fresh, 5000)
        self.assertEqual([store.next(), store.next()], [5000, 5001])
        # After a reboot: the flash's reservation (past 5001) wins over a lower floor, and
        # a higher floor wins over the flash.
        self.assertTrue(CounterStore(fresh, 10).next() > 5001)
        self.assertEqual(CounterStore(fresh, 90000).next(), 90000)
        self.assertEqual(Config(with_(counter_floor=7)).counter_floor, 7)
        self.assertEqual(Config(GOOD).counter_floor, 0)


class FlashRecords(unittest.TestCase):
    def test_torn_records_are_refused(self):
        data = seal(b"hello")
        self.assertEqual(unseal(data), b"hello")
        self.assertIsNone(unseal(data[:-1]))
        self.assertIsNone(unseal(b"x" + data[1:]))

    def test_the_newest_intact_copy_wins(self):
        f = MemoryFlash()
        write_atomic(f, "n", b"\x05")
        f.write("n" + TMP, seal(b"\x09"))  # a newer copy whose rename was cut short
        self.assertEqual(read_sealed(f, "n", newest=lambda p: p[0]), b"\x09")
        f.remove("n")  # FAT: unlinked, not yet renamed
        self.assertEqual(read_sealed(f, "n"), b"\x09")


class FakeI2C:
    """machine.I2C's memory interface over a register bank."""

    def __init__(self, who=0x33):
        self.regs = bytearray(256)
        self.regs[0x0F] = who
        self.writes = []

    def readfrom_mem(self, addr, reg, n):
        reg &= 0x7F
        return bytes(self.regs[reg:reg + n])

    def writeto_mem(self, addr, reg, buf):
        self.writes.append((reg, buf[0]))
        self.regs[reg] = buf[0]


class Lis3dh(unittest.TestCase):
    def test_start_configures_double_tap_on_int1(self):
        i2c = FakeI2C()
        LIS3DH(i2c).start()
        regs = dict(i2c.writes)
        self.assertEqual(regs[0x20], 0x57)  # 100 Hz, XYZ
        self.assertEqual(regs[0x38], 0x2A)  # double click on X, Y, Z
        self.assertEqual(regs[0x22], 0x80)  # click interrupt on INT1
        self.assertEqual(regs[0x3A] & 0x7F, LIS3DH.TAP_THRESHOLD_MG // 31)
        self.assertEqual(regs[0x3B], LIS3DH.TAP_TIME_LIMIT_MS // 10)
        self.assertEqual(regs[0x3D], LIS3DH.TAP_WINDOW_MS // 10)
        self.assertEqual(i2c.writes[-1][0], 0x22)  # interrupt enabled last, once configured

    def test_wrong_part_is_refused(self):
        with self.assertRaises(AccelError):
            LIS3DH(FakeI2C(who=0x44)).start()

    def test_samples_and_click_source(self):
        i2c = FakeI2C()
        part = LIS3DH(i2c)
        # x = +1000 mg, y = -500 mg, z = 0 in 12-bit left-justified, 2 mg per digit
        for reg, mg in ((0x28, 1000), (0x2A, -500), (0x2C, 0)):
            raw = ((mg // 2) << 4) & 0xFFFF
            i2c.regs[reg], i2c.regs[reg + 1] = raw & 0xFF, raw >> 8
        self.assertEqual(part.read_mg(), (1000, -500, 0))
        i2c.regs[0x39] = 0x60
        self.assertTrue(part.double_tapped())
        i2c.regs[0x39] = 0x50  # single click
        self.assertFalse(part.double_tapped())


def detections(trace):
    d = DoubleTapDetector()
    return sum(1 for s in trace if d.feed(s[0], s[1], s[2]))


class TapDetector(unittest.TestCase):
    def test_double_taps_at_several_strengths_are_detected(self):
        for strength in (1200, 2000, 3500):
            self.assertEqual(detections(traces.double_tap(strength)), 1, strength)

    def test_single_and_light_taps_are_not(self):
        self.assertEqual(detections(traces.single_tap(3000)), 0)
        self.assertEqual(detections(traces.double_tap(500)), 0)

    def test_walking_running_and_a_fall_are_not(self):
        self.assertEqual(detections(traces.walking(60, seed=3)), 0)
        self.assertEqual(detections(traces.running(30, seed=4)), 0)
        self.assertEqual(detections(traces.fall(seed=5)), 0)
