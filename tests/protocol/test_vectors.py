# The golden vectors, checked the same way on every interpreter.
import unittest

import vigil_protocol as p
from protocol_helpers import frame_from_fields, load_vectors, rejection

VECTORS = load_vectors()


class GoldenVectors(unittest.TestCase):
    def test_there_are_enough_and_a_third_invalid(self):
        self.assertTrue(len(VECTORS) >= 30)
        invalid = [v for v in VECTORS if not v["valid"]]
        self.assertTrue(len(invalid) * 3 >= len(VECTORS))

    def test_every_frame_level_rejection_reason_has_a_vector(self):
        errors = set(v["error"] for v in VECTORS if not v["valid"])
        window_only = ("stale_counter", "counter_reuse")  # need state: see test_window
        for exc in p.REJECTIONS:
            if exc.reason not in window_only:
                self.assertIn(exc.reason, errors)

    def test_every_type_has_a_valid_vector(self):
        types = set(v["type"] for v in VECTORS if v["valid"])
        for name in p.TYPE_NAMES:
            self.assertIn(name, types)

    def test_valid_vectors_decode_to_their_fields(self):
        for v in VECTORS:
            if v["valid"]:
                frame = p.decode(bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]),
                                 v["direction"])
                self.assertEqual(frame.NAME, v["type"])
                self.assertEqual(frame.fields(), v["fields"], v["name"])

    def test_valid_vectors_encode_to_their_bytes(self):
        for v in VECTORS:
            if v["valid"] and "unknown_extensions" not in v["fields"]:
                frame = frame_from_fields(v["type"], v["fields"])
                self.assertEqual(p.encode(frame, bytes.fromhex(v["key"])).hex(), v["frame"],
                                 v["name"])

    def test_invalid_vectors_are_rejected_for_their_reason(self):
        for v in VECTORS:
            if not v["valid"]:
                got = rejection(p.decode, bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]),
                                v["direction"])
                self.assertEqual(got, v["error"], v["name"])

    def test_core_alarm_vectors_fit_one_ble_payload(self):
        for v in VECTORS:
            if v["valid"] and v["type"] == "alarm" and len(v["fields"]) == 4:
                self.assertEqual(len(v["frame"]) // 2, 20, v["name"])
