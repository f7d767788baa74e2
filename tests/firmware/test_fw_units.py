# Firmware units, run by pytest on CPython and on the MicroPython unix port
# (tests/test_micropython.py): gestures, the alarm table, config checks, flash records,
# the LIS3DH driver, the software tap detector, the MQTT link's packets and the Wi-Fi
# station's status checks.
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
        for _ in range(6):  # a long outage: the backoff has doubled to its cap
            for i in list(again.oldest_first()):
                again.sent(i)
        again.all_due()  # a link comes up
        self.assertEqual(again.wait_ms(), 0)
        for i in list(again.oldest_first()):
            again.sent(i)
        self.assertTrue(again.wait_ms() <= Outbox.RETRY_FIRST_MS * 5 // 4)


class OutboxKinds(unittest.TestCase):
    def test_a_v2_alarm_keeps_its_kind_and_a_file_from_older_firmware_still_loads(self):
        import vigil_protocol as p
        from vigil_fw.outbox import Outbox
        flash = MemoryFlash()
        key = bytes(32)
        legacy = p.encode(p.Alarm(0x00C0FFEE, 4, DURESS), key)  # v1, as older firmware wrote it
        write_atomic(flash, "ob/%08x" % 4, legacy)
        sealed = p.encode(p.Alarm(0x00C0FFEE, 9, SOS), key, version=2)  # its kind is encrypted
        Outbox(flash).add(9, SOS, sealed)
        box = Outbox(flash)
        got = []
        for i in box.oldest_first():
            got.append((box.counters[i], box.kinds[i], box.frame(i)))
        self.assertEqual(got, [(4, DURESS, legacy), (9, SOS, sealed)])


class SeenOnFlash(unittest.TestCase):
    def test_the_window_comes_back_after_a_reboot_and_a_torn_record_starts_empty(self):
        import vigil_protocol as p
        from vigil_fw.seen import FILE, SeenDownlinks
        flash = MemoryFlash()
        seen = SeenDownlinks(flash)
        for counter in (3, 7, 5):
            seen.record(counter, bytes([counter]) * 8)
        again = SeenDownlinks(flash)
        self.assertEqual(again.check(7, b"\x07" * 8), p.RETRANSMISSION)
        self.assertEqual(again.check(8, b"\x08" * 8), p.NEW)
        self.assertRaises(p.CounterReuse, again.check, 5, b"\x00" * 8)
        flash.files[FILE] = flash.files[FILE][:-1]  # torn
        self.assertEqual(SeenDownlinks(flash).check(7, b"\x07" * 8), p.NEW)


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


GNSS = {"uart": 1, "rx": 12, "tx": 13, "baud": 9600}


class GnssConfig(unittest.TestCase):
    """The gnss setting: absent is no GNSS; a module's UART, pins and baud, each wrong value
    refused in one line that names it; v1 refused (its frames cannot be sealed at one size)."""

    def message(self, gnss, protocol=2):
        try:
            Config(with_(gnss=gnss, protocol=protocol))
        except ConfigError as exc:
            return str(exc)
        return None

    def test_absent_is_no_gnss_and_a_good_one_loads_with_its_defaults(self):
        self.assertIsNone(Config(GOOD).gnss)
        self.assertEqual(Config(with_(gnss=GNSS)).gnss, (1, 12, 13, 9600))
        self.assertEqual(Config(with_(gnss={"rx": 12, "tx": 13})).gnss, (1, 12, 13, 9600))
        self.assertEqual(Config(with_(gnss={"uart": 2, "rx": 47, "tx": 48, "baud": 115200}))
                         .gnss, (2, 47, 48, 115200))

    def test_each_wrong_value_is_refused_in_one_line_naming_it(self):
        def gnss(**changes):
            out = dict(GNSS)
            out.update(changes)
            return out

        cases = [
            ("on", "config: gnss must be an object with uart, rx, tx, baud"),
            (gnss(pins=3), "config: gnss has no setting 'pins'"),
            (gnss(uart=0), "config: gnss.uart must be 1 or 2 (UART 0 is the console)"),
            (gnss(uart=True), "config: gnss.uart must be 1 or 2 (UART 0 is the console)"),
            (gnss(rx=None), "config: gnss.rx must be a free GPIO"),
            (gnss(rx=4), "config: gnss.rx must be a free GPIO"),      # the SOS button
            (gnss(rx=17), "config: gnss.rx must be a free GPIO"),     # the blue LED
            (gnss(tx=43), "config: gnss.tx must be a free GPIO"),     # UART0, the console
            (gnss(tx=0), "config: gnss.tx must be a free GPIO"),      # a strapping pin
            (gnss(tx=30), "config: gnss.tx must be a free GPIO"),     # the flash
            (gnss(tx=49), "config: gnss.tx must be a free GPIO"),
            (gnss(tx="13"), "config: gnss.tx must be a free GPIO"),
            (gnss(tx=12), "config: gnss.rx and gnss.tx must be different pins"),
            (gnss(baud=9601), "config: gnss.baud must be one of 4800, 9600, 19200, 38400, "
                              "57600, 115200"),
        ]
        for given, words in cases:
            msg = self.message(given)
            self.assertIsNotNone(msg, given)
            self.assertTrue(msg.startswith(words), (given, msg))
            self.assertTrue("\n" not in msg)
        self.assertEqual(self.message(GNSS, protocol=1),
                         "config: gnss needs protocol 2 (v1 frames cannot be sealed at one size)")


class BeaconsConfig(unittest.TestCase):
    def message(self, beacons, protocol=2):
        try:
            Config(with_(beacons=beacons, protocol=protocol))
        except ConfigError as exc:
            return str(exc)
        return None

    def test_absent_is_no_scans_and_a_good_one_loads_with_its_defaults(self):
        self.assertIsNone(Config(GOOD).beacons)
        self.assertEqual(Config(with_(beacons={})).beacons, (1200, False))
        self.assertEqual(Config(with_(beacons={"scan_ms": 300, "at_checkin": True})).beacons,
                         (300, True))

    def test_each_wrong_value_is_refused_in_one_line_naming_it(self):
        cases = [
            ([], "config: beacons must be an object with scan_ms, at_checkin"),
            ({"scan": 1}, "config: beacons has no setting 'scan'"),
            ({"scan_ms": 299}, "config: beacons.scan_ms must be from 300 to 5000"),
            ({"scan_ms": 5001}, "config: beacons.scan_ms must be from 300 to 5000"),
            ({"scan_ms": True}, "config: beacons.scan_ms must be from 300 to 5000"),
            ({"at_checkin": 1}, "config: beacons.at_checkin must be true or false"),
            ({}, None),
        ]
        for given, words in cases:
            self.assertEqual(self.message(given), words, given)
        self.assertEqual(self.message({}, protocol=1),
                         "config: beacons needs protocol 2 (v1 frames cannot be sealed at one "
                         "size)")


class WifiScanConfig(unittest.TestCase):
    WIFI = {"ssid": "site-net", "password": "hunter2-secret"}

    def message(self, wifi_scan, protocol=2, wifi=WIFI):
        try:
            Config(with_(wifi_scan=wifi_scan, protocol=protocol, wifi=wifi))
        except ConfigError as exc:
            return str(exc)
        return None

    def test_absent_is_no_scans_and_a_good_one_loads_with_its_default(self):
        self.assertIsNone(Config(GOOD).wifi_scan)
        self.assertEqual(Config(with_(wifi=self.WIFI, wifi_scan={})).wifi_scan, 1)
        self.assertEqual(Config(with_(wifi=self.WIFI, wifi_scan={"every": 12})).wifi_scan, 12)

    def test_each_wrong_value_is_refused_in_one_line_naming_it(self):
        cases = [
            ([], "config: wifi_scan must be an object with every"),
            ({"every_s": 1}, "config: wifi_scan has no setting 'every_s'"),
            ({"every": 0}, "config: wifi_scan.every must be from 1 to 1000 (check-ins)"),
            ({"every": 1001}, "config: wifi_scan.every must be from 1 to 1000 (check-ins)"),
            ({"every": True}, "config: wifi_scan.every must be from 1 to 1000 (check-ins)"),
            ({"every": 3}, None),
        ]
        for given, words in cases:
            self.assertEqual(self.message(given), words, given)
        self.assertEqual(self.message({}, wifi=None),
                         "config: wifi_scan needs wifi (the scan is the station's)")
        self.assertEqual(self.message({}, protocol=1),
                         "config: wifi_scan needs protocol 2 (v1 frames cannot be sealed at one "
                         "size)")


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
    def test_start_configures_double_tap_on_int2(self):
        i2c = FakeI2C()
        LIS3DH(i2c).start()
        regs = dict(i2c.writes)
        self.assertEqual(regs[0x20], 0x57)  # 100 Hz, XYZ
        self.assertEqual(regs[0x38], 0x2A)  # double click on X, Y, Z
        self.assertEqual(regs[0x25], 0x80)  # click interrupt on INT2 (INT1: man-down)
        self.assertEqual(regs[0x3A] & 0x7F, LIS3DH.TAP_THRESHOLD_MG // 31)
        self.assertEqual(regs[0x3B], LIS3DH.TAP_TIME_LIMIT_MS // 10)
        self.assertEqual(regs[0x3D], LIS3DH.TAP_WINDOW_MS // 10)
        self.assertEqual(i2c.writes[-1][0], 0x25)  # interrupt enabled last, once configured

    def test_wrong_part_is_refused(self):
        with self.assertRaises(AccelError):
            LIS3DH(FakeI2C(who=0x44)).start()

    def test_click_source(self):
        # (samples: the FIFO's batch read, test_man_down_units.py)
        i2c = FakeI2C()
        part = LIS3DH(i2c)
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


# -- the MQTT link's packets (vigil_fw.mqtt_packets) ------------------------------------------

def mqtt():
    from vigil_fw import mqtt_packets
    return mqtt_packets


def read(data, topic=b"vigil/down/00c0ffee"):
    """A whole received packet read as the link reads it, in place: (type, x, y)."""
    got = mqtt().read(memoryview(bytearray(data)), len(data), topic)
    assert got[0] == len(data), got
    return got[1:]


class MqttPackets(unittest.TestCase):
    def test_connect_has_the_will_the_credentials_and_a_persistent_session(self):
        mp = mqtt()
        buf = bytearray(128)
        n = mp.connect(buf, b"vigil-00c0ffee", 60, b"00c0ffee", b"secret",
                       b"vigil/status/00c0ffee", b"offline")
        body = (b"\x00\x04MQTT\x04"
                b"\xec"        # username, password, will retain, will QoS 1, will; clean 0
                b"\x00\x3c"    # keepalive 60 s
                b"\x00\x0evigil-00c0ffee\x00\x15vigil/status/00c0ffee\x00\x07offline"
                b"\x00\x0800c0ffee\x00\x06secret")
        self.assertEqual(bytes(buf[:n]), b"\x10" + bytes([len(body)]) + body)
        n = mp.connect(memoryview(buf), b"c", 5)
        self.assertEqual(bytes(buf[:n]), b"\x10\x0d\x00\x04MQTT\x04\x00\x00\x05\x00\x01c")

    def test_subscribe_publish_puback_ping_and_disconnect(self):
        mp = mqtt()
        buf = bytearray(64)
        n = mp.control(buf, 0x82, 0x1234, b"vigil/down/00c0ffee")  # SUBSCRIBE at QoS 1
        self.assertEqual(bytes(buf[:n]), b"\x82\x18\x12\x34\x00\x13vigil/down/00c0ffee\x01")
        n = mp.publish(buf, b"a/b", b"\x01\x02", 1, 7)
        self.assertEqual(bytes(buf[:n]), b"\x32\x09\x00\x03a/b\x00\x07\x01\x02")
        n = mp.publish(buf, b"s", b"online", 1, 8, retain=True)
        self.assertEqual(bytes(buf[:n]), b"\x33\x0b\x00\x01s\x00\x08online")
        n = mp.publish(memoryview(buf), b"s", memoryview(b"xy"))
        self.assertEqual(bytes(buf[:n]), b"\x30\x05\x00\x01sxy")
        self.assertEqual(bytes(buf[:mp.control(buf, 0x40, 0xBEEF)]), b"\x40\x02\xbe\xef")
        self.assertEqual(bytes(buf[:mp.control(buf, 0xC0)]), b"\xc0\x00")  # PINGREQ
        self.assertEqual(bytes(buf[:mp.control(buf, 0xE0)]), b"\xe0\x00")  # DISCONNECT

    def test_a_packet_that_does_not_fit_the_buffer_is_refused(self):
        mp = mqtt()
        with self.assertRaises(ValueError):
            mp.publish(bytearray(16), b"vigil/up/00c0ffee", b"x")
        with self.assertRaises(ValueError):
            mp.connect(bytearray(20), b"vigil-00c0ffee", 60)

    def test_remaining_lengths_of_one_to_four_bytes(self):
        mp = mqtt()
        buf = bytearray(16500)
        for payload, head in ((124, 2), (125, 3), (16380, 3), (16381, 4)):
            n = mp.publish(buf, b"t", bytes(payload))  # remaining length: 3 + payload
            self.assertEqual(n, head + 3 + payload)
            self.assertEqual(mp.read(memoryview(buf), n, b"t"), (n, 3, 0, head + 3))
            self.assertIsNone(mp.read(buf, head - 1, b"t"))  # the length not all there yet
            self.assertIsNone(mp.read(buf, n - 1, b"t"))
        with self.assertRaises(mp.MqttError):
            mp.read(b"\x30\xff\xff\xff\xff\x01", 6, b"t")

    def test_a_packet_read_a_byte_at_a_time_is_whole_only_at_its_last_byte(self):
        mp = mqtt()
        buf = bytearray(300)
        n = mp.publish(buf, b"vigil/down/00c0ffee", bytes(range(200)), 1, 99)
        for have in range(n + 1):
            got = mp.read(memoryview(buf), have, b"vigil/down/00c0ffee")
            self.assertEqual(got is not None, have == n, have)
        self.assertEqual(got, (n, 3, 99, n - 200))

    def test_a_downlink_too_long_for_the_buffer_is_read_as_far_as_its_packet_id(self):
        mp = mqtt()
        whole = bytearray(400)
        n = mp.publish(whole, b"vigil/down/00c0ffee", bytes(300), 1, 42)
        start = memoryview(whole)[:64]  # only this much fits in the receive buffer
        self.assertIsNone(mp.read(start, 63, b"vigil/down/00c0ffee"))
        self.assertEqual(mp.read(start, 64, b"vigil/down/00c0ffee")[:3], (n, 3, 42))
        with self.assertRaises(mp.MqttError):
            mp.read(memoryview(whole)[:10], 10, b"vigil/down/00c0ffee")

    def test_connack_codes_give_their_reasons(self):
        mp = mqtt()
        self.assertEqual(read(b"\x20\x02\x00\x00"), (2, 0, None))
        self.assertEqual(read(b"\x20\x02\x01\x00"), (2, 0, None))  # session present
        self.assertEqual(read(b"\x20\x02\x00\x05"), (2, 5, "not authorised"))
        self.assertEqual(read(b"\x20\x02\x00\x04"), (2, 4, "bad username or password"))
        self.assertEqual(read(b"\x20\x02\x00\x01"), (2, 1, "unacceptable protocol version"))
        self.assertEqual(read(b"\x20\x02\x00\x03"), (2, 3, "server unavailable"))
        self.assertEqual(read(b"\x20\x02\x00\x63"), (2, 99, "return code 99"))
        for bad in (b"\x20\x03\x00\x00\x00", b"\x20\x02\x02\x00", b"\x20\x02\x01\x05",
                    b"\x21\x02\x00\x00"):
            with self.assertRaises(mp.MqttError):
                read(bad)

    def test_suback_is_granted_refused_or_malformed(self):
        mp = mqtt()
        self.assertEqual(read(b"\x90\x03\x00\x05\x01"), (9, 5, 1))
        self.assertEqual(read(b"\x90\x03\x00\x05\x80"), (9, 5, 0x80))
        for bad in (b"\x90\x03\x00\x05\x03", b"\x90\x04\x00\x05\x01\x01",
                    b"\x90\x03\x00\x00\x01"):
            with self.assertRaises(mp.MqttError):
                read(bad)

    def test_puback_and_pingresp(self):
        mp = mqtt()
        self.assertEqual(read(b"\x40\x02\x12\x34"), (4, 0x1234, 0))
        self.assertEqual(read(b"\xd0\x00"), (13, 0, 0))
        for bad in (b"\x40\x02\x00\x00", b"\x40\x03\x00\x01\x00", b"\xd0\x01\x00",
                    b"\x42\x02\x00\x01"):
            with self.assertRaises(mp.MqttError):
                read(bad)

    def test_publish_gives_packet_id_and_payload_for_our_topic_only(self):
        mp = mqtt()
        data = b"\x32\x0a\x00\x03a/b\x00\x07XYZ"
        t, pid, at = read(data, b"a/b")
        self.assertEqual((t, pid, data[at:]), (3, 7, b"XYZ"))
        self.assertEqual(read(data, b"a/c"), (3, 7, -1))   # acknowledged, not handed on
        self.assertEqual(read(data, b"a/bc"), (3, 7, -1))
        self.assertEqual(read(b"\x30\x06\x00\x01tXYZ", b"t"), (3, 0, 5))
        for bad in (b"\x32\x07\x00\x09a/b\x00\x07",   # topic longer than the packet
                    b"\x32\x07\x00\x03a/b\x00\x00",   # packet id 0
                    b"\x32\x05\x00\x03a/b",           # no room for the packet id
                    b"\x30\x01\x00",                   # no room for the topic length
                    b"\x34\x07\x00\x03a/b\x00\x07",   # QoS 2
                    b"\x36\x07\x00\x03a/b\x00\x07"):  # QoS 3
            with self.assertRaises(mp.MqttError):
                read(bad, b"a/b")

    def test_packets_a_broker_never_sends_this_client_are_refused(self):
        mp = mqtt()
        for first in (0x00, 0x10, 0x22, 0x42, 0x50, 0x62, 0x70, 0x82, 0x91, 0xA2, 0xB0, 0xC0,
                      0xE0, 0xF0):
            with self.assertRaises(mp.MqttError):
                read(bytes([first, 2, 0, 1]))

    def test_garbage_raises_only_one_line_mqtt_errors(self):
        mp = mqtt()
        import random
        random.seed(7)
        reasons = set()
        for _ in range(5000):
            size = random.getrandbits(4) + 1
            data = bytearray(size)
            for i in range(size):
                data[i] = random.getrandbits(8)
            data[0] = (0x20, 0x30, 0x32, 0x40, 0x90, 0xD0, data[0])[random.getrandbits(3) % 7]
            have = size - random.getrandbits(2) % size  # a read may stop anywhere
            buf = memoryview(data)[:have] if random.getrandbits(1) else memoryview(data)
            try:
                mp.read(buf, have, b"vigil/down/00c0ffee")  # a full buffer, or room left
            except mp.MqttError as exc:
                reason = exc.args[0]
                self.assertTrue("\n" not in reason and len(reason) < 80, reason)
                reasons.add(reason.split()[0])  # kinds of reason, not every length seen
        self.assertTrue(len(reasons) >= 5, reasons)


# -- the board's Wi-Fi (vigil_fw.wifi) against a stand-in for MicroPython's `network` ---------

class FakeWLAN:
    def __init__(self, statuses):
        self.statuses = list(statuses)  # what status() says, in turn; the last one stays
        self.calls = []

    def status(self):
        if len(self.statuses) > 1:
            return self.statuses.pop(0)
        return self.statuses[0]

    def active(self, on):
        self.calls.append(("active", on))

    def config(self, **settings):
        self.calls.append(("config", settings))

    def connect(self, ssid, password):
        self.calls.append(("connect", ssid))


class FakeNetwork:
    """The names of the ESP32 port's `network` module that vigil_fw.wifi uses."""
    STA_IF = 0
    STAT_BEACON_TIMEOUT = 200
    STAT_NO_AP_FOUND = 201
    STAT_WRONG_PASSWORD = 202
    STAT_CONNECT_FAIL = 203
    STAT_HANDSHAKE_TIMEOUT = 204
    STAT_IDLE = 1000
    STAT_CONNECTING = 1001
    STAT_GOT_IP = 1010

    def WLAN(self, interface):
        return FakeWLAN([self.STAT_IDLE])


def wifi_with(statuses):
    import sys
    saved = sys.modules.get("network")
    sys.modules["network"] = FakeNetwork()
    try:
        from vigil_fw import wifi
    finally:
        if saved is None:
            del sys.modules["network"]
        else:
            sys.modules["network"] = saved
    wifi.WiFi.CHECK_MS = 1
    wifi.WiFi.CONNECT_MS = 200
    station = wifi.WiFi({"ssid": "site-net", "password": "hunter2-secret"})
    station.wlan = FakeWLAN(statuses)
    return wifi, station


def connect_result(station):
    import asyncio

    async def attempt():
        try:
            await station.connect()
            return None
        except OSError as exc:
            return exc

    return asyncio.run(attempt())


class WiFiStatus(unittest.TestCase):
    N = FakeNetwork

    def test_connected_already_does_nothing(self):
        _, station = wifi_with([self.N.STAT_GOT_IP])
        self.assertIsNone(connect_result(station))
        self.assertEqual(station.wlan.calls, [])

    def test_an_idle_station_is_started_and_waited_for(self):
        _, station = wifi_with([self.N.STAT_IDLE, self.N.STAT_CONNECTING,
                                self.N.STAT_CONNECTING, self.N.STAT_GOT_IP])
        self.assertIsNone(connect_result(station))
        self.assertEqual(station.wlan.calls, [("active", True), ("config", {"reconnects": 3}),
                                              ("connect", "site-net")])

    def test_a_station_still_trying_is_not_started_again(self):
        _, station = wifi_with([self.N.STAT_CONNECTING, self.N.STAT_CONNECTING,
                                self.N.STAT_GOT_IP])
        self.assertIsNone(connect_result(station))
        self.assertEqual(station.wlan.calls, [])

    def test_each_failure_names_its_reason_and_never_the_password(self):
        for status, words in ((self.N.STAT_WRONG_PASSWORD, "wifi: wrong password for site-net"),
                              (self.N.STAT_NO_AP_FOUND, "wifi: no access point site-net found"),
                              (self.N.STAT_CONNECT_FAIL, "wifi: site-net refused the connection"),
                              (15, "wifi: no handshake with site-net (wrong password?)"),
                              (self.N.STAT_BEACON_TIMEOUT,
                               "wifi: access point site-net stopped answering"),
                              (8, "wifi: no connection to site-net (status 8)")):
            wifi, station = wifi_with([self.N.STAT_IDLE, self.N.STAT_CONNECTING, status])
            error = connect_result(station)
            self.assertTrue(isinstance(error, wifi.WifiError) and isinstance(error, OSError))
            self.assertEqual(str(error), words)
            self.assertTrue("hunter2" not in str(error))
            # The next attempt starts the station again: it has given up.
            station.wlan.statuses = [status, self.N.STAT_GOT_IP]
            self.assertIsNone(connect_result(station))
            self.assertEqual(station.wlan.calls[-1], ("connect", "site-net"))

    def test_no_answer_within_the_deadline(self):
        _, station = wifi_with([self.N.STAT_IDLE, self.N.STAT_CONNECTING])
        self.assertEqual(str(connect_result(station)),
                         "wifi: no connection to site-net within 0s")
