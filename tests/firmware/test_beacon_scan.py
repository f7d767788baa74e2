# What a scan heard (vigil_fw.beacons), run by pytest on CPython and on the MicroPython unix
# port (test_location_micropython.py): iBeacon and Eddystone-UID payloads as real beacons
# advertise them, everything else ignored, malformed payloads counted, the strongest N kept
# with their strongest RSSI, the entries the protocol carries, and no allocation per advert.
import gc
import unittest

import vigil_protocol as p
from vigil_fw.beacons import Strongest
from vigil_protocol.beacon_id import short_id

UUID = bytes([0xE2, 0xC5, 0x6D, 0xB5, 0xDF, 0xFB, 0x48, 0xD2, 0xB0, 0x60, 0xD0, 0xF5, 0xA7, 0x10,
              0x96, 0xE0])
FLAGS = bytes([0x02, 0x01, 0x06])


def ibeacon(major, minor, power=0xC5):
    """An iBeacon advertisement: flags, then Apple's manufacturer data."""
    ident = UUID + bytes([major >> 8, major & 0xFF, minor >> 8, minor & 0xFF])
    return FLAGS + bytes([0x1A, 0xFF, 0x4C, 0x00, 0x02, 0x15]) + ident + bytes([power]), ident


def eddystone(instance, rfu=True):
    """An Eddystone-UID advertisement: flags, the 0xFEAA service list, then its service data."""
    ident = bytes(range(0x10, 0x1A)) + bytes([0, 0, 0, 0, instance >> 8, instance & 0xFF])
    data = bytes([0xAA, 0xFE, 0x00, 0xEE]) + ident + (bytes(2) if rfu else b"")
    return FLAGS + bytes([0x03, 0x03, 0xAA, 0xFE, len(data) + 1, 0x16]) + data, ident


class Parsing(unittest.TestCase):
    def test_an_ibeacon_is_kept_by_its_short_id(self):
        adv, ident = ibeacon(1, 2)
        heard = Strongest()
        self.assertTrue(heard.advert(adv, -61))
        self.assertEqual(heard.entries(0), (0, ((short_id("ibeacon", ident), -61),)))

    def test_eddystone_uid_with_and_without_its_reserved_bytes(self):
        for rfu in (True, False):
            adv, ident = eddystone(7, rfu)
            heard = Strongest()
            self.assertTrue(heard.advert(adv, -70))
            self.assertEqual(heard.entries(0)[1], ((short_id("eddystone", ident), -70),))

    def test_other_advertisements_are_not_beacons(self):
        adv, _ = ibeacon(1, 2)
        edd, _ = eddystone(1)
        others = (
            FLAGS + bytes([0x05, 0x09]) + b"Bose",  # a name only
            adv.replace(bytes([0x4C, 0x00]), bytes([0x59, 0x00])),  # another company's data
            adv.replace(bytes([0x02, 0x15]), bytes([0x10, 0x05]), 1),  # Apple, not iBeacon
            edd.replace(bytes([0xAA, 0xFE, 0x00, 0xEE]), bytes([0xAA, 0xFE, 0x10, 0xEE])),  # URL
            edd.replace(bytes([0x16, 0xAA, 0xFE]), bytes([0x16, 0x0F, 0x18])),  # battery service
            b"",
        )
        heard = Strongest()
        for other in others:
            self.assertFalse(heard.advert(other, -40), other)
        self.assertEqual((heard.other, heard.malformed, heard.entries(0)), (6, 0, None))

    def test_malformed_payloads_are_counted_and_nothing_kept(self):
        adv, _ = ibeacon(1, 2)
        heard = Strongest()
        for bad in (adv[:-1], FLAGS + bytes([0x1F, 0xFF, 0x4C]), bytes([0x03, 0x01])):
            self.assertFalse(heard.advert(bad, -40))
        self.assertEqual((heard.malformed, heard.entries(0)), (3, None))

    def test_a_zero_length_ends_the_payload(self):
        adv, _ = ibeacon(1, 2)
        heard = Strongest()
        self.assertFalse(heard.advert(FLAGS + bytes(3) + adv[3:], -40))  # zeros, then a beacon
        self.assertEqual(heard.entries(0), None)

    def test_rssi_not_available_is_ignored_and_others_are_held_in_range(self):
        heard = Strongest()
        heard.advert(ibeacon(1, 1)[0], 127)
        self.assertEqual(heard.entries(0), None)
        heard.advert(ibeacon(1, 1)[0], 40)
        heard.advert(ibeacon(1, 2)[0], -128)
        self.assertEqual([r for _, r in heard.entries(0)[1]], [20, -127])


class Keeping(unittest.TestCase):
    def test_the_strongest_rssi_of_a_beacon_is_kept(self):
        heard = Strongest()
        adv, ident = ibeacon(3, 4)
        for rssi in (-80, -55, -90):
            heard.advert(adv, rssi)
        self.assertEqual(heard.entries(0)[1], ((short_id("ibeacon", ident), -55),))
        self.assertEqual(heard.beacons, 3)

    def test_only_the_strongest_n_are_kept_strongest_first(self):
        heard = Strongest(3)
        rssis = {1: -90, 2: -50, 3: -75, 4: -60, 5: -95, 6: -70}
        for minor, rssi in rssis.items():
            heard.advert(ibeacon(9, minor)[0], rssi)
        got = heard.entries(0)[1]
        want = [(short_id("ibeacon", ibeacon(9, m)[1]), rssis[m]) for m in (2, 4, 6)]
        self.assertEqual(list(got), want)

    def test_a_weak_newcomer_does_not_push_out_a_stronger_one(self):
        heard = Strongest(1)
        heard.advert(ibeacon(1, 1)[0], -60)
        heard.advert(ibeacon(1, 2)[0], -60)  # a tie keeps the first
        heard.advert(ibeacon(1, 3)[0], -80)
        self.assertEqual(heard.entries(0)[1][0][0], short_id("ibeacon", ibeacon(1, 1)[1]))

    def test_most_trims_and_clear_starts_again(self):
        heard = Strongest()
        for minor in range(5):
            heard.advert(ibeacon(1, minor)[0], -50 - minor)
        self.assertEqual(len(heard.entries(0, most=2)[1]), 2)
        heard.clear()
        self.assertEqual(heard.entries(0), None)

    def test_beacon_kinds_and_access_points_never_mix(self):
        heard = Strongest()
        heard.advert(ibeacon(1, 1)[0], -50)
        heard.advert(eddystone(1)[0], -51)
        heard.access_point(bytes([0xA4, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5]), -52)
        self.assertFalse(heard.access_point(b"\x01\x02", -40))
        kinds = [sid for sid, _ in heard.entries(0)[1]]
        self.assertEqual(kinds, [short_id("ibeacon", ibeacon(1, 1)[1]),
                                 short_id("eddystone", eddystone(1)[1]),
                                 short_id("wifi", bytes([0xA4, 0xB1, 0xC2, 0xD3, 0xE4, 0xF5]))])

    def test_the_scan_age_counts_from_its_end_rounded_up(self):
        heard = Strongest()
        heard.advert(ibeacon(1, 1)[0], -50)
        heard.finish(10000)
        self.assertEqual(heard.entries(10000)[0], 0)
        self.assertEqual(heard.entries(12001)[0], 3)


class IntoAFrame(unittest.TestCase):
    def test_the_entries_are_what_an_alarm_carries(self):
        heard = Strongest()
        for minor, rssi in ((1, -70), (2, -48), (3, -70), (4, -99), (5, -61), (6, -100)):
            heard.advert(ibeacon(2, minor)[0], rssi)
        heard.finish(0)
        key = bytes(32)
        frame = p.Alarm(7, 9, "SOS", beacons=heard.entries(4000))
        data = p.encode(frame, key, 2, size=48)
        self.assertEqual(len(data), 48)
        self.assertEqual(p.decode(data, key, p.UP).beacons, heard.entries(4000))


class Allocation(unittest.TestCase):
    def test_taking_advertisements_allocates_nothing(self):
        if not hasattr(gc, "mem_alloc"):
            self.skipTest("CPython has no gc.mem_alloc (MicroPython only)")
        adverts = [ibeacon(1, m)[0] for m in range(8)] + [eddystone(i)[0] for i in range(3)]
        adverts += [FLAGS + bytes([0x05, 0x09]) + b"Bose", adverts[0][:-1]]
        heard = Strongest()
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for rssi in range(-90, -40, 5):
            for adv in adverts:
                heard.advert(adv, rssi)
        used = gc.mem_alloc() - before
        gc.enable()
        self.assertEqual(used, 0)
        self.assertEqual(heard.beacons, 110)
