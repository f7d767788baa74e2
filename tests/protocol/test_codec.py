# Frame encoding and decoding, run on CPython and both MicroPython ports.
import unittest

import vigil_protocol as p
from protocol_helpers import rejection
from vigil_protocol import mac

KEY = bytes(range(32))
DEV = 0x01020304


class CoreAlarm(unittest.TestCase):
    def test_every_kind_round_trips_in_20_bytes(self):
        for counter, kind in enumerate(p.KINDS, 1):
            ref = 0
            c = counter + 100
            if kind == p.DOUBLE_TAP:
                ref = c - 1
            data = p.encode(p.Alarm(DEV, c, kind, ref=ref), KEY)
            self.assertEqual(len(data), 20)
            frame = p.decode(data, KEY, p.UP)
            self.assertEqual(frame.kind, kind)
            self.assertEqual(frame.ref, ref)
            self.assertEqual(frame.device_id, DEV)
            self.assertEqual(frame.counter, c)

    def test_double_tap_names_the_alarm_it_answers(self):
        frame = p.decode(p.encode(p.Alarm(DEV, 70000, "DOUBLE_TAP", ref=5000), KEY), KEY, p.UP)
        self.assertEqual(frame.ref, 5000)
        self.assertEqual(frame.kind_name, "DOUBLE_TAP")

    def test_double_tap_too_far_from_its_alarm_is_refused_when_encoding(self):
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Alarm(DEV, 70000, "DOUBLE_TAP", ref=1), KEY)
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Alarm(DEV, 10, "DOUBLE_TAP", ref=10), KEY)

    def test_extensions_round_trip_and_lengthen_the_frame(self):
        alarm = p.Alarm(DEV, 9, "SOS", location=(-338688000, 1512093000, 25), age=12,
                        battery=55)
        data = p.encode(alarm, KEY)
        self.assertEqual(len(data), 20 + 12 + 6 + 3)
        frame = p.decode(data, KEY, p.UP)
        self.assertEqual(frame.location, (-338688000, 1512093000, 25))
        self.assertEqual(frame.age, 12)
        self.assertEqual(frame.battery_ext, 55)


class OtherFrames(unittest.TestCase):
    def test_checkin_round_trip(self):
        data = p.encode(p.CheckIn(DEV, 3, battery=64, flags=0x05, interval=900), KEY)
        frame = p.decode(data, KEY, p.UP)
        self.assertEqual((frame.battery, frame.flags, frame.interval), (64, 5, 900))

    def test_ack_and_action_round_trip(self):
        for stage in p.STAGES:
            frame = p.decode(p.encode(p.Ack(DEV, 8, 77, stage), KEY), KEY, p.DOWN)
            self.assertEqual((frame.ref, frame.stage), (77, stage))
        for action in p.ACTIONS:
            frame = p.decode(p.encode(p.Action(DEV, 8, 77, action), KEY), KEY, p.DOWN)
            self.assertEqual((frame.ref, frame.action), (77, action))

    def test_names_and_codes_are_interchangeable(self):
        a = p.encode(p.Action(DEV, 8, 77, "PROMPT_DOUBLE_TAP"), KEY)
        b = p.encode(p.Action(DEV, 8, 77, p.PROMPT_DOUBLE_TAP), KEY)
        self.assertEqual(a, b)


class Authentication(unittest.TestCase):
    def test_an_uplink_never_verifies_as_a_downlink(self):
        # The same header and body signed in each direction give different tags.
        up = p.DeviceKey(KEY).tag(p.UP, b"same bytes")
        down = p.DeviceKey(KEY).tag(p.DOWN, b"same bytes")
        self.assertNotEqual(up, down)
        self.assertEqual(len(up), 8)

    def test_every_single_bit_flip_is_rejected(self):
        data = p.encode(p.Alarm(DEV, 5, "DURESS"), KEY)
        for i in range(len(data)):
            for bit in range(8):
                bad = bytearray(data)
                bad[i] ^= 1 << bit
                self.assertIsNotNone(rejection(p.decode, bytes(bad), KEY, p.UP))

    def test_hmac_matches_rfc_4231(self):
        # RFC 4231 test cases 1 and 2 (HMAC-SHA-256), computed over hashlib alone.
        self.assertEqual(mac.hmac_sha256(b"\x0b" * 20, b"Hi There").hex(),
                         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        self.assertEqual(mac.hmac_sha256(b"Jefe", b"what do ya want for nothing?").hex(),
                         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")

    def test_device_key_tag_is_truncated_hmac_of_label_and_message(self):
        full = mac.hmac_sha256(KEY, b"VIGIL-UP" + b"msg")
        self.assertEqual(p.DeviceKey(KEY).tag(p.UP, b"msg"), full[:8])

    def test_constant_time_compare(self):
        self.assertTrue(mac.equal(b"abcdefgh", b"abcdefgh"))
        self.assertFalse(mac.equal(b"abcdefgh", b"abcdefgx"))
        self.assertFalse(mac.equal(b"abc", b"abcd"))

    def test_key_material_never_shows(self):
        key = p.DeviceKey(KEY)
        self.assertTrue(KEY.hex() not in repr(key))
        self.assertTrue(KEY.hex()[:16] not in str(key))

    def test_keys_must_be_256_bits(self):
        for bad in (b"", bytes(16), bytes(33), "x" * 32):
            with self.assertRaises(p.LocalProtocolError):
                p.DeviceKey(bad)


class Rejections(unittest.TestCase):
    def test_sizes(self):
        data = p.encode(p.Alarm(DEV, 5, "SOS"), KEY)
        self.assertEqual(rejection(p.decode, data[:16], KEY, p.UP), "truncated")
        self.assertEqual(rejection(p.decode, b"", KEY, p.UP), "truncated")
        self.assertEqual(rejection(p.decode, bytes(p.MAX_FRAME + 1), KEY, p.UP), "oversized")

    def test_peek_reads_the_header_without_a_key(self):
        header = p.peek(p.encode(p.CheckIn(DEV, 77), KEY))
        self.assertEqual((header.name, header.device_id, header.counter, header.direction),
                         ("checkin", DEV, 77, p.UP))

    def test_remote_errors_say_it_was_the_peer(self):
        try:
            p.decode(bytes(20), KEY, p.UP)
        except p.ProtocolError as exc:
            self.assertTrue(isinstance(exc, p.RemoteProtocolError))
            self.assertEqual(exc.reason, "unsupported_version")
        else:
            self.fail("zero bytes decoded")

    def test_caller_misuse_is_a_local_error(self):
        for bad in (lambda: p.encode(p.Alarm(0, 1, "SOS"), KEY),
                    lambda: p.encode(p.Alarm(DEV, 0, "SOS"), KEY),
                    lambda: p.encode(p.Alarm(DEV, 2 ** 32, "SOS"), KEY),
                    lambda: p.Alarm(DEV, 1, "PANIC"),
                    lambda: p.encode(p.Alarm(DEV, 2, "SOS", ref=1), KEY),
                    lambda: p.encode(p.CheckIn(DEV, 1, battery=101), KEY),
                    lambda: p.encode(p.Ack(DEV, 1, 0, "RECEIVED"), KEY),
                    lambda: p.encode(p.Alarm(DEV, 1, "SOS", location=(10 ** 9, 0, 0)), KEY),
                    lambda: p.encode(p.CheckIn(DEV, 1, location=(0, 0, 0)), "k"),
                    lambda: p.decode(b"", KEY, "sideways")):
            with self.assertRaises(p.LocalProtocolError):
                bad()


# Every name the package exports. On MicroPython they are resolved on first use (the package's
# __getattr__), so the list is spelled out here and checked against CPython's package.
EXPORTS = (
    "ACKNOWLEDGED ACTIONS BATTERY_UNKNOWN DELIVERED DOUBLE_TAP DOWN DOWNLINK_WINDOW DURESS FALL "
    "FLAG_ALARM_OPEN "
    "FLAG_CHARGING FLAG_FAULT FLAG_LOW_BATTERY FLAG_OUTBOX_PENDING HELP_DISPATCHED KEY_LEN KINDS "
    "LOW_BATTERY MAX_FRAME NEW NO_MOTION PROMPT_DOUBLE_TAP PROTOCOL_VERSION RECEIVED REJECTIONS "
    "RESOLVED RETRANSMISSION SOS STAGES TAG_LEN TYPE_NAMES UP Ack Action Alarm BadExtension "
    "BadField BadMac BleKey CheckIn CounterReservation CounterReuse DeviceKey LocalProtocolError "
    "Oversized ProtocolError Receipt RemoteProtocolError ReplayWindow StaleCounter Truncated "
    "UnknownKind "
    "UnknownType UnsupportedVersion WrongDirection decode encode peek short_id "
    "beacon_id ble_id counters errors frames mac window"
).split()


class PackageNames(unittest.TestCase):
    def test_every_exported_name_resolves_on_this_interpreter(self):
        for name in EXPORTS:
            self.assertTrue(getattr(p, name) is not None, name)
        self.assertTrue(p.SOS == p.frames.SOS and p.NEW == p.window.NEW)
        self.assertTrue(p.RemoteProtocolError is p.errors.RemoteProtocolError)

    def test_unknown_names_are_attribute_errors(self):
        with self.assertRaises(AttributeError):
            p.NO_SUCH_NAME

    def test_the_list_is_what_cpython_exports(self):
        import sys
        if sys.implementation.name != "cpython":
            return
        public = set(n for n in dir(p) if not n.startswith("_"))
        self.assertEqual(public, set(EXPORTS))
