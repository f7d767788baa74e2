# Protocol v2 (sealed frames), on CPython and both MicroPython ports: sizes, what travels in
# clear, the construction and key derivation, MAC before decryption, lateness and check-ins.
import struct
import sys
import unittest

import vigil_protocol as p
from protocol_helpers import rejection
from vigil_protocol import frames, mac

KEY = bytes(range(32))
DEV = 0x01020304
LABELS = {p.UP: (b"vigil/v2/enc/up", b"vigil/v2/mac/up"),
          p.DOWN: (b"vigil/v2/enc/down", b"vigil/v2/mac/down")}


def v2(frame, key=KEY):
    return p.encode(frame, key, version=2)


def seal(core, direction=p.UP, counter=7, size=20, device=DEV, key=KEY):
    """header | E(core | zeros) | tag, with a valid MAC: contents the encoder would not make."""
    buf = bytearray(struct.pack(">BII", 0x20, device, counter) + core)
    buf += bytes(size - len(buf))
    frames._seal(p.DeviceKey(key), direction, buf)
    return bytes(buf)


def open_by_hand(data, direction, key=KEY):
    """Decrypt and check a v2 frame with RFC 2104 HMAC alone, as SPEC section 5 says: the
    construction, independently of the codec's own code."""
    enc = mac.hmac_sha256(key, LABELS[direction][0] + b"\x01")
    mac_key = mac.hmac_sha256(key, LABELS[direction][1] + b"\x01")
    assert mac.hmac_sha256(mac_key, data[:-8])[:8] == data[-8:], "tag"
    stream = mac.hmac_sha256(enc, data[:9] + b"\x00") + mac.hmac_sha256(enc, data[:9] + b"\x01")
    body = data[9:-8]
    return bytes(body[i] ^ stream[i] for i in range(len(body)))


class Sizes(unittest.TestCase):
    def test_every_alarm_kind_and_every_checkin_is_20_bytes(self):
        for kind in p.KINDS:
            ref = 90 if kind == p.DOUBLE_TAP else 0
            self.assertEqual(len(v2(p.Alarm(DEV, 100, kind, ref=ref, age=4000))), 20)
        for battery, flags, interval in ((0, 0, 0), (100, 31, 65535), (255, 5, 300)):
            self.assertEqual(len(v2(p.CheckIn(DEV, 9, battery, flags, interval))), 20)

    def test_acks_and_actions_are_22_bytes(self):
        for stage in p.STAGES:
            self.assertEqual(len(v2(p.Ack(DEV, 1, 0xFFFFFFFF, stage))), 22)
        for action in p.ACTIONS:
            self.assertEqual(len(v2(p.Action(DEV, 1, 5, action))), 22)

    def test_extensions_pad_to_the_next_size(self):
        loc = (515007800, -1275700, 12)
        self.assertEqual(len(v2(p.Alarm(DEV, 3, "SOS", battery=50))), 32)
        self.assertEqual(len(v2(p.Alarm(DEV, 3, "SOS", location=loc))), 32)
        self.assertEqual(len(v2(p.CheckIn(DEV, 3, location=loc))), 32)
        self.assertEqual(len(v2(p.Alarm(DEV, 3, "SOS", location=loc, battery=5))), 48)
        frame = p.decode(v2(p.Alarm(DEV, 3, "SOS", location=loc, battery=5)), KEY, p.UP)
        self.assertEqual((frame.location, frame.battery_ext), (loc, 5))

    def test_a_frame_padded_to_any_larger_size_is_accepted(self):
        core = v2(p.Alarm(DEV, 8, "DURESS"))
        core = open_by_hand(core, p.UP)
        for size in (22, 32, 48, 64):
            frame = p.decode(seal(core, counter=8, size=size), KEY, p.UP)
            self.assertEqual(frame.kind, p.DURESS)

    def test_other_sizes_are_rejected_before_the_mac(self):
        core = open_by_hand(v2(p.Alarm(DEV, 8, "SOS")), p.UP)
        for size in (17, 19, 21, 23, 31, 33, 47, 49, 63):
            self.assertEqual(rejection(p.decode, seal(core, size=size), KEY, p.UP), "truncated")


class WhatTravelsInClear(unittest.TestCase):
    def test_alarm_and_checkin_differ_only_after_the_header(self):
        frames_ = [v2(p.Alarm(DEV, 50, kind, ref=49 if kind == p.DOUBLE_TAP else 0))
                   for kind in p.KINDS] + [v2(p.CheckIn(DEV, 50, 80, 0, 300))]
        for data in frames_:
            self.assertEqual(data[:9], frames_[0][:9])
            self.assertEqual(len(data), 20)
        bodies = set(bytes(data[9:]) for data in frames_)
        self.assertEqual(len(bodies), len(frames_))

    def test_peek_reveals_version_device_and_counter_only(self):
        for frame in (p.Alarm(DEV, 77, "DURESS"), p.CheckIn(DEV, 77), p.Ack(DEV, 77, 5, 1)):
            header = p.peek(v2(frame))
            self.assertEqual((header.version, header.device_id, header.counter), (2, DEV, 77))
            self.assertTrue(header.frame_type is None and header.cls is None)
            self.assertTrue(header.name is None and header.direction is None)

    def test_the_first_byte_is_always_0x20(self):
        for frame in (p.Alarm(DEV, 1, "SOS"), p.CheckIn(DEV, 2), p.Action(DEV, 3, 1, 4)):
            self.assertEqual(v2(frame)[0], 0x20)

    def test_the_core_travels_encrypted(self):
        # The plaintext layout of SPEC section 3, recovered with the construction alone.
        data = v2(p.Alarm(DEV, 800, "DOUBLE_TAP", ref=100, age=95))
        plain = open_by_hand(data, p.UP)
        word = (plain[0] << 16) | (plain[1] << 8) | plain[2]
        self.assertEqual((word >> 22, (word >> 18) & 15, (word >> 8) & 1023, word & 255),
                         (1, p.DOUBLE_TAP, 700, frames.age_code(95)))
        self.assertNotEqual(bytes(data[9:12]), plain)
        plain = open_by_hand(v2(p.CheckIn(DEV, 61, battery=87, flags=5, interval=900)), p.UP)
        word = (plain[0] << 16) | (plain[1] << 8) | plain[2]
        self.assertEqual((word >> 22, (word >> 17) & 31, (word >> 10) & 127, word & 1023),
                         (2, 5, 87, frames.interval_code(900)))
        plain = open_by_hand(v2(p.Action(DEV, 62, 0x01020304, "RESOLVED")), p.DOWN)
        self.assertEqual(plain, bytes([(2 << 6) | p.RESOLVED, 1, 2, 3, 4]))

    def test_long_frames_use_a_second_keystream_block(self):
        plain = bytearray(47)
        plain[0:3] = open_by_hand(v2(p.Alarm(DEV, 9, "SOS")), p.UP)
        plain[3:8] = bytes([0x41, 3, 7, 7, 7])  # an unknown extension, then zeros
        plain[40] = 0  # the padding reaches into the second block
        data = seal(bytes(plain), counter=9, size=64)
        self.assertEqual(open_by_hand(data, p.UP), bytes(plain))
        self.assertEqual(p.decode(data, KEY, p.UP).unknown_extensions, [0x41])

    def test_the_nonce_is_the_header(self):
        # Same contents under another counter or device: another keystream, nothing else sent.
        a = v2(p.Alarm(DEV, 10, "SOS"))
        b = v2(p.Alarm(DEV, 11, "SOS"))
        c = v2(p.Alarm(DEV + 1, 10, "SOS"))
        self.assertTrue(a[9:12] != b[9:12] or a[9:12] != c[9:12])
        self.assertEqual(len(a), len(b))

    def test_encoding_is_deterministic_so_retransmissions_are_identical(self):
        self.assertEqual(v2(p.Alarm(DEV, 12, "DURESS")), v2(p.Alarm(DEV, 12, "DURESS")))


class Receipts(unittest.TestCase):
    def test_a_receipt_is_an_uplink_of_the_alarm_size(self):
        receipt = v2(p.Receipt(DEV, 40, 77))
        self.assertEqual(len(receipt), len(v2(p.Alarm(DEV, 41, p.DURESS))))
        self.assertEqual(receipt[:1], b"\x20")
        frame = p.decode(receipt, KEY, p.UP)
        self.assertEqual((frame.NAME, frame.downlink), ("receipt", 77))

    def test_the_low_22_bits_travel_and_the_gateway_resolves_them(self):
        frame = p.decode(v2(p.Receipt(DEV, 42, 0x12345678)), KEY, p.UP)
        self.assertEqual(frame.downlink, 0x345678)
        self.assertEqual(frame.resolve(0x12345678), 0x12345678)
        self.assertEqual(frame.resolve(0x12345678 + 1000), 0x12345678)
        self.assertEqual(frame.resolve(0x12345678 + 0x3FFFFF), 0x12345678)
        small = p.decode(v2(p.Receipt(DEV, 43, 5)), KEY, p.UP)
        self.assertEqual(small.resolve(9), 5)

    def test_there_is_no_v1_receipt(self):
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Receipt(DEV, 44, 5), KEY)


class KeyDerivation(unittest.TestCase):
    def test_four_keys_from_hkdf_expand_with_distinct_labels(self):
        key = p.DeviceKey(KEY)
        seen = []
        for direction in (p.UP, p.DOWN):
            enc, mac_key = key.subkeys(direction)
            self.assertEqual(enc, mac.hmac_sha256(KEY, LABELS[direction][0] + b"\x01"))
            self.assertEqual(mac_key, mac.hmac_sha256(KEY, LABELS[direction][1] + b"\x01"))
            seen += [enc, mac_key]
        self.assertEqual(len(set(seen)), 4)
        self.assertTrue(KEY not in seen)

    def test_matches_the_cryptography_package_on_cpython(self):
        if sys.implementation.name != "cpython":
            return
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
        for direction in (p.UP, p.DOWN):
            for label, derived in zip(LABELS[direction], p.DeviceKey(KEY).subkeys(direction)):
                expand = HKDFExpand(hashes.SHA256(), 32, label)
                self.assertEqual(expand.derive(KEY), derived)

    def test_v1_and_v2_never_share_a_mac_key(self):
        # The same clear bytes under v1's construction and v2's give different tags.
        key = p.DeviceKey(KEY)
        message = bytes(range(12))
        self.assertNotEqual(key.tag(p.UP, message), key.seal_tag(p.UP, message))
        self.assertNotEqual(key.seal_tag(p.UP, message), key.seal_tag(p.DOWN, message))

    def test_subkeys_of_a_bad_direction_are_a_local_error(self):
        with self.assertRaises(p.LocalProtocolError):
            p.DeviceKey(KEY).subkeys("sideways")


class Verification(unittest.TestCase):
    def test_nothing_is_decrypted_before_the_mac_verifies(self):
        key = p.DeviceKey(KEY)
        calls = []
        real = key.crypt

        def spy(*args):
            calls.append(args[0])
            return real(*args)

        good = v2(p.Alarm(DEV, 20, "DURESS"), key)
        key.crypt = spy
        for bad in (good[:-1] + bytes([good[-1] ^ 1]), good[:12] + bytes([good[12] ^ 1])
                    + good[13:]):
            self.assertEqual(rejection(p.decode, bad, key, p.UP), "bad_mac")
        self.assertEqual(rejection(p.decode, good, key, p.DOWN), "wrong_direction")
        self.assertEqual(calls, [])
        p.decode(good, key, p.UP)
        self.assertEqual(calls, [p.UP])

    def test_every_single_bit_flip_is_rejected(self):
        for data in (v2(p.Alarm(DEV, 5, "DURESS")), v2(p.Ack(DEV, 5, 4, 1))):
            direction = p.UP if len(data) == 20 else p.DOWN
            for i in range(len(data)):
                for bit in range(8):
                    bad = bytearray(data)
                    bad[i] ^= 1 << bit
                    self.assertIsNotNone(rejection(p.decode, bytes(bad), KEY, direction))

    def test_a_reflected_frame_is_told_apart_from_a_forged_one(self):
        up = v2(p.Alarm(DEV, 6, "SOS"))
        down = v2(p.Ack(DEV, 6, 6, "RECEIVED"))
        self.assertEqual(rejection(p.decode, up, KEY, p.DOWN), "wrong_direction")
        self.assertEqual(rejection(p.decode, down, KEY, p.UP), "wrong_direction")
        forged = up[:-8] + bytes(8)
        self.assertEqual(rejection(p.decode, forged, KEY, p.DOWN), "bad_mac")
        self.assertEqual(rejection(p.decode, up, bytes(32), p.UP), "bad_mac")

    def test_a_v1_tag_on_v2_bytes_does_not_verify(self):
        data = v2(p.Alarm(DEV, 7, "SOS"))
        forged = data[:-8] + p.DeviceKey(KEY).tag(p.UP, data[:-8])
        self.assertEqual(rejection(p.decode, forged, KEY, p.UP), "bad_mac")

    def test_the_check_order_after_the_mac(self):
        # unknown_type, then the core's size, then codes, then fields, then extensions.
        self.assertEqual(rejection(p.decode, seal(bytes([0x3F, 0, 0]), counter=0), KEY, p.UP),
                         "unknown_type")
        self.assertEqual(rejection(p.decode, seal(bytes([0x40, 0, 0]), p.DOWN, 0), KEY,
                                   p.DOWN), "truncated")
        self.assertEqual(rejection(p.decode, seal(bytes([0x7C, 0, 0]), counter=0), KEY, p.UP),
                         "unknown_kind")
        self.assertEqual(rejection(p.decode, seal(bytes([0x44, 3, 0, 2, 4]), counter=0,
                                                  size=32), KEY, p.UP), "bad_field")
        self.assertEqual(rejection(p.decode, seal(bytes([0x44, 0, 0, 2, 4]), size=32), KEY,
                                   p.UP), "bad_extension")


class Lateness(unittest.TestCase):
    def test_age_code_at_its_boundaries(self):
        for seconds, code, means in ((0, 0, 0), (15, 15, 15), (16, 16, 16), (31, 31, 31),
                                     (32, 0x20, 32), (33, 0x20, 32), (95, 0x37, 92),
                                     (3600, 0x8C, 3584), (507904, 255, 507904),
                                     (507903, 254, 491520), (2 ** 32 - 1, 255, 507904)):
            self.assertEqual(frames.age_code(seconds), code, seconds)
            self.assertEqual(frames.age_seconds(code), means, seconds)

    def test_age_is_a_lower_bound_within_a_sixteenth(self):
        seconds = 0
        while seconds < 507904:
            means = frames.age_seconds(frames.age_code(seconds))
            self.assertTrue(means <= seconds and (seconds - means) * 16 <= means, seconds)
            self.assertEqual(frames.age_code(means), frames.age_code(seconds))
            seconds = seconds * 9 // 8 + 1

    def test_every_alarm_says_how_long_it_waited(self):
        self.assertEqual(p.decode(v2(p.Alarm(DEV, 30, "DURESS")), KEY, p.UP).age, 0)
        frame = p.decode(v2(p.Alarm(DEV, 31, "DURESS", age=700)), KEY, p.UP)
        self.assertEqual(frame.age, 672)
        self.assertEqual(frame.fields()["age"], 672)
        tap = p.decode(v2(p.Alarm(DEV, 2000, "DOUBLE_TAP", ref=1000, age=12)), KEY, p.UP)
        self.assertEqual((tap.ref, tap.age), (1000, 12))

    def test_the_age_stays_in_the_core(self):
        self.assertEqual(len(v2(p.Alarm(DEV, 32, "SOS", age=2 ** 32 - 1))), 20)
        with self.assertRaises(p.LocalProtocolError):
            v2(p.Alarm(DEV, 33, "SOS", age=2 ** 32))


class CheckIns(unittest.TestCase):
    def test_common_intervals_are_exact(self):
        for seconds in (0, 1, 10, 60, 90, 255, 300, 600, 900, 1800, 3600, 7200, 86400):
            self.assertEqual(frames.interval_seconds(frames.interval_code(seconds)), seconds)
            frame = p.decode(v2(p.CheckIn(DEV, 40, interval=seconds)), KEY, p.UP)
            self.assertEqual(frame.interval, seconds)

    def test_other_intervals_round_up_in_the_finest_unit(self):
        for seconds, means in ((256, 260), (301, 310), (2551, 2580), (15301, 15600),
                               (65535, 66000), (153000, 153000)):
            self.assertEqual(frames.interval_seconds(frames.interval_code(seconds)), means)
        seconds = 1
        while seconds <= 153000:
            means = frames.interval_seconds(frames.interval_code(seconds))
            # within one unit, and a unit is under 1/25 of any interval that needs it
            self.assertTrue(means == seconds or seconds < means and (means - seconds) * 25
                            < seconds, seconds)
            seconds = seconds * 5 // 4 + 1

    def test_battery_unknown_and_flags(self):
        frame = p.decode(v2(p.CheckIn(DEV, 41, battery=255, flags=0x1F)), KEY, p.UP)
        self.assertEqual((frame.battery, frame.flags), (255, 0x1F))
        plain = open_by_hand(v2(p.CheckIn(DEV, 41, battery=255)), p.UP)
        self.assertEqual(((plain[0] & 1) << 6) | (plain[1] >> 2), 127)

    def test_what_v2_cannot_carry_is_a_local_error(self):
        for bad in (p.CheckIn(DEV, 1, flags=0x20), p.CheckIn(DEV, 1, interval=153001),
                    p.Alarm(DEV, 2000, "DOUBLE_TAP", ref=2000 - 1024),
                    p.Alarm(DEV, 5, "SOS", ref=2)):
            with self.assertRaises(p.LocalProtocolError):
                v2(bad)
        with self.assertRaises(p.LocalProtocolError):
            p.encode(p.Alarm(DEV, 1, "SOS"), KEY, version=3)
        # ... while v1 still carries them
        self.assertEqual(p.decode(p.encode(p.CheckIn(DEV, 1, flags=0xE0), KEY), KEY,
                                  p.UP).flags, 0xE0)


class BothVersions(unittest.TestCase):
    def test_encode_makes_v1_unless_asked_for_v2(self):
        frame = p.Alarm(DEV, 1, "SOS")
        self.assertEqual(p.encode(frame, KEY)[0], 0x11)
        self.assertEqual(frame.version, 1)
        self.assertEqual(p.encode(frame, KEY, version=2)[0], 0x20)
        self.assertEqual(frame.version, 2)

    def test_decode_reads_either_and_says_which(self):
        for version in (1, 2):
            frame = p.decode(p.encode(p.CheckIn(DEV, 3, 64, 5, 900), KEY, version=version),
                             KEY, p.UP)
            self.assertEqual(frame.version, version)
            self.assertEqual((frame.battery, frame.flags, frame.interval), (64, 5, 900))
            frame = p.decode(p.encode(p.Action(DEV, 3, 9, "PROMPT_DOUBLE_TAP"), KEY,
                                      version=version), KEY, p.DOWN)
            self.assertEqual((frame.version, frame.ref, frame.action), (version, 9, 2))

    def test_a_decoded_v2_frame_encodes_to_the_same_bytes(self):
        for frame in (p.Alarm(DEV, 90, "FALL", age=95, location=(1, 2, 3)),
                      p.CheckIn(DEV, 91, 255, 3, 301), p.Ack(DEV, 92, 90, "DELIVERED")):
            data = v2(frame)
            again = p.decode(data, KEY, frame.DIRECTION)
            self.assertEqual(v2(again), data)
            self.assertEqual(again.tag, data[-8:])

    def test_v2_frames_in_the_replay_window(self):
        w = p.ReplayWindow(size=8)
        data = v2(p.Alarm(DEV, 10, "DURESS"))
        frame = p.decode(data, KEY, p.UP)
        self.assertEqual(w.accept(frame.counter, frame.tag), p.NEW)
        self.assertEqual(w.accept(frame.counter, p.decode(data, KEY, p.UP).tag),
                         p.RETRANSMISSION)
        other = p.decode(v2(p.Alarm(DEV, 10, "SOS")), KEY, p.UP)
        self.assertEqual(rejection(w.accept, other.counter, other.tag), "counter_reuse")
