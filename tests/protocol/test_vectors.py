# The golden vectors, checked the same way on every interpreter.
import unittest

import vigil_protocol as p
from protocol_helpers import frame_from_fields, load_document, rejection
from vigil_protocol import frames

DOCUMENT = load_document()
VECTORS = DOCUMENT["vectors"]
WINDOW_ONLY = ("stale_counter", "counter_reuse")  # need state: see test_window


def of_version(version):
    return [v for v in VECTORS if v["version"] == version]


class GoldenVectors(unittest.TestCase):
    def test_there_are_enough_and_a_third_invalid(self):
        for version, least in ((1, 30), (2, 40)):
            mine = of_version(version)
            self.assertTrue(len(mine) >= least, version)
            invalid = [v for v in mine if not v["valid"]]
            self.assertTrue(len(invalid) * 3 >= len(mine), version)

    def test_every_frame_level_rejection_reason_has_a_vector_in_each_version(self):
        for version in (1, 2):
            errors = set(v["error"] for v in of_version(version) if not v["valid"])
            for exc in p.REJECTIONS:
                if exc.reason not in WINDOW_ONLY:
                    self.assertIn(exc.reason, errors, "v%d" % version)

    def test_two_fault_vectors_pin_the_check_order(self):
        # Each names two faults; the reason is the earlier check (SPEC section 6).
        for version, least in ((1, 7), (2, 11)):
            two = [v for v in of_version(version) if "two_faults" in v["name"]]
            self.assertTrue(len(two) >= least, version)
            self.assertTrue(all(not v["valid"] for v in two))

    def test_every_type_has_a_valid_vector_in_each_version(self):
        for version in (1, 2):
            types = set(v["type"] for v in of_version(version) if v["valid"])
            for name in p.TYPE_NAMES:
                if version == 2 or p.TYPE_NAMES[name].TYPE:  # (a receipt is v2 only)
                    self.assertIn(name, types)

    def test_valid_vectors_decode_to_their_fields(self):
        for v in VECTORS:
            if v["valid"]:
                frame = p.decode(bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]),
                                 v["direction"])
                self.assertEqual(frame.NAME, v["type"])
                self.assertEqual(frame.version, v["version"], v["name"])
                self.assertEqual(frame.fields(), v["fields"], v["name"])

    def test_valid_vectors_encode_to_their_bytes(self):
        for v in VECTORS:
            if v["valid"] and v.get("canonical", True):
                frame = frame_from_fields(v["type"], v["fields"])
                data = p.encode(frame, bytes.fromhex(v["key"]), version=v["version"])
                self.assertEqual(data.hex(), v["frame"], v["name"])

    def test_invalid_vectors_are_rejected_for_their_reason(self):
        for v in VECTORS:
            if not v["valid"]:
                got = rejection(p.decode, bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]),
                                v["direction"])
                self.assertEqual(got, v["error"], v["name"])

    def test_core_alarm_vectors_fit_one_ble_payload(self):
        for v in VECTORS:
            core = v["valid"] and v.get("canonical", True) and set(v["fields"]) <= set(
                ("device_id", "counter", "kind", "ref", "age"))
            if v["type"] == "alarm" and core and (v["version"] == 2 or "age" not in v["fields"]):
                self.assertEqual(len(v["frame"]) // 2, 20, v["name"])

    def test_v2_alarms_and_checkins_share_sizes_and_so_do_acks_and_actions(self):
        sizes = {}
        for v in of_version(2):
            if v["valid"]:
                n = len(v["frame"]) // 2
                self.assertIn(n, frames.V2_SIZES, v["name"])
                extended = "location" in v["fields"] or (v["type"] == "alarm"
                                                          and "battery" in v["fields"]) \
                    or "beacons" in v["fields"] or "wifi" in v["fields"]
                if not extended and v.get("canonical", True):
                    sizes.setdefault(v["type"], set()).add(n)
        self.assertEqual(sizes["alarm"], set((20,)))
        self.assertEqual(sizes["checkin"], sizes["alarm"])
        self.assertEqual(sizes["ack"], sizes["action"])
        self.assertEqual(sizes["ack"], set((22,)))

    def test_v2_headers_say_only_version_device_and_counter(self):
        for v in of_version(2):
            data = bytes.fromhex(v["frame"])
            if v["valid"]:
                self.assertEqual(data[0], 0x20, v["name"])
                header = p.peek(data)
                self.assertEqual((header.version, header.device_id, header.counter),
                                 (2, v["fields"]["device_id"], v["fields"]["counter"]))
                self.assertTrue(header.name is None and header.frame_type is None)

    def test_derived_keys_are_the_documented_ones(self):
        keys = DOCUMENT["v2_keys"]
        key = p.DeviceKey(bytes.fromhex(keys["key"]))
        for direction in (p.UP, p.DOWN):
            enc, mac = key.subkeys(direction)
            self.assertEqual(enc.hex(), keys[direction]["enc"])
            self.assertEqual(mac.hex(), keys[direction]["mac"])
