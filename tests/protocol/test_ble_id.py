# BLE privacy (SPEC section 10), on CPython and both MicroPython ports: the rotating identifier
# resolves under its own key only, the masks are the construction SPEC states, and masking
# hides the header and gives every frame back byte for byte.
import sys
import unittest

import vigil_protocol as p
import vigil_protocol.ble_id as ble_id
from vigil_protocol import mac

KEY = bytes(range(32))
PRAND = bytes([0xA1, 0xB2, 0xC3])
# Golden values (SPEC section 10): the vectors' key, this prand.
IDENTIFIER = "a1b2c39707cb"
MASK_UP = ("f766b7711c1fa9deb3b1c63f5d8b92f3be3b9aead23343c0363e02c0ece78d5c"
           "fc260834cb8cfa0aa45ec25328c365839ad01901b94fb22217682d477ddd8db8")
MASK_DOWN = ("f717f72c3a8afebdf8642500f69f5270458912f278ad8a8eec518abac53f60cf"
             "a31cc0175bcd8666f7a59b8d262fae61ea73fd5e08c0b9f66789d114a7c5fc45")


def by_hand(key, prand):
    """The identifier and masks from RFC 2104 HMAC alone, as SPEC section 10 writes them."""
    id_key = mac.hmac_sha256(key, b"vigil/v2/ble-id\x01")
    mask_key = mac.hmac_sha256(key, b"vigil/v2/ble-mask\x01")
    ident = prand + mac.hmac_sha256(id_key, prand)[:3]
    masks = [mac.hmac_sha256(mask_key, ident + d + b"\x00")
             + mac.hmac_sha256(mask_key, ident + d + b"\x01") for d in (b"\x00", b"\x01")]
    return ident, masks[0], masks[1]


class Identifier(unittest.TestCase):
    def test_golden_identifier_and_masks(self):
        key = ble_id.BleKey(KEY)
        ident = key.identifier(PRAND)
        self.assertEqual(ident.hex(), IDENTIFIER)
        up, down = key.masks(ident)
        self.assertEqual((bytes(up).hex(), bytes(down).hex()), (MASK_UP, MASK_DOWN))
        self.assertEqual(by_hand(KEY, PRAND), (ident, bytes(up), bytes(down)))

    def test_stdlib_hmac_agrees_on_cpython(self):
        if sys.implementation.name != "cpython":
            return
        import hashlib
        import hmac
        id_key = hmac.new(KEY, b"vigil/v2/ble-id\x01", hashlib.sha256).digest()
        self.assertEqual(hmac.new(id_key, PRAND, hashlib.sha256).digest()[:3].hex(),
                         IDENTIFIER[6:])

    def test_a_device_key_or_its_bytes_give_the_same_keys(self):
        self.assertEqual(ble_id.BleKey(p.DeviceKey(KEY)).identifier(PRAND).hex(), IDENTIFIER)

    def test_it_resolves_under_its_own_key_only(self):
        key = ble_id.BleKey(KEY)
        others = [ble_id.BleKey(bytes([i]) * 32) for i in range(1, 9)]
        for n in range(40):
            prand = bytes([n, 255 - n, n * 7 & 255])
            ident = key.identifier(prand)
            self.assertTrue(key.resolves(ident))
            self.assertEqual([o.resolves(ident) for o in others], [False] * len(others))
            bad = bytearray(ident)
            bad[n % 6] ^= 1 << (n % 8)
            self.assertFalse(key.resolves(bytes(bad)))

    def test_wrong_sizes_never_resolve_and_a_short_prand_is_refused(self):
        key = ble_id.BleKey(KEY)
        ident = key.identifier(PRAND)
        for bad in (b"", ident[:5], ident + b"\x00", bytes(4)):
            self.assertFalse(key.resolves(bad))
        with self.assertRaises(ValueError):
            key.identifier(b"\x01\x02")

    def test_a_fresh_prand_gives_an_unrelated_hash(self):
        key = ble_id.BleKey(KEY)
        a, b = key.identifier(b"\x00\x00\x01"), key.identifier(b"\x00\x00\x02")
        self.assertNotEqual(a[3:], b[3:])

    def test_the_keys_never_show(self):
        self.assertEqual(repr(ble_id.BleKey(KEY)), "<BleKey (hidden)>")


class Mask(unittest.TestCase):
    def frame(self, counter=7):
        return p.encode(p.Alarm(0x01020304, counter, "DURESS"), KEY, version=2)

    def test_masking_twice_gives_the_frame_back(self):
        up, down = ble_id.BleKey(KEY).masks(ble_id.BleKey(KEY).identifier(PRAND))
        for data in (self.frame(), p.encode(p.Ack(0x01020304, 9, 7, 1), KEY, version=2),
                     bytes(64)):
            out = bytearray(64)
            n = ble_id.apply(up, data, out)
            self.assertEqual(n, len(data))
            self.assertNotEqual(bytes(out[:n]), data)
            again = bytearray(n)
            ble_id.apply(up, out[:n], again)
            self.assertEqual(bytes(again), data)

    def test_the_header_is_hidden_and_changes_with_the_identifier(self):
        key = ble_id.BleKey(KEY)
        data = self.frame()
        seen = []
        for prand in (b"\x01\x02\x03", b"\x04\x05\x06"):
            up, _ = key.masks(key.identifier(prand))
            out = bytearray(len(data))
            ble_id.apply(up, data, out)
            self.assertNotEqual(bytes(out[:9]), data[:9])
            seen.append(bytes(out))
        # The same frame (a retransmission across a rotation) shares no byte position.
        self.assertEqual([a == b for a, b in zip(seen[0], seen[1])].count(True) < 4, True)
        self.assertNotEqual(seen[0][:9], seen[1][:9])

    def test_the_two_directions_have_their_own_masks(self):
        up, down = ble_id.BleKey(KEY).masks(ble_id.BleKey(KEY).identifier(PRAND))
        self.assertNotEqual(bytes(up), bytes(down))

    def test_masks_fill_the_buffers_given(self):
        up, down = bytearray(64), bytearray(64)
        key = ble_id.BleKey(KEY)
        got = key.masks(key.identifier(PRAND), up, down)
        self.assertTrue(got[0] is up and got[1] is down)
        self.assertEqual(bytes(up).hex(), MASK_UP)

    def test_in_place_and_oversized(self):
        up, _ = ble_id.BleKey(KEY).masks(ble_id.BleKey(KEY).identifier(PRAND))
        buf = bytearray(self.frame())
        ble_id.apply(up, buf, buf)
        ble_id.apply(up, buf, buf)
        self.assertEqual(bytes(buf), self.frame())
        with self.assertRaises(ValueError):
            ble_id.apply(up, bytes(65), bytearray(65))
