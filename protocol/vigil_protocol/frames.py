# Vigil frames v1: byte layouts, encoding and decoding. Sans-I/O: bytes in, objects out.
#
# Rules (protocol/SPEC.md is the full text):
#   frame   = header | body | extensions | tag
#   header  = ver_type u8 (version << 4 | type) | device_id u32 | counter u32   (big-endian)
#   tag     = first 8 bytes of HMAC-SHA256(key, direction label | header | body | extensions)
#   types 0x1-0x7 are uplinks (wearable -> gateway), 0x8-0xF downlinks (gateway -> wearable)
#   alarm   body = kind u8 | ref_delta u16          -> 20 bytes without extensions
#   checkin body = battery u8 | flags u8 | interval_s u16
#   ack     body = ref u32 | stage u8
#   action  body = ref u32 | action u8
#   extensions   = (type u8 | length u8 | value)*; unknown types are skipped, known ones checked
#   The decoder checks, in order: size, version, type, direction, MAC, then fields. Nothing
#   inside an unauthenticated frame is interpreted beyond what is needed to find its key.
import struct

import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

from ._compat import const
from .mac import DOWN, TAG_LEN, UP, as_key

# Private const() names are folded into the code by MicroPython: no heap on the wearable.
_VERSION = const(1)
MAX_FRAME = const(64)
HEADER_LEN = const(9)
_MAX_U32 = const(0xFFFFFFFF)

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

# Check-in status flags; unknown bits are kept and ignored.
FLAG_CHARGING = const(0x01)
FLAG_ALARM_OPEN = const(0x02)
FLAG_OUTBOX_PENDING = const(0x04)
FLAG_LOW_BATTERY = const(0x08)
FLAG_FAULT = const(0x10)

BATTERY_UNKNOWN = const(255)

# Extension types (their value lengths: Frame._EXT_LEN).
_EXT_LOCATION = const(0x01)  # lat_e7 i32 | lon_e7 i32 | accuracy_m u16
_EXT_AGE = const(0x02)       # seconds between raising the alarm and encoding this frame, u32
_EXT_BATTERY = const(0x03)   # battery percent u8


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
    """Common header and extensions. Subclasses say their type and body, and downlinks their
    direction."""

    TYPE = 0
    NAME = ""
    DIRECTION = UP
    BODY = ""
    BODY_LEN = 0
    EXTENSIONS = ()  # type: tuple  # extension types this frame may carry
    _EXT_LEN = {_EXT_LOCATION: 10, _EXT_AGE: 4, _EXT_BATTERY: 1}  # known type -> value length

    def __init__(self, device_id, counter):
        self.device_id = device_id
        self.counter = counter
        self.location = None  # (lat_e7, lon_e7, accuracy_m)
        self.age = None
        self.battery_ext = None
        self.unknown_extensions = []
        self.tag = None  # set by encode() and decode(): identifies these exact bytes

    # -- subclass hooks --
    def _body(self):
        raise NotImplementedError

    def _parse_body(self, values):
        raise NotImplementedError

    def _body_fields(self, fields):
        raise NotImplementedError

    # -- extensions --
    def _extensions(self):
        out = b""
        if self.location is not None:
            if _EXT_LOCATION not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no location" % self.NAME)
            lat, lon, acc = self.location
            if not (-900000000 <= lat <= 900000000 and -1800000000 <= lon <= 1800000000
                    and 0 <= acc <= 0xFFFF):
                raise protocol.LocalProtocolError("location out of range")
            out += struct.pack(">BBiiH", _EXT_LOCATION, 10, lat, lon, acc)
        if self.age is not None:
            if _EXT_AGE not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no age" % self.NAME)
            if not (0 <= self.age <= _MAX_U32):
                raise protocol.LocalProtocolError("age out of range")
            out += struct.pack(">BBI", _EXT_AGE, 4, self.age)
        if self.battery_ext is not None:
            if _EXT_BATTERY not in self.EXTENSIONS:
                raise protocol.LocalProtocolError("%s frames carry no battery extension"
                                                  % self.NAME)
            _check_battery_local(self.battery_ext)
            out += struct.pack(">BBB", _EXT_BATTERY, 1, self.battery_ext)
        return out

    def _parse_extensions(self, data, start, end):
        seen = []
        i = start
        while i < end:
            if end - i < 2:
                raise protocol.BadExtension("extension header cut short")
            ext_type = data[i]
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
            elif ext_type not in self.EXTENSIONS:
                raise protocol.BadExtension("extension 0x%02x is not allowed in %s"
                                            % (ext_type, self.NAME))
            elif length != self._EXT_LEN[ext_type]:
                raise protocol.BadExtension("extension 0x%02x has length %d" % (ext_type, length))
            elif ext_type == _EXT_LOCATION:
                lat, lon, acc = struct.unpack_from(">iiH", data, i)
                if not (-900000000 <= lat <= 900000000 and -1800000000 <= lon <= 1800000000):
                    raise protocol.BadExtension("location out of range")
                self.location = (lat, lon, acc)
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
        if self.age is not None:
            fields["age"] = self.age
        if self.battery_ext is not None:
            fields["battery"] = self.battery_ext
        if self.unknown_extensions:
            fields["unknown_extensions"] = list(self.unknown_extensions)
        return fields

    def __repr__(self):
        return "<%s %r>" % (self.NAME, self.fields())


def _check_battery_local(value):
    if not isinstance(value, int) or not (0 <= value <= 100 or value == BATTERY_UNKNOWN):
        raise protocol.LocalProtocolError("battery is 0-100 percent or 255 (unknown)")


class Alarm(Frame):
    TYPE = _TYPE_ALARM
    NAME = "alarm"
    BODY = ">BH"
    BODY_LEN = 3
    EXTENSIONS = (_EXT_LOCATION, _EXT_AGE, _EXT_BATTERY)

    def __init__(self, device_id, counter, kind, ref=0, location=None, age=None, battery=None):
        Frame.__init__(self, device_id, counter)
        self.kind = _code_of(KINDS, kind, "alarm kind")
        self.ref = ref
        self.location = location
        self.age = age
        self.battery_ext = battery

    @property
    def kind_name(self):
        return KINDS.get(self.kind, "UNKNOWN(%d)" % self.kind)

    def _body(self):
        kind = _code_of(KINDS, self.kind, "alarm kind")
        if kind == DOUBLE_TAP:
            if not isinstance(self.ref, int) or not (1 <= self.counter - self.ref <= 0xFFFF):
                raise protocol.LocalProtocolError("DOUBLE_TAP must name an earlier alarm counter "
                                                  "within 65535 of its own")
            delta = self.counter - self.ref
        else:
            if self.ref:
                raise protocol.LocalProtocolError("only DOUBLE_TAP names another alarm")
            delta = 0
        return struct.pack(self.BODY, kind, delta)

    def _parse_body(self, values):
        kind, delta = values
        if kind not in KINDS:
            raise protocol.UnknownKind("alarm kind %d" % kind)
        if kind == DOUBLE_TAP:
            if delta == 0 or delta >= self.counter:
                raise protocol.BadField("DOUBLE_TAP must name an earlier alarm counter")
            self.ref = self.counter - delta
        else:
            if delta:
                raise protocol.BadField("only DOUBLE_TAP names another alarm")
            self.ref = 0
        self.kind = kind

    def _body_fields(self, fields):
        fields["kind"] = self.kind_name
        fields["ref"] = self.ref


class CheckIn(Frame):
    TYPE = _TYPE_CHECKIN
    NAME = "checkin"
    BODY = ">BBH"
    BODY_LEN = 4
    EXTENSIONS = (_EXT_LOCATION,)

    def __init__(self, device_id, counter, battery=BATTERY_UNKNOWN, flags=0, interval=0,
                 location=None):
        Frame.__init__(self, device_id, counter)
        self.battery = battery
        self.flags = flags
        self.interval = interval  # seconds until the next check-in; 0 = not announced
        self.location = location

    def _body(self):
        _check_battery_local(self.battery)
        if not (0 <= self.flags <= 0xFF and 0 <= self.interval <= 0xFFFF):
            raise protocol.LocalProtocolError("flags is a byte and interval at most 65535 s")
        return struct.pack(self.BODY, self.battery, self.flags, self.interval)

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

    def _parse_body(self, values):
        self.ref, self.code = values
        if self.ref == 0:
            raise protocol.BadField("%s names counter 0" % self.NAME)
        if self.code not in self.CODES:
            raise protocol.UnknownKind("%s %d" % (self.FIELD, self.code))

    def _body_fields(self, fields):
        fields["ref"] = self.ref
        fields[self.FIELD] = self.code_name


class Ack(_Reply):
    TYPE = _TYPE_ACK
    NAME = "ack"
    CODES = STAGES
    FIELD = "stage"

    @property
    def stage(self):
        return self.code


class Action(_Reply):
    TYPE = _TYPE_ACTION
    NAME = "action"
    CODES = ACTIONS
    FIELD = "action"

    @property
    def action(self):
        return self.code


TYPES = {_TYPE_ALARM: Alarm, _TYPE_CHECKIN: CheckIn, _TYPE_ACK: Ack,
         _TYPE_ACTION: Action}  # type: dict[int, type[Frame]]
TYPE_NAMES = {Alarm.NAME: Alarm, CheckIn.NAME: CheckIn, Ack.NAME: Ack, Action.NAME: Action}


class Header:
    """What can be read from a frame before its key is known (to look the key up)."""

    def __init__(self, version, frame_type, device_id, counter):
        self.version = version
        self.frame_type = frame_type
        self.device_id = device_id
        self.counter = counter
        self.cls = TYPES[frame_type]
        self.name = self.cls.NAME
        self.direction = self.cls.DIRECTION


def peek(data):
    """Check a frame's size, version and type and return its Header. Verifies nothing."""
    n = len(data)
    if n > MAX_FRAME:
        raise protocol.Oversized("%d bytes, at most %d" % (n, MAX_FRAME))
    if n < HEADER_LEN + TAG_LEN:
        raise protocol.Truncated("%d bytes, at least %d" % (n, HEADER_LEN + TAG_LEN))
    ver_type, device_id, counter = struct.unpack_from(">BII", data, 0)
    if ver_type >> 4 != _VERSION:
        raise protocol.UnsupportedVersion("version %d, this side speaks %d"
                                          % (ver_type >> 4, _VERSION))
    frame_type = ver_type & 0x0F
    if frame_type not in TYPES:
        raise protocol.UnknownType("type 0x%x" % frame_type)
    return Header(_VERSION, frame_type, device_id, counter)


def decode(data, key, direction):
    """Verify and parse one frame received in `direction` ("up" at a gateway, "down" at a
    wearable). Raises a RemoteProtocolError subclass naming the reason on any fault."""
    if direction != UP and direction != DOWN:
        raise protocol.LocalProtocolError("direction must be 'up' or 'down'")
    header = peek(data)
    cls = header.cls
    if cls.DIRECTION != direction:
        raise protocol.WrongDirection("%s is a %s frame, received as %s"
                                      % (cls.NAME, cls.DIRECTION, direction))
    body_end = HEADER_LEN + cls.BODY_LEN
    tag_start = len(data) - TAG_LEN
    if tag_start < body_end:
        raise protocol.Truncated("%s needs at least %d bytes" % (cls.NAME, body_end + TAG_LEN))
    message = data[:tag_start]
    tag = bytes(data[tag_start:])
    if not as_key(key).verify(direction, message, tag):
        raise protocol.BadMac("MAC does not verify")
    frame = object.__new__(cls)
    Frame.__init__(frame, header.device_id, header.counter)
    if header.device_id == 0 or header.counter == 0:
        raise protocol.BadField("device id and counter 0 are reserved")
    frame._parse_body(struct.unpack_from(cls.BODY, data, HEADER_LEN))
    frame._parse_extensions(data, body_end, tag_start)
    frame.tag = tag
    return frame


def encode(frame, key):
    """Sign and serialise a frame. Raises LocalProtocolError for values it cannot carry."""
    _check_u32(frame.device_id, "device_id")
    _check_u32(frame.counter, "counter")
    message = (struct.pack(">BII", (_VERSION << 4) | frame.TYPE, frame.device_id, frame.counter)
               + frame._body() + frame._extensions())
    if len(message) + TAG_LEN > MAX_FRAME:
        raise protocol.LocalProtocolError("frame would be %d bytes, at most %d"
                                          % (len(message) + TAG_LEN, MAX_FRAME))
    tag = as_key(key).tag(frame.DIRECTION, message)
    frame.tag = tag
    return message + tag
