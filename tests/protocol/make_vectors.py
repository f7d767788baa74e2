"""Write protocol/vectors.json, the golden vectors every interpreter's tests read.

Run it only when the protocol changes on purpose (`python tests/protocol/make_vectors.py`);
the tests then check the committed file, so an accidental change to the codec shows up as a
failing vector rather than a silently regenerated one. The output is deterministic: fixed keys,
fixed counters, and v2 frames have no random part (their nonce is their header).

v1 vectors come first (names as before), then v2 ones (names starting "v2_"). Frames with a
fault are made by hand and then given a valid MAC (v1: `signed`; v2: `sealed`, which encrypts
a hand-made core and extensions), so the fault is what the decoder meets after the MAC.
"""
import json
import pathlib
import struct
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "protocol"))

import vigil_protocol as p  # noqa: E402
from vigil_protocol import frames  # noqa: E402
from vigil_protocol import mac as mac_module  # noqa: E402
from vigil_protocol.frames import V2_SIZES  # noqa: E402

KEY = bytes(range(0x40, 0x60))
OTHER_KEY = bytes(range(0xA0, 0xC0))
DEVICE = 0x00C0FFEE
OUT = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "vectors.json"


def signed(message, direction, key=KEY):
    """Sign raw bytes as-is: how the invalid vectors get a valid MAC over bad content."""
    return message + p.DeviceKey(key).tag(direction, message)


def header(frame_type, counter, device=DEVICE, version=1):
    return struct.pack(">BII", (version << 4) | frame_type, device, counter)


def valid(name, frame, note="", version=1):
    data = p.encode(frame, KEY, version=version)
    decoded = p.decode(data, KEY, frame.DIRECTION)  # v2 fields are what the frame can carry
    return {"name": name, "version": version, "type": frame.NAME, "direction": frame.DIRECTION,
            "key": KEY.hex(), "frame": data.hex(), "valid": True, "fields": decoded.fields(),
            "note": note}


def by_hand(name, type_name, direction, data, fields, note, version):
    """A valid frame the encoder would not make (an unknown extension, extra padding)."""
    return {"name": name, "version": version, "type": type_name, "direction": direction,
            "key": KEY.hex(), "frame": data.hex(), "valid": True, "canonical": False,
            "fields": fields, "note": note}


def invalid(name, type_name, direction, data, error, note, key=KEY, version=1):
    return {"name": name, "version": version, "type": type_name, "direction": direction,
            "key": key.hex(), "frame": data.hex(), "valid": False, "error": error, "note": note}


def build_v1():
    v = []
    for counter, kind in enumerate(["SOS", "DURESS", "FALL", "LOW_BATTERY", "NO_MOTION"], 1):
        v.append(valid("alarm_" + kind.lower(), p.Alarm(DEVICE, counter, kind),
                       "core alarm frame: exactly 20 bytes"))
    v.append(valid("alarm_double_tap", p.Alarm(DEVICE, 12, "DOUBLE_TAP", ref=1),
                   "answers the SOS at counter 1 (ref_delta 11)"))
    v.append(valid("alarm_sos_with_location",
                   p.Alarm(DEVICE, 20, "SOS", location=(515007800, -1275700, 12))))
    v.append(valid("alarm_duress_buffered_age", p.Alarm(DEVICE, 21, "DURESS", age=95),
                   "raised 95 s before this frame was encoded"))
    v.append(valid("alarm_fall_battery", p.Alarm(DEVICE, 22, "FALL", battery=41)))
    v.append(valid("alarm_all_extensions",
                   p.Alarm(DEVICE, 23, "SOS", location=(-338688000, 1512093000, 5000), age=3600,
                           battery=255)))
    unknown_ext = header(p.Alarm.TYPE, 24) + struct.pack(">BH", p.SOS, 0) + bytes(
        [0x40, 3, 1, 2, 3])
    v.append(by_hand("alarm_unknown_extension_skipped", "alarm", "up",
                     signed(unknown_ext, "up"),
                     {"device_id": DEVICE, "counter": 24, "kind": "SOS", "ref": 0,
                      "unknown_extensions": [0x40]},
                     "extension 0x40 is from a newer peer: skipped, frame accepted", 1))
    v.append(valid("alarm_max_counter", p.Alarm(0xFFFFFFFF, 0xFFFFFFFF, "SOS")))
    v.append(valid("checkin_plain", p.CheckIn(DEVICE, 30, battery=87, flags=0, interval=300)))
    v.append(valid("checkin_flags", p.CheckIn(DEVICE, 31, battery=9, flags=0x0F, interval=60),
                   "charging, alarm open, outbox pending, low battery"))
    v.append(valid("checkin_battery_unknown_location",
                   p.CheckIn(DEVICE, 32, location=(0, 0, 0))))
    v.append(valid("ack_received", p.Ack(DEVICE, 1, 1, "RECEIVED")))
    v.append(valid("ack_delivered", p.Ack(DEVICE, 2, 1, "DELIVERED")))
    for counter, action in enumerate(["ACKNOWLEDGED", "PROMPT_DOUBLE_TAP", "HELP_DISPATCHED",
                                      "RESOLVED"], 3):
        v.append(valid("action_" + action.lower(), p.Action(DEVICE, counter, 1, action)))

    sos = p.encode(p.Alarm(DEVICE, 40, "SOS"), KEY)
    ack = p.encode(p.Ack(DEVICE, 9, 40, "RECEIVED"), KEY)
    v += [
        invalid("truncated_header", "alarm", "up", sos[:12], "truncated",
                "shorter than any frame"),
        invalid("truncated_body", "ack", "down", signed(header(p.Ack.TYPE, 9) +
                                                        b"\x00\x00", "down"),
                "truncated", "ack body cut to 2 bytes, validly signed"),
        invalid("oversized", "alarm", "up", signed(header(p.Alarm.TYPE, 41) +
                                                   struct.pack(">BH", p.SOS, 0) +
                                                   bytes([0x41, 43]) + bytes(43), "up"),
                "oversized", "65 bytes: over the 64-byte hard maximum"),
        invalid("unsupported_version", "alarm", "up",
                signed(header(p.Alarm.TYPE, 42, version=2) +
                       struct.pack(">BH", p.SOS, 0), "up"),
                "unsupported_version", "version nibble 2"),
        invalid("unknown_type", "alarm", "up",
                signed(header(0x5, 43) + struct.pack(">BH", p.SOS, 0), "up"),
                "unknown_type", "type 0x5 is not assigned"),
        invalid("uplink_received_as_downlink", "alarm", "down", sos, "wrong_direction",
                "a valid alarm decoded by a wearable: an uplink reflected back"),
        invalid("downlink_received_as_uplink", "ack", "up", ack, "wrong_direction",
                "a valid ack decoded by a gateway"),
        invalid("bad_mac_flipped_bit", "alarm", "up", sos[:-1] + bytes([sos[-1] ^ 1]),
                "bad_mac", "last tag bit flipped"),
        invalid("bad_mac_wrong_key", "alarm", "up", sos, "bad_mac",
                "valid frame, another device's key", key=OTHER_KEY),
        invalid("bad_mac_altered_kind", "alarm", "up",
                sos[:9] + bytes([p.DURESS]) + sos[10:], "bad_mac",
                "SOS turned into DURESS without re-signing"),
        invalid("bad_mac_signed_as_downlink", "alarm", "up",
                signed(sos[:-8], "down"), "bad_mac",
                "alarm bytes MACed with the downlink label: direction is bound into the MAC"),
        invalid("unknown_alarm_kind", "alarm", "up",
                signed(header(p.Alarm.TYPE, 44) + struct.pack(">BH", 0x7F, 0), "up"),
                "unknown_kind", "kind 0x7F, validly signed"),
        invalid("unknown_action", "action", "down",
                signed(header(p.Action.TYPE, 10) + struct.pack(">IB", 40, 9), "down"),
                "unknown_kind", "action 9, validly signed"),
        invalid("checkin_battery_out_of_range", "checkin", "up",
                signed(header(p.CheckIn.TYPE, 45) + struct.pack(">BBH", 150, 0, 60),
                       "up"), "bad_field", "battery 150%"),
        invalid("sos_with_reference", "alarm", "up",
                signed(header(p.Alarm.TYPE, 46) + struct.pack(">BH", p.SOS, 3), "up"),
                "bad_field", "only DOUBLE_TAP may name another alarm"),
        invalid("double_tap_without_reference", "alarm", "up",
                signed(header(p.Alarm.TYPE, 47) + struct.pack(">BH", p.DOUBLE_TAP, 0),
                       "up"), "bad_field", "DOUBLE_TAP must name the alarm it answers"),
        invalid("counter_zero", "alarm", "up",
                signed(header(p.Alarm.TYPE, 0) + struct.pack(">BH", p.SOS, 0), "up"),
                "bad_field", "counter 0 is reserved"),
        invalid("extension_twice", "alarm", "up",
                signed(header(p.Alarm.TYPE, 48) + struct.pack(">BH", p.SOS, 0) +
                       bytes([2, 4, 0, 0, 0, 1, 2, 4, 0, 0, 0, 2]), "up"),
                "bad_extension", "age extension appears twice"),
        invalid("extension_cut_short", "alarm", "up",
                signed(header(p.Alarm.TYPE, 49) + struct.pack(">BH", p.SOS, 0) +
                       bytes([1, 10, 0, 0]), "up"),
                "bad_extension", "location says 10 bytes, 2 follow"),
        invalid("location_wrong_length", "alarm", "up",
                signed(header(p.Alarm.TYPE, 50) + struct.pack(">BH", p.SOS, 0) +
                       bytes([1, 8]) + bytes(8), "up"),
                "bad_extension", "location must be 10 bytes"),
        # Two faults in one frame: the reason is the first in SPEC section 6's order.
        invalid("two_faults_short_body_received_the_wrong_way", "ack", "up",
                signed(header(p.Ack.TYPE, 11) + b"\x00\x00", "down"), "truncated",
                "an ack cut to 2 body bytes, decoded as an uplink: its size is judged before "
                "its direction"),
        invalid("two_faults_unknown_type_short", "alarm", "up",
                signed(header(0x5, 51), "up"), "unknown_type",
                "type 0x5 and no body: the type is judged before the body size"),
        invalid("two_faults_wrong_direction_bad_mac", "ack", "up",
                ack[:-1] + bytes([ack[-1] ^ 1]), "wrong_direction",
                "a downlink with a broken tag, decoded as an uplink: direction before MAC"),
        invalid("two_faults_bad_mac_unknown_kind", "alarm", "up",
                sos[:9] + bytes([0x7F]) + sos[10:], "bad_mac",
                "kind 0x7F without re-signing: the MAC is judged before the kind"),
        invalid("two_faults_unknown_kind_counter_zero", "alarm", "up",
                signed(header(p.Alarm.TYPE, 0) + struct.pack(">BH", 0x7F, 0), "up"),
                "unknown_kind", "kind 0x7F and counter 0: codes before fields"),
        invalid("two_faults_unknown_action_ref_zero", "action", "down",
                signed(header(p.Action.TYPE, 12) + struct.pack(">IB", 0, 9), "down"),
                "unknown_kind", "action 9 naming counter 0: codes before fields"),
        invalid("two_faults_bad_field_bad_extension", "checkin", "up",
                signed(header(p.CheckIn.TYPE, 52) + struct.pack(">BBH", 150, 0, 60) +
                       bytes([3, 1, 50]), "up"),
                "bad_field", "battery 150% and a battery extension a check-in may not carry: "
                "fields before extensions"),
    ]
    v += location_v1()
    return v


# Beacons and access points of the location vectors: (kind, identifier), short ids below.
IBEACON_HALL = ("ibeacon", bytes.fromhex("e2c56db5dffb48d2b060d0f5a71096e0") + bytes([0, 1, 0, 2]))
EDDYSTONE_STAIRS = ("eddystone", bytes.fromhex("edd1ebeac04e5defa017") + bytes.fromhex("0badcafe0001"))
WIFI_AP = ("wifi", bytes.fromhex("a4b1c2d3e4f5"))


def sid(beacon):
    return p.short_id(*beacon)


def heard_entries(rssis, start=0):
    """(short id, rssi) entries: the vectors' beacons first, then made-up ids."""
    known = [sid(IBEACON_HALL), sid(EDDYSTONE_STAIRS)]
    ids = known + [bytes([0xB0, 0, 0, n]) for n in range(8)]
    return tuple(zip(ids[start:], rssis))


def location_v1():
    """Extensions 0x04 (a fix with its age), 0x05 (beacons) and 0x06 (Wi-Fi), v1."""
    v = []
    v.append(valid("alarm_sos_gnss_fix", p.Alarm(DEVICE, 60, "SOS",
                                                   location=(515007800, -1275700, 9, 2)),
                   "a fix 2 s old, accuracy 9 m: extension 0x04"))
    v.append(valid("checkin_beacons", p.CheckIn(DEVICE, 61, battery=70, interval=300,
                                                beacons=(1, heard_entries((-58, -71)))),
                   "two beacons, strongest first, scanned 1 s before sealing"))
    v.append(valid("alarm_wifi_hint", p.Alarm(DEVICE, 62, "DURESS",
                                              wifi=(0, ((sid(WIFI_AP), -49),))),
                   "no fix, no beacon: one access point as a hint"))
    ext_frame = header(p.Alarm.TYPE, 63) + struct.pack(">BH", p.SOS, 0)
    gnss = bytes([4, 10]) + struct.pack(">iiBB", 515007800, -1275700, 9, 2)
    loc = bytes([1, 10]) + struct.pack(">iiH", 515007800, -1275700, 9)
    one = bytes([5, 6, 0]) + sid(IBEACON_HALL) + bytes([0xC6])  # -58 dBm
    v += [
        invalid("gnss_wrong_length", "alarm", "up", signed(ext_frame + gnss[:1] + bytes([9])
                                                           + gnss[2:11], "up"),
                "bad_extension", "a GNSS fix must be 10 bytes"),
        invalid("two_locations", "alarm", "up", signed(ext_frame + loc + gnss, "up"),
                "bad_extension", "extensions 0x01 and 0x04 in one frame"),
        invalid("beacons_out_of_order", "alarm", "up",
                signed(header(p.Alarm.TYPE, 64) + struct.pack(">BH", p.SOS, 0)
                       + bytes([5, 11, 0]) + sid(IBEACON_HALL) + bytes([0xB9])
                       + sid(EDDYSTONE_STAIRS) + bytes([0xC6]), "up"),
                "bad_extension", "-71 dBm before -58 dBm: entries must be strongest first"),
        invalid("beacons_no_entry", "checkin", "up",
                signed(header(p.CheckIn.TYPE, 65) + struct.pack(">BBH", 50, 0, 60)
                       + bytes([5, 1, 0]), "up"),
                "bad_extension", "a scan age and no beacon"),
        invalid("wifi_length_not_whole_entries", "checkin", "up",
                signed(header(p.CheckIn.TYPE, 66) + struct.pack(">BBH", 50, 0, 60)
                       + bytes([6, 7, 0]) + sid(WIFI_AP) + bytes([0xCF, 0]), "up"),
                "bad_extension", "length 7: one entry and a byte"),
        invalid("beacons_repeated", "alarm", "up",
                signed(header(p.Alarm.TYPE, 67) + struct.pack(">BH", p.SOS, 0)
                       + bytes([5, 11]) + one[2:] + one[3:], "up"),
                "bad_extension", "one short id twice"),
        invalid("beacons_rssi_out_of_range", "alarm", "up",
                signed(header(p.Alarm.TYPE, 68) + struct.pack(">BH", p.SOS, 0)
                       + bytes([5, 6, 0]) + sid(IBEACON_HALL) + bytes([21]), "up"),
                "bad_extension", "+21 dBm: past an advertising report's +20"),
    ]
    return v


def sealed(core, direction="up", counter=1, size=None, device=DEVICE, key=KEY, first=0x20,
           tail=b""):
    """A v2 frame around hand-made contents: header | E(core | tail | zeros) | tag, `size`
    bytes long (default: the smallest v2 size that holds it), with a valid MAC."""
    if size is None:
        size = next(s for s in V2_SIZES if s >= 17 + len(core) + len(tail))
    content = struct.pack(">BII", first, device, counter) + core + tail
    assert len(content) <= size - 8, "contents do not fit"
    buf = bytearray(content + bytes(size - len(content)))  # zero padding, then the tag
    frames._seal(p.DeviceKey(key), direction, buf)
    return bytes(buf)


def alarm_core(kind, delta=0, age=0, code=1):
    return bytes([(code << 6) | (kind << 2) | (delta >> 8), delta & 0xFF, age])


def checkin_core(battery, flags=0, interval=0, code=2):
    return bytes([(code << 6) | (flags << 1) | (battery >> 6), ((battery & 0x3F) << 2)
                  | (interval >> 8), interval & 0xFF])


def reply_core(code, value, ref):
    return struct.pack(">BI", (code << 6) | value, ref)


def build_v2():
    v = []

    def ok(name, frame, note=""):
        v.append(valid("v2_" + name, frame, note, version=2))

    def bad(name, type_name, direction, data, error, note, key=KEY):
        v.append(invalid("v2_" + name, type_name, direction, data, error, note, key, 2))

    for counter, kind in enumerate(["SOS", "DURESS", "FALL", "LOW_BATTERY", "NO_MOTION"], 101):
        ok("alarm_" + kind.lower(), p.Alarm(DEVICE, counter, kind),
           "core alarm frame: 20 bytes, the length of a check-in; age 0")
    ok("alarm_double_tap", p.Alarm(DEVICE, 112, "DOUBLE_TAP", ref=101),
       "answers the SOS at counter 101 (ref_delta 11)")
    ok("alarm_double_tap_farthest", p.Alarm(DEVICE, 5000, "DOUBLE_TAP", ref=5000 - 1023),
       "ref_delta 1023, the most v2's 10 bits hold")
    ok("alarm_duress_age_95", p.Alarm(DEVICE, 113, "DURESS", age=95),
       "waited 95 s: the 8-bit age says 92 (rounded down to a multiple of 4 in 64..124)")
    ok("alarm_sos_age_15", p.Alarm(DEVICE, 114, "SOS", age=15), "ages below 32 s are exact")
    ok("alarm_fall_age_hour", p.Alarm(DEVICE, 115, "FALL", age=3600),
       "waited an hour: the age says 3584 (steps of 128 s from 2048 s)")
    ok("alarm_sos_age_saturated", p.Alarm(DEVICE, 116, "SOS", age=10 ** 6),
       "waited 11.6 days: the age says 507904 s, the largest it holds (5.9 days or more)")
    ok("alarm_sos_with_location",
       p.Alarm(DEVICE, 120, "SOS", location=(515007800, -1275700, 12)),
       "location extension: 32 bytes, the size of a check-in with a location")
    ok("alarm_fall_battery", p.Alarm(DEVICE, 122, "FALL", battery=41),
       "battery extension: 23 bytes of content padded to 32")
    ok("alarm_all_extensions",
       p.Alarm(DEVICE, 123, "SOS", location=(-338688000, 1512093000, 5000), age=3600,
               battery=255), "location and battery: 35 bytes padded to 48")
    ok("alarm_max_counter", p.Alarm(0xFFFFFFFF, 0xFFFFFFFF, "SOS"))
    v.append(by_hand("v2_alarm_unknown_extension_skipped", "alarm", "up",
                     sealed(alarm_core(p.SOS), counter=124, tail=bytes([0x40, 3, 1, 2, 3])),
                     {"device_id": DEVICE, "counter": 124, "kind": "SOS", "ref": 0, "age": 0,
                      "unknown_extensions": [0x40]},
                     "extension 0x40 is from a newer peer: skipped, frame accepted", 2))
    v.append(by_hand("v2_alarm_padded_to_64", "alarm", "up",
                     sealed(alarm_core(p.DURESS), counter=125, size=64),
                     {"device_id": DEVICE, "counter": 125, "kind": "DURESS", "ref": 0,
                      "age": 0},
                     "a sender may pad to any larger v2 size: two keystream blocks", 2))
    ok("checkin_plain", p.CheckIn(DEVICE, 130, battery=87, flags=0, interval=300),
       "20 bytes, the length of a core alarm")
    ok("checkin_flags", p.CheckIn(DEVICE, 131, battery=9, flags=0x1F, interval=60),
       "all five flags")
    ok("checkin_battery_unknown_location", p.CheckIn(DEVICE, 132, location=(0, 0, 0)),
       "battery 255 travels as 127 in v2's 7 bits; location: 32 bytes")
    ok("checkin_interval_rounded_up", p.CheckIn(DEVICE, 133, battery=50, interval=301),
       "301 s announced as 310 s (31 x 10 s): the next check-in comes within it")
    ok("checkin_interval_hour", p.CheckIn(DEVICE, 134, battery=100, interval=3600),
       "60 x 1 min, exact")
    ok("checkin_interval_largest", p.CheckIn(DEVICE, 135, battery=0, interval=65535),
       "65535 s announced as 66000 s (110 x 10 min)")
    ok("ack_received", p.Ack(DEVICE, 1, 101, "RECEIVED"), "22 bytes, the length of an action")
    ok("ack_delivered", p.Ack(DEVICE, 2, 101, "DELIVERED"))
    for counter, action in enumerate(["ACKNOWLEDGED", "PROMPT_DOUBLE_TAP", "HELP_DISPATCHED",
                                      "RESOLVED"], 3):
        ok("action_" + action.lower(), p.Action(DEVICE, counter, 101, action))

    ok("receipt", p.Receipt(DEVICE, 136, 2),
       "the wearable took downlink 2 (the DELIVERED ack above): 20 bytes, as an alarm")
    ok("receipt_low_bits", p.Receipt(DEVICE, 137, 0x12345678),
       "downlink 0x12345678 travels as its low 22 bits, 0x345678; the gateway resolves it "
       "against the highest downlink counter it has used")
    sos = p.encode(p.Alarm(DEVICE, 140, "SOS"), KEY, version=2)
    ack = p.encode(p.Ack(DEVICE, 9, 140, "RECEIVED"), KEY, version=2)
    big = p.encode(p.Alarm(DEVICE, 141, "SOS", location=(1, 2, 3), battery=50), KEY, version=2)
    bad("truncated_header", "alarm", "up", sos[:16], "truncated", "shorter than header + tag")
    bad("size_between_classes", "alarm", "up", sealed(alarm_core(p.SOS), counter=142, size=21),
        "truncated", "21 bytes (validly sealed): not a v2 size, so cut short of 22 or 32")
    bad("cut_to_a_smaller_size", "alarm", "up", big[:32], "bad_mac",
        "a 48-byte frame cut to 32, a v2 size: the MAC fails")
    bad("oversized", "alarm", "up", sealed(alarm_core(p.SOS), counter=143, size=65),
        "oversized", "65 bytes: over the 64-byte hard maximum")
    bad("unsupported_version", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=144, first=0x30), "unsupported_version",
        "first byte 0x30: version 3")
    bad("unsupported_low_nibble", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=145, first=0x21), "unsupported_version",
        "first byte 0x21: v2 frames start 0x20, nothing else travels in clear")
    bad("uplink_received_as_downlink", "alarm", "down", sos, "wrong_direction",
        "a valid alarm decoded by a wearable: it verifies with the uplink MAC key only")
    bad("downlink_received_as_uplink", "ack", "up", ack, "wrong_direction",
        "a valid ack decoded by a gateway")
    bad("receipt_received_as_downlink", "receipt", "down",
        p.encode(p.Receipt(DEVICE, 138, 5), KEY, version=2), "wrong_direction",
        "a receipt decoded by a wearable: v2 type 3 is assigned upward only")
    bad("bad_mac_flipped_tag_bit", "alarm", "up", sos[:-1] + bytes([sos[-1] ^ 1]), "bad_mac",
        "last tag bit flipped")
    bad("bad_mac_flipped_ciphertext_bit", "alarm", "up",
        sos[:9] + bytes([sos[9] ^ 0x04]) + sos[10:], "bad_mac",
        "the bit that would turn SOS into DURESS after decryption: the MAC covers the "
        "ciphertext")
    bad("bad_mac_altered_device_id", "alarm", "up", sos[:4] + bytes([sos[4] ^ 1]) + sos[5:],
        "bad_mac", "the clear header is covered by the MAC")
    bad("bad_mac_altered_counter", "alarm", "up", sos[:8] + bytes([sos[8] ^ 1]) + sos[9:],
        "bad_mac", "another counter: another nonce and a failed MAC")
    bad("bad_mac_wrong_key", "alarm", "up", sos, "bad_mac",
        "valid frame, another device's key", key=OTHER_KEY)
    bad("bad_mac_v1_tag", "alarm", "up", signed(sos[:-8], "up"), "bad_mac",
        "v2 bytes tagged the v1 way (device key and direction label)")
    bad("bad_mac_subkeys_swapped", "alarm", "up", swapped(sos[:-8]), "bad_mac",
        "sealed with the uplink encryption key as MAC key and the reverse")
    bad("unknown_type_0", "alarm", "up", sealed(alarm_core(p.SOS, code=0), counter=146),
        "unknown_type", "v2 uplink type 0 is not assigned")
    bad("unknown_type_3", "ack", "down", sealed(reply_core(3, 1, 140), "down", counter=10),
        "unknown_type", "v2 downlink type 3 is not assigned")
    bad("truncated_downlink_core", "ack", "down",
        sealed(reply_core(1, 1, 140)[:3], "down", counter=11), "truncated",
        "an ack sealed in 20 bytes: its 5-byte core does not fit (judged after the MAC)")
    bad("unknown_alarm_kind", "alarm", "up", sealed(alarm_core(0xF), counter=147),
        "unknown_kind", "kind 15, validly sealed")
    bad("unknown_alarm_kind_0", "alarm", "up", sealed(alarm_core(0), counter=148),
        "unknown_kind", "kind 0 is not assigned")
    bad("unknown_stage", "ack", "down", sealed(reply_core(1, 3, 140), "down", counter=12),
        "unknown_kind", "ack stage 3")
    bad("unknown_action", "action", "down", sealed(reply_core(2, 9, 140), "down", counter=13),
        "unknown_kind", "action 9")
    bad("checkin_battery_out_of_range", "checkin", "up",
        sealed(checkin_core(110, interval=30), counter=149), "bad_field", "battery 110%")
    bad("sos_with_reference", "alarm", "up", sealed(alarm_core(p.SOS, delta=3), counter=150),
        "bad_field", "only DOUBLE_TAP may name another alarm")
    bad("double_tap_without_reference", "alarm", "up",
        sealed(alarm_core(p.DOUBLE_TAP), counter=151), "bad_field",
        "DOUBLE_TAP must name the alarm it answers")
    bad("double_tap_before_counter_1", "alarm", "up",
        sealed(alarm_core(p.DOUBLE_TAP, delta=5), counter=5), "bad_field",
        "ref_delta 5 at counter 5 names counter 0")
    bad("counter_zero", "alarm", "up", sealed(alarm_core(p.SOS), counter=0), "bad_field",
        "counter 0 is reserved")
    bad("device_id_zero", "alarm", "up", sealed(alarm_core(p.SOS), counter=152, device=0),
        "bad_field", "device id 0 is reserved")
    bad("ack_ref_zero", "ack", "down", sealed(reply_core(1, 1, 0), "down", counter=14),
        "bad_field", "an ack of counter 0")
    bad("extension_twice", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=153, tail=bytes([3, 1, 50, 3, 1, 60])),
        "bad_extension", "battery extension appears twice")
    bad("extension_cut_short", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=154, size=22, tail=bytes([1, 10])),
        "bad_extension", "location says 10 bytes, the tag follows")
    bad("location_wrong_length", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=155, tail=bytes([1, 8]) + bytes(8)),
        "bad_extension", "location must be 10 bytes")
    bad("location_out_of_range", "checkin", "up",
        sealed(checkin_core(50), counter=156, tail=bytes([1, 10]) +
               struct.pack(">iiH", 900000001, 0, 0)), "bad_extension", "latitude past 90°")
    bad("age_extension", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=157, tail=bytes([2, 4, 0, 0, 0, 95])),
        "bad_extension", "v2 carries the age in the core, never as extension 0x02")
    bad("battery_extension_in_checkin", "checkin", "up",
        sealed(checkin_core(50), counter=158, tail=bytes([3, 1, 50])), "bad_extension",
        "the battery extension is for alarms")
    bad("padding_not_zero", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=159, tail=bytes([3, 1, 50, 0, 0, 7])),
        "bad_extension", "padding starts at the zero type byte and must stay zero")
    # Two faults in one frame: the reason is the first in SPEC section 6's v2 order.
    bad("two_faults_oversized_bad_version", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=160, size=65, first=0x30), "oversized",
        "65 bytes and version 3: size first")
    bad("two_faults_truncated_bad_version", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=161, first=0x30)[:16], "truncated",
        "16 bytes and version 3: size first")
    bad("two_faults_bad_version_bad_size", "alarm", "up",
        sealed(alarm_core(p.SOS), counter=162, size=25, first=0x30), "unsupported_version",
        "version 3 and 25 bytes: a v2 size is only judged once the version is 2")
    bad("two_faults_bad_size_wrong_direction", "ack", "up",
        sealed(reply_core(1, 1, 140), "down", counter=15)[:21], "truncated",
        "an ack cut to 21 bytes, decoded as an uplink: its size before its direction")
    bad("two_faults_wrong_direction_unknown_kind", "alarm", "up",
        sealed(alarm_core(0xF), "down", counter=16), "wrong_direction",
        "kind 15 sealed with the downlink keys, decoded as an uplink: nothing is decrypted "
        "once the MAC fails this way")
    bad("two_faults_bad_mac_unknown_type", "alarm", "up",
        flip_tag(sealed(alarm_core(p.SOS, code=0), counter=163)), "bad_mac",
        "type 0 under a broken tag: nothing is decrypted before the MAC verifies")
    bad("two_faults_unknown_type_counter_zero", "alarm", "up",
        sealed(alarm_core(p.SOS, code=0), counter=0), "unknown_type", "type before fields")
    bad("two_faults_truncated_core_counter_zero", "ack", "down",
        sealed(reply_core(1, 1, 140)[:3], "down", counter=0), "truncated",
        "an ack in 20 bytes with counter 0: the core's size before its fields")
    bad("two_faults_unknown_kind_counter_zero", "alarm", "up",
        sealed(alarm_core(0xF), counter=0), "unknown_kind",
        "kind 15 and counter 0: codes before fields")
    bad("two_faults_unknown_kind_bad_extension", "alarm", "up",
        sealed(alarm_core(0xF), counter=164, tail=bytes([2, 4, 0, 0, 0, 1])), "unknown_kind",
        "kind 15 and an age extension: codes before extensions")
    bad("two_faults_bad_field_bad_extension", "checkin", "up",
        sealed(checkin_core(110), counter=165, tail=bytes([3, 1, 50])), "bad_field",
        "battery 110% and a battery extension: fields before extensions")
    v += location_v2()
    return v


def location_v2():
    """Extensions 0x04 to 0x06 in v2, and the one size a wearable with location on keeps."""
    v = []

    def ok(name, frame, note="", size=0):
        data = p.encode(frame, KEY, version=2, size=size)
        decoded = p.decode(data, KEY, frame.DIRECTION)
        vec = {"name": "v2_" + name, "version": 2, "type": frame.NAME,
               "direction": frame.DIRECTION, "key": KEY.hex(), "frame": data.hex(),
               "valid": True, "fields": decoded.fields(), "note": note}
        if size and len(p.encode(frame, KEY, version=2)) < size:
            vec["canonical"] = False  # padded beyond the smallest size
        v.append(vec)

    def bad(name, type_name, data, error, note):
        v.append(invalid("v2_" + name, type_name, "up", data, error, note, KEY, 2))

    ok("alarm_sos_gnss_fix", p.Alarm(DEVICE, 170, "SOS", location=(515007800, -1275700, 9, 2)),
       "a fix 2 s old: 32 bytes, as with extension 0x01")
    ok("alarm_gnss_stale_fix", p.Alarm(DEVICE, 171, "FALL",
                                       location=(-338688000, 1512093000, 37, 3600)),
       "the last fix, an hour old: its age says 3712 s (rounded up), accuracy 38 m (up)")
    ok("alarm_gnss_and_two_beacons", p.Alarm(DEVICE, 172, "SOS",
                                              location=(515007800, -1275700, 9, 2),
                                              beacons=(5, heard_entries((-58, -71)))),
       "a fix and two beacons: 45 bytes of content in 48, the most a fix leaves room for")
    ok("checkin_five_beacons", p.CheckIn(DEVICE, 173, battery=80, interval=300,
                                         beacons=(0, heard_entries((-50, -61, -61, -80, -97)))),
       "five beacons fill a 48-byte frame exactly; equal RSSIs in any order")
    ok("checkin_eight_beacons", p.CheckIn(DEVICE, 174, battery=80, interval=300,
                                          beacons=(40, heard_entries(range(-40, -120, -10)))),
       "eight beacons, the most an extension holds: 64 bytes")
    ok("alarm_wifi_hint", p.Alarm(DEVICE, 175, "DURESS", wifi=(0, ((sid(WIFI_AP), -49),))),
       "no fix, no beacon: one access point as a hint")
    ok("checkin_location_on_padded", p.CheckIn(DEVICE, 176, battery=80, interval=300),
       "a wearable with location on seals every alarm and check-in at 48 bytes, "
       "even with nothing heard", size=48)
    ok("alarm_location_on_padded", p.Alarm(DEVICE, 177, "DURESS",
                                           beacons=(3, heard_entries((-66,), 1))),
       "a duress alarm with one beacon, sealed at 48 bytes like every other uplink", size=48)
    bad("gnss_wrong_length", "alarm",
        sealed(alarm_core(p.SOS), counter=178, tail=bytes([4, 9]) + bytes(9)),
        "bad_extension", "a GNSS fix must be 10 bytes")
    bad("two_locations", "checkin",
        sealed(checkin_core(50), counter=179, size=48,
               tail=bytes([1, 10]) + bytes(10) + bytes([4, 10]) + bytes(10)),
        "bad_extension", "extensions 0x01 and 0x04 in one frame")
    bad("beacons_out_of_order", "alarm",
        sealed(alarm_core(p.SOS), counter=180, tail=bytes([5, 11, 0]) + sid(IBEACON_HALL)
               + bytes([0xB9]) + sid(EDDYSTONE_STAIRS) + bytes([0xC6])),
        "bad_extension", "-71 dBm before -58 dBm: entries must be strongest first")
    bad("beacons_no_entry", "alarm",
        sealed(alarm_core(p.SOS), counter=181, tail=bytes([5, 1, 0])),
        "bad_extension", "a scan age and no beacon")
    bad("beacons_empty", "checkin", sealed(checkin_core(50), counter=182, tail=bytes([5, 0])),
        "bad_extension", "length 0: not even a scan age")
    bad("wifi_repeated", "alarm",
        sealed(alarm_core(p.SOS), counter=183, tail=bytes([6, 11, 0]) + sid(WIFI_AP)
               + bytes([0xCF]) + sid(WIFI_AP) + bytes([0xCF])),
        "bad_extension", "one access point twice")
    bad("beacons_rssi_out_of_range", "checkin",
        sealed(checkin_core(50), counter=184, tail=bytes([5, 6, 0]) + sid(IBEACON_HALL)
               + bytes([0x80])), "bad_extension", "-128 dBm: below an advertising report's "
                                                   "-127 (127 is 'not available')")
    return v


def beacon_ids():
    """Golden short ids (SPEC section 4): one of each kind."""
    return [{"kind": kind, "identifier": ident.hex(), "short_id": p.short_id(kind, ident).hex()}
            for kind, ident in (IBEACON_HALL, EDDYSTONE_STAIRS, WIFI_AP)]


def flip_tag(data):
    return data[:-1] + bytes([data[-1] ^ 1])


def swapped(message, key=KEY):
    """header | plaintext sealed with the uplink subkeys in each other's place."""
    enc, mac = p.DeviceKey(key).subkeys("up")
    wrong = p.DeviceKey(bytes(32))
    wrong._v2 = {"up": (mac_module._keyed(mac), mac_module._keyed(enc))}
    buf = bytearray(message + bytes(8))
    frames._seal(wrong, "up", buf)
    return bytes(buf)


def derived_keys():
    key = p.DeviceKey(KEY)
    out = {"key": KEY.hex()}
    for direction in ("up", "down"):
        enc, mac = key.subkeys(direction)
        out[direction] = {"enc": enc.hex(), "mac": mac.hex()}
    return out


def build():
    return build_v1() + build_v2()


def main():
    vectors = build()
    for vec in vectors:  # the generator checks itself against the codec before writing
        data = bytes.fromhex(vec["frame"])
        try:
            frame = p.decode(data, bytes.fromhex(vec["key"]), vec["direction"])
        except p.RemoteProtocolError as exc:
            assert not vec["valid"] and exc.reason == vec["error"], (vec["name"], exc)
        else:
            assert vec["valid"] and frame.fields() == vec["fields"], vec["name"]
    doc = {"protocol": "vigil", "versions": [1, 2],
           "about": "Golden vectors for protocol/SPEC.md. 'direction' is the direction the "
                    "receiver decodes in; 'error' is the rejection reason code; "
                    "'canonical': false marks a valid frame the encoder would not make.",
           "v2_keys": derived_keys(),
           "beacon_ids": beacon_ids(),
           "vectors": vectors}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    for version in (1, 2):
        mine = [x for x in vectors if x["version"] == version]
        bad = sum(1 for x in mine if not x["valid"])
        print("v%d: %d vectors (%d invalid)" % (version, len(mine), bad))
    print("wrote %d vectors to %s" % (len(vectors), OUT))


if __name__ == "__main__":
    main()
