"""Write protocol/vectors.json, the golden vectors every interpreter's tests read.

Run it only when the protocol changes on purpose (`python tests/protocol/make_vectors.py`);
the tests then check the committed file, so an accidental change to the codec shows up as a
failing vector rather than a silently regenerated one.
"""
import json
import pathlib
import struct
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "protocol"))

import vigil_protocol as p  # noqa: E402

KEY = bytes(range(0x40, 0x60))
OTHER_KEY = bytes(range(0xA0, 0xC0))
DEVICE = 0x00C0FFEE
OUT = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "vectors.json"


def signed(message, direction, key=KEY):
    """Sign raw bytes as-is: how the invalid vectors get a valid MAC over bad content."""
    return message + p.DeviceKey(key).tag(direction, message)


def header(frame_type, counter, device=DEVICE, version=1):
    return struct.pack(">BII", (version << 4) | frame_type, device, counter)


def valid(name, frame, note=""):
    data = p.encode(frame, KEY)
    return {"name": name, "type": frame.NAME, "direction": frame.DIRECTION, "key": KEY.hex(),
            "frame": data.hex(), "valid": True, "fields": frame.fields(), "note": note}


def invalid(name, type_name, direction, data, error, note, key=KEY):
    return {"name": name, "type": type_name, "direction": direction, "key": key.hex(),
            "frame": data.hex(), "valid": False, "error": error, "note": note}


def build():
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
    v.append({"name": "alarm_unknown_extension_skipped", "type": "alarm", "direction": "up",
              "key": KEY.hex(), "frame": signed(unknown_ext, "up").hex(), "valid": True,
              "fields": {"device_id": DEVICE, "counter": 24, "kind": "SOS", "ref": 0,
                         "unknown_extensions": [0x40]},
              "note": "extension 0x40 is from a newer peer: skipped, frame accepted"})
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
    ]
    return v


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
    doc = {"protocol": "vigil", "version": 1,
           "about": "Golden vectors for protocol/SPEC.md. 'direction' is the direction the "
                    "receiver decodes in; 'error' is the rejection reason code.",
           "vectors": vectors}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    bad = sum(1 for x in vectors if not x["valid"])
    print("wrote %d vectors (%d invalid) to %s" % (len(vectors), bad, OUT))


if __name__ == "__main__":
    main()
