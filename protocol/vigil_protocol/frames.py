# Vigil frames, versions 1 and 2: byte layouts, encoding and decoding. Sans-I/O: bytes in,
# objects out.
#
# Rules (protocol/SPEC.md is the full text):
#   v1 frame = header | body | extensions | tag                        every byte in clear
#   v2 frame = header | E(core | extensions | zero padding) | tag     one of V2_SIZES long
#   header   = first byte | device_id u32 | counter u32   (big-endian; in v2 the only clear part)
#              first byte: v1 version << 4 | type;  v2 0x20 (the type travels encrypted)
#   v1 tag   = HMAC-SHA256(key, direction label | header | body | extensions)[0:8]
#   v2       E = XOR with HMAC-SHA256(encryption key, header | block number), 32 bytes a block;
#            tag = HMAC-SHA256(MAC key, header | ciphertext)[0:8]; keys per direction (mac.py)
#   v1 types 0x1-0x7 are uplinks, 0x8-0xF downlinks; v2 types are 2 bits within a direction
#   alarm    v1 body = kind u8 | ref_delta u16                  -> 20 bytes without extensions
#            v2 core = type:2 kind:4 ref_delta:10 age:8         -> 20 bytes, as a check-in
#   checkin  v1 body = battery u8 | flags u8 | interval u16
#            v2 core = type:2 flags:5 battery:7 interval:10
#   ack, action  v1 body = ref u32 | code u8;  v2 core = type:2 code:6 | ref u32   -> 22 bytes
#   receipt  v2 only: core = type:2 downlink:22 (low bits of a downlink counter)   -> 20 bytes
#   extensions = (type u8 | length u8 | value)*; unknown types are skipped, known ones checked;
#     in v2 a zero type byte starts the padding, which is zeros up to the tag
#   location extensions: 0x01 lat | lon | accuracy u16 (no age: older senders), 0x04 the same
#     fix with accuracy and fix age as 8-bit floats rounded up, 0x05 BLE beacons and 0x06 Wi-Fi
#     access points heard: scan age | (short id 4 bytes | rssi i8) strongest first
#   The decoder checks, in order (SPEC section 6): size, version, then v1: type, body size,
#   direction, MAC; v2: size class, MAC (and whether it verifies the other way: direction),
#   decryption, type, body size; then both: codes, fields, extensions. Nothing is read from a
#   frame before its tag verifies but what finds its key; a v2 frame is not even decrypted.
import struct

import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

from ._compat import const
from .mac import DOWN, TAG_LEN, UP, as_key, equal

# Private const() names are folded into the code by MicroPython: no heap on the wearable.
_V1 = const(1)
_V2 = const(2)
_V2_FIRST = const(0x20)  # byte 0 of every v2 frame: version 2, nothing else in clear
MAX_FRAME = const(64)
HEADER_LEN = const(9)
_MAX_U32 = const(0xFFFFFFFF)
# Every v2 frame is one of these sizes: core uplinks 20 (alarm and check-in alike), core
# downlinks 22 (ack and action alike), frames with extensions padded to the next size.
V2_SIZES = (20, 22, 32, 48, 64)

_TYPE_ALARM = const(0x1)
_TYPE_CHECKIN = const(0x2)
_TYPE_ACK = const(0x8)
_TYPE_ACTION = const(0x9)

# Alarm kinds. DOUBLE_TAP answers an open alarm: its `ref` names that alarm's counter.
SOS = const(1)
DURESS = const(2)
DOUBLE_TAP = const(3)
FALL = const(4)
LOW_BATTERY = const(5)
NO_MOTION = const(6)
KINDS = {SOS: "SOS", DURESS: "DURESS", DOUBLE_TAP: "DOUBLE_TAP", FALL: "FALL",
         LOW_BATTERY: "LOW_BATTERY", NO_MOTION: "NO_MOTION"}

# Acknowledgement stages: each says only what is true at the gateway.
RECEIVED = const(1)   # the gateway has the frame on disk
DELIVERED = const(2)  # a responder backend accepted the alarm
STAGES = {RECEIVED: "RECEIVED", DELIVERED: "DELIVERED"}

# Responder actions, bound to an alarm counter.
ACKNOWLEDGED = const(1)
PROMPT_DOUBLE_TAP = const(2)
HELP_DISPATCHED = const(3)
RESOLVED = const(4)
ACTIONS = {ACKNOWLEDGED: "ACKNOWLEDGED", PROMPT_DOUBLE_TAP: "PROMPT_DOUBLE_TAP",
           HELP_DISPATCHED: "HELP_DISPATCHED", RESOLVED: "RESOLVED"}

# Check-in status flags; unknown bits are kept and ignored (v2 carries bits 0-4 only).
FLAG_CHARGING = const(0x01)
FLAG_ALARM_OPEN = const(0x02)
FLAG_OUTBOX_PENDING = const(0x04)
FLAG_LOW_BATTERY = const(0x08)
FLAG_FAULT = const(0x10)

BATTERY_UNKNOWN = const(255)
_BATTERY2_UNKNOWN = const(127)  # the 7-bit v2 battery field's "unknown"

_MAX_DELTA2 = const(1023)  # v2 ref_delta is 10 bits
_MAX_FLAGS2 = const(0x1F)  # v2 flags are 5 bits
_MAX_INTERVAL2 = const(153000)  # the longest v2 interval: 255 x 10 min

# Extension types (their value lengths: Frame._EXT_LEN).
_EXT_LOCATION = const(0x01)  # lat_e7 i32 | lon_e7 i32 | accuracy_m u16
_EXT_AGE = const(0x02)       # v1: seconds between raising the alarm and encoding this frame
_EXT_BATTERY = const(0x03)   # battery percent u8
_EXT_GNSS = const(0x04)      # lat_e7 i32 | lon_e7 i32 | accuracy f8 | fix age f8 (rounded up)
_EXT_BEACONS = const(0x05)   # scan age f8 | (short id 4 bytes | rssi i8) x 1..8, strongest first
_EXT_WIFI = const(0x06)      # the same for Wi-Fi access points (BSSIDs)
_MAX_HEARD = const(8)        # entries in a beacons or Wi-Fi extension
_RSSI_MIN = const(-127)      # the range of an LE advertising report's RSSI (Core spec, HCI)
_RSSI_MAX = const(20)


# -- v2 compact numbers ---------------------------------------------------------------------

def age_code(seconds, up=False):
    """The 8-bit v2 age of an alarm that waited `seconds`: a float with a 4-bit exponent and a
    4-bit mantissa, rounded down (the gateway learns a lower bound, within 1/16), 255 for
    507,904 s (5.9 days) or more. up=True rounds up instead (a fix age or an accuracy, which
    must never look better than it is); 255 is then "507,904 or more"."""
    if seconds < 32:  # codes 0..31 are exact (e = 0, and e = 1 with a step of 1)
        return seconds
    e = 1
    while seconds >> (e - 1) >= 32:
        e += 1
    m = (seconds >> (e - 1)) - 16
    if up and seconds & ((1 << (e - 1)) - 1):
        m += 1
        if m == 16:
            m = 0
            e += 1
    if e > 15:
        return 255
    return (e << 4) | m


def age_seconds(code):
    """The seconds an 8-bit v2 age stands for (at least that long)."""
    e = code >> 4
    if e == 0:
        return code
    return (16 | (code & 0x0F)) << (e - 1)


_INTERVAL_UNITS = (1, 10, 60, 600)


def interval_code(seconds):
    """The 10-bit v2 check-in interval: unit:2 (1 s, 10 s, 1 min, 10 min) and count:8, in the
    finest unit that holds it, rounded up (the next check-in comes within the announced
    interval). Exact for every interval up to 255 s, every 10 s up to 2550 s, every minute
    up to 255 min; 0 is "not announced"."""
    for i in range(4):
        unit = _INTERVAL_UNITS[i]
        count = (seconds + unit - 1) // unit
        if count <= 255:
            return (i << 8) | count
    raise protocol.LocalProtocolError("a v2 interval is at most %d s" % _MAX_INTERVAL2)


def interval_seconds(code):
    return _INTERVAL_UNITS[code >> 8] * (code & 0xFF)


def _code_of(table, name_or_code, what):
    if isinstance(name_or_code, int):
        if name_or_code in table:
            return name_or_code
    else:
        for code, name in table.items():
            if name == name_or_code:
                return code
    raise protocol.LocalProtocolError("unknown %s %r" % (what, name_or_code))


def _check_u32(value, what):
    if not isinstance(value, int) or value < 1 or value > _MAX_U32:
        raise protocol.LocalProtocolError("%s must be an integer from 1 to 2**32-1" % what)


class Frame:
    """Common header and extensions. Subclasses say their type, body and v2 core, and
    downlinks their direction."""

    TYPE = 0  # v1 type code (the header's low nibble)
    CODE2 = 0  # v2 type code (the first 2 bits of the encrypted core)
    NAME = ""
    DIRECTION = UP
    BODY = ""
    BODY_LEN = 0
    CORE2 = 0  # v2 core length
    EXTENSIONS = ()  # type: tuple  # extension types this frame may carry
    # known type -> value length; 0: a scan age and 5-byte entries (_length_ok())
    _EXT_LEN = {_EXT_LOCATION: 10, _EXT_AGE: 4, _EXT_BATTERY: 1, _EXT_GNSS: 10,
                _EXT_BEACONS: 0, _EXT_WIFI: 0}
    # Heard beacons and access points: (scan age s, ((short id, rssi), ...)) or None. Class
    # defaults, set on an instance only when present: no heap per frame on the wearable.
    beacons = None
    wifi = None

    def __init__(self, device_id, counter):
        self.device_id = device_id
        self.counter = counter
        # (lat_e7, lon_e7, accuracy_m), or (lat_e7, lon_e7, accuracy_m, fix_age_s): a fix whose
        # age is known, sent as extension 0x04 (accuracy and age rounded up)
        self.location = None
        self.age = None
        self.battery_ext = None
        self.unknown_extensions = []
        self.tag = None  # set by encode() and decode(): identifies these exact bytes
        self.version = None  # set by encode() and decode(): 1 or 2

    # -- subclass hooks --
    def _body(self):
        raise NotImplementedError

    def _core2(self, buf):
        """Write the v2 core into buf[HEADER_LEN:HEADER_LEN + CORE2] (no temporary bytes)."""
        raise NotImplementedError

    def _values2(self, core):
        """The core's fields, in the order struct.unpack(BODY) gives v1's (then v2's own)."""
        raise NotImplementedError

    def _codes(self, values):
        """Reject a kind, stage or action code that is not assigned (unknown_kind)."""

    def _parse_body(self, values):
        raise NotImplementedError

    def _body_fields(self, fields):
        raise NotImplementedError

    # -- extensions --
    def _extensions(self, version=_V1):
        out = b""
        gnss = None
        if self.location is not None:
            if _EXT_LOCATION not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no location" % self.NAME)
            lat, lon, acc = self.location[:3]
            gnss_fix = len(self.location) == 4  # a fix with its age: extension 0x04
            if not (-900000000 <= lat <= 900000000 and -1800000000 <= lon <= 1800000000
                    and 0 <= acc and (gnss_fix or acc <= 0xFFFF)):  # (0x04: any, as an f8)
                raise protocol.LocalProtocolError("location out of range")
            if gnss_fix:  # written after the battery (ascending types)
                if not (isinstance(self.location[3], int) and self.location[3] >= 0):
                    raise protocol.LocalProtocolError("fix age out of range")
                gnss = struct.pack(">BBiiBB", _EXT_GNSS, 10, lat, lon, age_code(acc, True),
                                   age_code(self.location[3], True))
            else:
                out += struct.pack(">BBiiH", _EXT_LOCATION, 10, lat, lon, acc)
        if self.age is not None:
            if _EXT_AGE not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no age" % self.NAME)
            if not (0 <= self.age <= _MAX_U32):
                raise protocol.LocalProtocolError("age out of range")
            if version == _V1:  # v2 carries the age in the core
                out += struct.pack(">BBI", _EXT_AGE, 4, self.age)
        if self.battery_ext is not None:
            if _EXT_BATTERY not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no battery extension"
                                                  % self.NAME)
            _check_battery_local(self.battery_ext)
            out += struct.pack(">BBB", _EXT_BATTERY, 1, self.battery_ext)
        if gnss is not None:
            out += gnss
        if self.beacons is not None:
            out += self._heard_ext(_EXT_BEACONS, self.beacons)
        if self.wifi is not None:
            out += self._heard_ext(_EXT_WIFI, self.wifi)
        return out

    def _heard_ext(self, ext_type, heard):
        """Extension 0x05 or 0x06 from (scan age s, ((short id, rssi), ...)), strongest first."""
        if ext_type not in self.EXTENSIONS:
            raise protocol.LocalProtocolError("%s frames carry no beacons" % self.NAME)
        age, entries = heard
        if not (isinstance(age, int) and age >= 0 and 1 <= len(entries) <= _MAX_HEARD):
            raise protocol.LocalProtocolError("heard: a scan age and 1 to %d entries"
                                              % _MAX_HEARD)
        out = bytearray(3 + 5 * len(entries))
        out[0] = ext_type
        out[1] = 1 + 5 * len(entries)
        out[2] = age_code(age, True)
        i = 3
        for short_id, rssi in entries:
            if len(short_id) != 4 or not (_RSSI_MIN <= rssi <= _RSSI_MAX):
                raise protocol.LocalProtocolError("heard: 4-byte ids, rssi -127..20 dBm")
            out[i:i + 4] = short_id
            out[i + 4] = rssi & 0xFF
            i += 5
        _check_heard(out, 3, len(out), protocol.LocalProtocolError)  # order, repeats
        return out

    def _parse_extensions(self, data, start, end, version=_V1):
        if start >= end:
            return
        seen = []
        i = start
        while i < end:
            ext_type = data[i]
            if ext_type == 0 and version == _V2:  # the padding: zeros up to the tag
                while i < end:
                    if data[i]:
                        raise protocol.BadExtension("padding is not all zeros (byte %d)"
                                                    % (HEADER_LEN + i))
                    i += 1
                return
            if end - i < 2:
                raise protocol.BadExtension("extension header cut short")
            length = data[i + 1]
            i += 2
            if i + length > end:
                raise protocol.BadExtension("extension 0x%02x runs past the tag" % ext_type)
            if ext_type == 0:
                raise protocol.BadExtension("extension type 0 is reserved")
            if ext_type in seen:
                raise protocol.BadExtension("extension 0x%02x appears twice" % ext_type)
            seen.append(ext_type)
            if ext_type not in self._EXT_LEN:
                self.unknown_extensions.append(ext_type)  # newer peer: skip it
            elif ext_type not in self.EXTENSIONS or (ext_type == _EXT_AGE and version == _V2):
                raise protocol.BadExtension("extension 0x%02x is not allowed in a v%d %s"
                                            % (ext_type, version, self.NAME))
            elif not _length_ok(self._EXT_LEN[ext_type], length):
                raise protocol.BadExtension("extension 0x%02x has length %d" % (ext_type, length))
            elif ext_type == _EXT_LOCATION or ext_type == _EXT_GNSS:
                if _EXT_LOCATION in seen and _EXT_GNSS in seen:
                    raise protocol.BadExtension("two locations (0x01 and 0x04)")
                if ext_type == _EXT_LOCATION:
                    lat, lon, acc = struct.unpack_from(">iiH", data, i)
                    self.location = (lat, lon, acc)
                else:
                    lat, lon = struct.unpack_from(">ii", data, i)
                    self.location = (lat, lon, age_seconds(data[i + 8]),
                                     age_seconds(data[i + 9]))
                if not (-900000000 <= lat <= 900000000 and -1800000000 <= lon <= 1800000000):
                    raise protocol.BadExtension("location out of range")
            elif ext_type == _EXT_BEACONS or ext_type == _EXT_WIFI:
                _check_heard(data, i + 1, i + length, protocol.BadExtension)
                heard = (age_seconds(data[i]), tuple(
                    (bytes(data[j:j + 4]), _signed8(data[j + 4]))
                    for j in range(i + 1, i + length, 5)))
                if ext_type == _EXT_BEACONS:
                    self.beacons = heard
                else:
                    self.wifi = heard
            elif ext_type == _EXT_AGE:
                self.age = struct.unpack_from(">I", data, i)[0]
            else:
                if data[i] > 100 and data[i] != BATTERY_UNKNOWN:
                    raise protocol.BadExtension("battery %d%% out of range" % data[i])
                self.battery_ext = data[i]
            i += length

    def fields(self):
        """Decoded fields as plain data (the form protocol/vectors.json uses)."""
        fields = {"device_id": self.device_id, "counter": self.counter}
        self._body_fields(fields)
        if self.location is not None:
            fields["location"] = {"lat_e7": self.location[0], "lon_e7": self.location[1],
                                  "accuracy_m": self.location[2]}
            if len(self.location) == 4:
                fields["location"]["fix_age"] = self.location[3]
        for name in ("beacons", "wifi"):
            heard = getattr(self, name)
            if heard is not None:
                fields[name] = {"age": heard[0], "heard": [
                    {"id": _hex(short_id), "rssi": rssi} for short_id, rssi in heard[1]]}
        if self.age is not None:
            fields["age"] = self.age
        if self.battery_ext is not None:
            fields["battery"] = self.battery_ext
        if self.unknown_extensions:
            fields["unknown_extensions"] = list(self.unknown_extensions)
        return fields

    def __repr__(self):
        return "<%s %r>" % (self.NAME, self.fields())


def _length_ok(want, length):
    """want: a fixed value length, or 0 for a scan age and 1 to 8 entries of 5 bytes."""
    if want:
        return length == want
    return 6 <= length <= 1 + 5 * _MAX_HEARD and (length - 1) % 5 == 0


def _heard_attrs(frame, beacons, wifi):
    if beacons is not None:
        frame.beacons = beacons
    if wifi is not None:
        frame.wifi = wifi


def _check_heard(data, start, end, error):
    """Entries of a beacons or Wi-Fi extension in data[start:end]: each rssi within
    -127..+20 dBm, strongest first, no short id twice."""
    last = _RSSI_MAX
    for i in range(start, end, 5):
        rssi = _signed8(data[i + 4])
        if not (_RSSI_MIN <= rssi <= last):
            raise error("heard: rssi %d out of range or out of order" % rssi)
        last = rssi
        for j in range(start, i, 5):
            if data[j:j + 4] == data[i:i + 4]:
                raise error("heard: short id %s twice" % _hex(data[i:i + 4]))


def _signed8(byte):
    return byte - 256 if byte > 127 else byte


def _hex(data):
    return "".join("%02x" % b for b in data)  # (bytes.hex() is not on every MicroPython)


def _check_battery_local(value):
    if not isinstance(value, int) or not (0 <= value <= 100 or value == BATTERY_UNKNOWN):
        raise protocol.LocalProtocolError("battery is 0-100 percent or 255 (unknown)")


class Alarm(Frame):
    TYPE = _TYPE_ALARM
    CODE2 = 1
    NAME = "alarm"
    BODY = ">BH"
    BODY_LEN = 3
    CORE2 = 3
    EXTENSIONS = (_EXT_LOCATION, _EXT_AGE, _EXT_BATTERY, _EXT_GNSS, _EXT_BEACONS, _EXT_WIFI)

    def __init__(self, device_id, counter, kind, ref=0, location=None, age=None, battery=None,
                 beacons=None, wifi=None):
        Frame.__init__(self, device_id, counter)
        self.kind = _code_of(KINDS, kind, "alarm kind")
        self.ref = ref
        self.location = location
        self.age = age
        self.battery_ext = battery
        _heard_attrs(self, beacons, wifi)

    @property
    def kind_name(self):
        return KINDS.get(self.kind, "UNKNOWN(%d)" % self.kind)

    def _delta(self, kind, most):
        if kind != DOUBLE_TAP:
            if self.ref:
                raise protocol.LocalProtocolError("only DOUBLE_TAP names another alarm")
            return 0
        if not isinstance(self.ref, int) or not (1 <= self.counter - self.ref <= most):
            raise protocol.LocalProtocolError("DOUBLE_TAP must name an earlier alarm counter "
                                              "within %d of its own" % most)
        return self.counter - self.ref

    def _body(self):
        kind = _code_of(KINDS, self.kind, "alarm kind")
        return struct.pack(self.BODY, kind, self._delta(kind, 0xFFFF))

    def _core2(self, buf):
        kind = _code_of(KINDS, self.kind, "alarm kind")
        delta = self._delta(kind, _MAX_DELTA2)
        age = 0 if self.age is None else self.age
        if not isinstance(age, int) or not (0 <= age <= _MAX_U32):
            raise protocol.LocalProtocolError("age out of range")
        buf[HEADER_LEN] = (self.CODE2 << 6) | (kind << 2) | (delta >> 8)
        buf[HEADER_LEN + 1] = delta & 0xFF
        buf[HEADER_LEN + 2] = age_code(age)

    def _values2(self, core):
        return (core[0] >> 2) & 0x0F, ((core[0] & 0x03) << 8) | core[1], age_seconds(core[2])

    def _codes(self, values):
        if values[0] not in KINDS:
            raise protocol.UnknownKind("alarm kind %d" % values[0])

    def _parse_body(self, values):
        kind = values[0]
        delta = values[1]
        if kind == DOUBLE_TAP:
            if delta == 0 or delta >= self.counter:
                raise protocol.BadField("DOUBLE_TAP must name an earlier alarm counter")
            self.ref = self.counter - delta
        else:
            if delta:
                raise protocol.BadField("only DOUBLE_TAP names another alarm")
            self.ref = 0
        self.kind = kind
        if len(values) > 2:
            self.age = values[2]

    def _body_fields(self, fields):
        fields["kind"] = self.kind_name
        fields["ref"] = self.ref


class CheckIn(Frame):
    TYPE = _TYPE_CHECKIN
    CODE2 = 2
    NAME = "checkin"
    BODY = ">BBH"
    BODY_LEN = 4
    CORE2 = 3
    EXTENSIONS = (_EXT_LOCATION, _EXT_GNSS, _EXT_BEACONS, _EXT_WIFI)

    def __init__(self, device_id, counter, battery=BATTERY_UNKNOWN, flags=0, interval=0,
                 location=None, beacons=None, wifi=None):
        Frame.__init__(self, device_id, counter)
        self.battery = battery
        self.flags = flags
        self.interval = interval  # seconds until the next check-in; 0 = not announced
        self.location = location
        _heard_attrs(self, beacons, wifi)

    def _check(self, flags_max, interval_max):
        _check_battery_local(self.battery)
        if not (0 <= self.flags <= flags_max and 0 <= self.interval <= interval_max):
            raise protocol.LocalProtocolError("flags is %d bits and interval at most %d s"
                                              % (8 if flags_max == 0xFF else 5, interval_max))

    def _body(self):
        self._check(0xFF, 0xFFFF)
        return struct.pack(self.BODY, self.battery, self.flags, self.interval)

    def _core2(self, buf):
        self._check(_MAX_FLAGS2, _MAX_INTERVAL2)
        battery = _BATTERY2_UNKNOWN if self.battery == BATTERY_UNKNOWN else self.battery
        interval = interval_code(self.interval)
        buf[HEADER_LEN] = (self.CODE2 << 6) | (self.flags << 1) | (battery >> 6)
        buf[HEADER_LEN + 1] = ((battery & 0x3F) << 2) | (interval >> 8)
        buf[HEADER_LEN + 2] = interval & 0xFF

    def _values2(self, core):
        battery = ((core[0] & 0x01) << 6) | (core[1] >> 2)
        if battery == _BATTERY2_UNKNOWN:
            battery = BATTERY_UNKNOWN
        return battery, (core[0] >> 1) & 0x1F, interval_seconds(((core[1] & 0x03) << 8)
                                                                 | core[2])

    def _parse_body(self, values):
        self.battery, self.flags, self.interval = values
        if self.battery > 100 and self.battery != BATTERY_UNKNOWN:
            raise protocol.BadField("battery %d%% out of range" % self.battery)

    def _body_fields(self, fields):
        fields["battery"] = self.battery
        fields["flags"] = self.flags
        fields["interval"] = self.interval


class _Reply(Frame):
    """A downlink about one uplink counter (`ref`) with a one-byte code."""

    DIRECTION = DOWN
    BODY = ">IB"
    BODY_LEN = 5
    CORE2 = 5
    CODES = {}  # type: dict
    FIELD = ""

    def __init__(self, device_id, counter, ref, code):
        Frame.__init__(self, device_id, counter)
        self.ref = ref
        self.code = _code_of(self.CODES, code, self.FIELD)

    @property
    def code_name(self):
        return self.CODES.get(self.code, "UNKNOWN(%d)" % self.code)

    def _body(self):
        _check_u32(self.ref, "ref")
        return struct.pack(self.BODY, self.ref, _code_of(self.CODES, self.code, self.FIELD))

    def _core2(self, buf):
        _check_u32(self.ref, "ref")
        struct.pack_into(">BI", buf, HEADER_LEN, (self.CODE2 << 6)
                         | _code_of(self.CODES, self.code, self.FIELD), self.ref)

    def _values2(self, core):
        return struct.unpack_from(">I", core, 1)[0], core[0] & 0x3F

    def _codes(self, values):
        if values[1] not in self.CODES:
            raise protocol.UnknownKind("%s %d" % (self.FIELD, values[1]))

    def _parse_body(self, values):
        self.ref, self.code = values
        if self.ref == 0:
            raise protocol.BadField("%s names counter 0" % self.NAME)

    def _body_fields(self, fields):
        fields["ref"] = self.ref
        fields[self.FIELD] = self.code_name


class Ack(_Reply):
    TYPE = _TYPE_ACK
    CODE2 = 1
    NAME = "ack"
    CODES = STAGES
    FIELD = "stage"

    @property
    def stage(self):
        return self.code


class Action(_Reply):
    TYPE = _TYPE_ACTION
    CODE2 = 2
    NAME = "action"
    CODES = ACTIONS
    FIELD = "action"

    @property
    def action(self):
        return self.code


class Receipt(Frame):
    """v2 only: the wearable has taken the downlink whose counter ends in `downlink` (its low
    22 bits), a stored one (DELIVERED ack or responder action), so the gateway stops offering
    it again. Sent for a repeat too: a lost receipt is made good by the next offer."""

    TYPE = 0  # no v1 form
    CODE2 = 3
    NAME = "receipt"
    CORE2 = 3
    MASK = 0x3FFFFF

    def __init__(self, device_id, counter, downlink):
        Frame.__init__(self, device_id, counter)
        self.downlink = downlink

    def _core2(self, buf):
        if not isinstance(self.downlink, int) or self.downlink < 0:
            raise protocol.LocalProtocolError("a receipt names a downlink counter")
        low = self.downlink & self.MASK
        buf[HEADER_LEN] = (self.CODE2 << 6) | (low >> 16)
        buf[HEADER_LEN + 1] = (low >> 8) & 0xFF
        buf[HEADER_LEN + 2] = low & 0xFF

    def _values2(self, core):
        return (((core[0] & 0x3F) << 16) | (core[1] << 8) | core[2],)

    def _parse_body(self, values):
        self.downlink = values[0]

    def _body_fields(self, fields):
        fields["downlink"] = self.downlink

    def resolve(self, highest):
        """The full downlink counter this receipt names, given the highest one the gateway
        has used for the device (the receipt's is at most that, within 2**22 of it)."""
        return highest - ((highest - self.downlink) & self.MASK)


TYPES = {_TYPE_ALARM: Alarm, _TYPE_CHECKIN: CheckIn, _TYPE_ACK: Ack,
         _TYPE_ACTION: Action}  # type: dict[int, type[Frame]]  # v1 types
TYPE_NAMES = {Alarm.NAME: Alarm, CheckIn.NAME: CheckIn, Ack.NAME: Ack, Action.NAME: Action,
              Receipt.NAME: Receipt}
# v2 type codes, by the direction the frame verified in: code -> class (0 unassigned, and 3
# downlinks)
_TYPES2 = {UP: (None, Alarm, CheckIn, Receipt),
           DOWN: (None, Ack, Action, None)}  # type: dict[str, tuple[type[Frame] | None, ...]]


class Header:
    """What can be read from a frame before its key is known (to look the key up): in v2 the
    version, device id and counter only; the type is None there (it travels encrypted)."""

    def __init__(self, version, frame_type, device_id, counter):
        self.version = version
        self.frame_type = frame_type
        self.device_id = device_id
        self.counter = counter
        self.cls = None if frame_type is None else TYPES[frame_type]
        self.name = None if self.cls is None else self.cls.NAME
        self.direction = None if self.cls is None else self.cls.DIRECTION


def peek(data):
    """Check a frame's size and version (and a v1 frame's type) and return its Header.
    Verifies nothing."""
    n = len(data)
    if n > MAX_FRAME:
        raise protocol.Oversized("%d bytes, at most %d" % (n, MAX_FRAME))
    if n < HEADER_LEN + TAG_LEN:
        raise protocol.Truncated("%d bytes, at least %d" % (n, HEADER_LEN + TAG_LEN))
    first, device_id, counter = struct.unpack_from(">BII", data, 0)
    if first == _V2_FIRST:
        if n not in V2_SIZES:
            raise protocol.Truncated("%d bytes: a v2 frame is 20, 22, 32, 48 or 64" % n)
        return Header(_V2, None, device_id, counter)
    if first >> 4 != _V1:
        raise protocol.UnsupportedVersion("first byte 0x%02x: this side speaks 1 (0x1t) and "
                                          "2 (0x20)" % first)
    frame_type = first & 0x0F
    if frame_type not in TYPES:
        raise protocol.UnknownType("type 0x%x" % frame_type)
    return Header(_V1, frame_type, device_id, counter)


def decode(data, key, direction):
    """Verify and parse one frame, v1 or v2, received in `direction` ("up" at a gateway,
    "down" at a wearable). Raises a RemoteProtocolError subclass naming the reason on any
    fault."""
    if direction != UP and direction != DOWN:
        raise protocol.LocalProtocolError("direction must be 'up' or 'down'")
    header = peek(data)
    if header.version == _V2:
        return _decode2(data, as_key(key), direction, header)
    cls = header.cls
    body_end = HEADER_LEN + cls.BODY_LEN
    tag_start = len(data) - TAG_LEN
    if tag_start < body_end:
        raise protocol.Truncated("%s needs at least %d bytes" % (cls.NAME, body_end + TAG_LEN))
    if cls.DIRECTION != direction:
        raise protocol.WrongDirection("%s is a %s frame, received as %s"
                                      % (cls.NAME, cls.DIRECTION, direction))
    message = data[:tag_start]
    tag = bytes(data[tag_start:])
    if not as_key(key).verify(direction, message, tag):
        raise protocol.BadMac("MAC does not verify")
    frame = object.__new__(cls)
    Frame.__init__(frame, header.device_id, header.counter)
    return _parse(frame, struct.unpack_from(cls.BODY, data, HEADER_LEN), data, body_end,
                  tag_start, tag, _V1)


def _decode2(data, key, direction, header):
    n = len(data)
    tag_start = n - TAG_LEN
    message = memoryview(data)[:tag_start]
    tag = bytes(data[tag_start:])
    if not equal(key.seal_tag(direction, message), tag):
        other = DOWN if direction == UP else UP
        if equal(key.seal_tag(other, message), tag):
            raise protocol.WrongDirection("a %s frame (its MAC verifies with the %s keys), "
                                          "received as %s" % (other, other, direction))
        raise protocol.BadMac("MAC does not verify")
    core = bytearray(data[HEADER_LEN:tag_start])
    key.crypt(direction, message[:HEADER_LEN], core, 0, len(core))
    cls = _TYPES2[direction][core[0] >> 6]
    if cls is None:
        raise protocol.UnknownType("v2 %s type %d" % (direction, core[0] >> 6))
    if len(core) < cls.CORE2:
        raise protocol.Truncated("a v2 %s needs at least %d bytes"
                                 % (cls.NAME, HEADER_LEN + cls.CORE2 + TAG_LEN))
    frame = object.__new__(cls)
    Frame.__init__(frame, header.device_id, header.counter)
    return _parse(frame, frame._values2(core), core, cls.CORE2, len(core), tag, _V2)


def _parse(frame, values, data, start, end, tag, version):
    """The checks after the MAC, in SPEC order: codes, fields, extensions."""
    frame._codes(values)
    if frame.device_id == 0 or frame.counter == 0:
        raise protocol.BadField("device id and counter 0 are reserved")
    frame._parse_body(values)
    frame._parse_extensions(data, start, end, version)
    frame.tag = tag
    frame.version = version
    return frame


def encode(frame, key, version=_V1, size=0):
    """Sign and serialise a frame: v1 unless version=2 asks for a sealed (encrypted) one.
    v2 pads to the smallest size that holds the frame and is at least `size` (a sender that
    seals every alarm and check-in at one size, SPEC section 13). Raises LocalProtocolError
    for values it cannot carry."""
    _check_u32(frame.device_id, "device_id")
    _check_u32(frame.counter, "counter")
    if version == _V2:
        return _encode2(frame, as_key(key), size)
    if size:
        raise protocol.LocalProtocolError("only v2 frames are padded")
    if version != _V1:
        raise protocol.LocalProtocolError("version is 1 or 2, not %r" % (version,))
    if not frame.TYPE:
        raise protocol.LocalProtocolError("a %s exists in v2 only" % frame.NAME)
    message = (struct.pack(">BII", (_V1 << 4) | frame.TYPE, frame.device_id, frame.counter)
               + frame._body() + frame._extensions())
    if len(message) + TAG_LEN > MAX_FRAME:
        raise protocol.LocalProtocolError("frame would be %d bytes, at most %d"
                                          % (len(message) + TAG_LEN, MAX_FRAME))
    tag = as_key(key).tag(frame.DIRECTION, message)
    frame.tag = tag
    frame.version = _V1
    return message + tag


def _encode2(frame, key, least):
    extensions = frame._extensions(_V2)
    end = HEADER_LEN + frame.CORE2 + len(extensions)
    if least and least not in V2_SIZES:
        raise protocol.LocalProtocolError("a v2 frame is 20, 22, 32, 48 or 64 bytes")
    size = 0
    for size in V2_SIZES:
        if size >= end + TAG_LEN and size >= least:
            break
    if size < end + TAG_LEN:
        raise protocol.LocalProtocolError("frame would be %d bytes, at most %d"
                                          % (end + TAG_LEN, MAX_FRAME))
    buf = bytearray(size)  # the padding is what stays zero
    struct.pack_into(">BII", buf, 0, _V2_FIRST, frame.device_id, frame.counter)
    frame._core2(buf)
    if extensions:
        buf[HEADER_LEN + frame.CORE2:end] = extensions
    frame.tag = _seal(key, frame.DIRECTION, buf)
    frame.version = _V2
    return bytes(buf)


def _seal(key, direction, buf):
    """Encrypt buf[HEADER_LEN:-TAG_LEN] in place under the keystream of buf's header, then
    write the tag of header | ciphertext into the last TAG_LEN bytes, and return it. Every
    v2 frame is made here (the vector generator and tests seal hand-made contents with it)."""
    tag_start = len(buf) - TAG_LEN
    view = memoryview(buf)
    key.crypt(direction, view[:HEADER_LEN], buf, HEADER_LEN, tag_start)
    tag = key.seal_tag(direction, view[:tag_start])
    buf[tag_start:] = tag
    return tag
