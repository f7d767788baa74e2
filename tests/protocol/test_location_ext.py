# The location extensions (SPEC section 4: 0x04 a fix with its age, 0x05 beacons, 0x06 Wi-Fi)
# and the one size a wearable with location on keeps; run on CPython and both MicroPython
# ports. The byte layouts themselves are pinned by the golden vectors (test_vectors).
import unittest

import vigil_protocol as p
from protocol_helpers import load_document, rejection, unhex
from vigil_protocol import frames

KEY = bytes(range(32))
DEV = 0x01020304
FIX = (515007800, -1275700, 9)


def entries(rssis):
    return tuple((bytes([0xB0, 0, 0, n]), rssi) for n, rssi in enumerate(rssis))


class ShortIds(unittest.TestCase):
    def test_golden_short_ids(self):
        golden = load_document()["beacon_ids"]
        self.assertEqual(sorted(g["kind"] for g in golden), ["eddystone", "ibeacon", "wifi"])
        for g in golden:
            self.assertEqual(p.short_id(g["kind"], unhex(g["identifier"])), unhex(g["short_id"]))

    def test_the_kind_is_part_of_the_id(self):
        ident = bytes(16)
        self.assertNotEqual(p.short_id("eddystone", ident),
                            p.short_id("ibeacon", ident + bytes(4))[:4])
        self.assertEqual(len(p.short_id("wifi", bytes(6))), 4)

    def test_wrong_length_or_kind_is_the_callers_fault(self):
        for kind, ident in (("ibeacon", bytes(16)), ("wifi", bytes(20)), ("zigbee", bytes(6))):
            with self.assertRaises(p.LocalProtocolError):
                p.short_id(kind, ident)


class RoundedUp(unittest.TestCase):
    def test_up_is_never_below_and_down_never_above_within_a_sixteenth(self):
        for value in list(range(0, 300)) + [1000, 3600, 4097, 65535, 507903, 507904]:
            up = frames.age_seconds(frames.age_code(value, True))
            down = frames.age_seconds(frames.age_code(value))
            self.assertTrue(down <= value <= up, value)
            self.assertTrue((up - value) * 16 <= value, value)

    def test_beyond_the_largest_code_is_255_either_way(self):
        for value in (507905, 10 ** 7):
            self.assertEqual(frames.age_code(value, True), 255)
            self.assertEqual(frames.age_code(value), 255)

    def test_a_fix_never_travels_fresher_or_more_accurate_than_it_is(self):
        for version in (1, 2):
            frame = p.decode(p.encode(p.Alarm(DEV, 5, "SOS", location=FIX[:2] + (45, 33)), KEY,
                                      version), KEY, p.UP)
            lat, lon, accuracy, fix_age = frame.location
            self.assertEqual((lat, lon), FIX[:2])
            self.assertTrue(accuracy >= 45 and fix_age >= 33, frame.location)
            self.assertEqual((accuracy, fix_age), (46, 34))

    def test_a_fix_without_age_stays_extension_1(self):
        data = p.encode(p.CheckIn(DEV, 6, location=FIX), KEY, 2)
        frame = p.decode(data, KEY, p.UP)
        self.assertEqual(frame.location, FIX)  # three fields: the age is unknown
        self.assertEqual(len(data), 32)


class Heard(unittest.TestCase):
    def test_beacons_and_wifi_round_trip_in_both_versions(self):
        beacons = (4, entries((-50, -61, -61)))
        wifi = (0, entries((-40,)))
        for version in (1, 2):
            frame = p.decode(p.encode(p.CheckIn(DEV, 7, beacons=beacons, wifi=wifi), KEY,
                                      version), KEY, p.UP)
            self.assertEqual(frame.beacons, beacons)
            self.assertEqual(frame.wifi, wifi)
            self.assertEqual(frame.location, None)

    def test_a_frame_without_them_has_none(self):
        frame = p.decode(p.encode(p.Alarm(DEV, 8, "SOS"), KEY, 2), KEY, p.UP)
        self.assertEqual((frame.beacons, frame.wifi), (None, None))

    def test_bad_entries_are_refused_when_encoding(self):
        for heard in ((0, ()), (0, entries((-50,) * 9)), (0, entries((-70, -50))),
                      (0, ((b"abcd", -50), (b"abcd", -60))), (0, ((b"abc", -50),)),
                      (0, entries((21,))), (0, entries((-128,))), (-1, entries((-50,)))):
            with self.assertRaises(p.LocalProtocolError):
                p.encode(p.Alarm(DEV, 9, "SOS", beacons=heard), KEY, 2)

    def test_acks_carry_none(self):
        ack = p.Ack(DEV, 1, 5, "RECEIVED")
        ack.beacons = (0, entries((-50,)))
        with self.assertRaises(p.LocalProtocolError):
            p.encode(ack, KEY, 2)

    def test_a_reordered_extension_signed_anew_is_rejected(self):
        good = p.encode(p.Alarm(DEV, 10, "SOS", beacons=(0, entries((-50, -60)))), KEY)
        body = bytearray(good[:-8])
        # swap the two rssi bytes: the order rule, not the MAC, must reject it
        i = 12 + 3  # header 9, body 3, type, length, age
        body[i + 4], body[i + 9] = body[i + 9], body[i + 4]
        forged = bytes(body) + p.DeviceKey(KEY).tag(p.UP, bytes(body))
        self.assertEqual(rejection(p.decode, forged, KEY, p.UP), "bad_extension")


class OneSize(unittest.TestCase):
    """SPEC section 4: with location on, every alarm and check-in is sealed at 48 bytes."""

    def uplinks(self):
        two = (0, entries((-50, -60)))
        five = (0, entries((-50, -60, -70, -80, -90)))
        fix = FIX + (3,)
        return [p.Alarm(DEV, 11, "DURESS"), p.Alarm(DEV, 12, "SOS", beacons=five),
                p.Alarm(DEV, 13, "FALL", location=fix, beacons=two),
                p.CheckIn(DEV, 14, interval=300), p.CheckIn(DEV, 15, wifi=(9, entries((-70,)))),
                p.CheckIn(DEV, 16, location=fix, beacons=two), p.CheckIn(DEV, 17, beacons=five)]

    def test_whatever_they_carry_alarms_and_checkins_are_48_bytes(self):
        sizes = set(len(p.encode(f, KEY, 2, size=48)) for f in self.uplinks())
        self.assertEqual(sizes, set((48,)))

    def test_the_documented_room_is_exact(self):
        # up to 5 beacons alone, 2 with a fix: one more does not fit in 48
        self.assertEqual(len(p.encode(p.Alarm(DEV, 18, "SOS",
                                              beacons=(0, entries((-50,) * 6))), KEY, 2,
                                      size=48)), 64)
        self.assertEqual(len(p.encode(p.Alarm(DEV, 19, "SOS", location=FIX + (1,),
                                              beacons=(0, entries((-50,) * 3))), KEY, 2,
                                      size=48)), 64)

    def test_padded_frames_decode_to_what_they_carry(self):
        for frame in self.uplinks():
            padded = p.decode(p.encode(frame, KEY, 2, size=48), KEY, p.UP)
            plain = p.decode(p.encode(frame, KEY, 2), KEY, p.UP)
            self.assertEqual(padded.fields(), plain.fields())

    def test_only_v2_sizes_and_only_v2_frames_are_padded(self):
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Alarm(DEV, 20, "SOS"), KEY, 2, size=40)
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Alarm(DEV, 21, "SOS"), KEY, 1, size=48)


class Saturated(unittest.TestCase):
    def test_what_decodes_encodes_again_even_at_the_largest_codes(self):
        # an accuracy of code 255 stands for 507,904 m: past 0x01's u16, still an 0x04 value
        frame = p.Alarm(DEV, 22, "SOS", location=FIX[:2] + (10 ** 6, 10 ** 7))
        for version in (1, 2):
            decoded = p.decode(p.encode(frame, KEY, version), KEY, p.UP)
            self.assertEqual(decoded.location[2:], (507904, 507904))
            again = p.decode(p.encode(decoded, KEY, version), KEY, p.UP)
            self.assertEqual(again.location, decoded.location)
