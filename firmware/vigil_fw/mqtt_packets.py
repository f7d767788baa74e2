# MQTT 3.1.1 packets for the wearable's MQTT link, without any I/O: the encoders write into a
# buffer the caller owns, read() parses what has arrived in place.
#
# Rules:
#   an encoder writes one whole packet at the start of `buf` (a bytearray or a memoryview,
#     reused for every packet) and returns its length; a packet that does not fit raises
#     ValueError
#   read(buf, have, topic) looks at the bytes received so far, buf[:have]: None until the
#     packet at the start is whole (a read may stop anywhere, even inside the remaining
#     length); then what it is. It trusts nothing: a wrong length, a reserved flag set, a
#     packet id of 0, or a packet a broker never sends this client raises MqttError with a
#     one-line reason (never the packet's bytes)
#   strings (client id, user, password, topics) are bytes; struct with explicit formats;
#     plain loops. Few functions, names and string constants: each costs heap even run in
#     place from ROMFS (a string literal ~40 bytes on 64-bit), so the reasons are the lines of
#     one constant, picked by line(). The packet types are private const()s, as in the link
import struct

from vigil_protocol._compat import const

_CONNECT = const(1)
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_PINGRESP = const(13)

# Why a packet is refused, and CONNACK's refusals (return codes 1-5 from _REFUSED + 1).
_REASONS = ("remaining length longer than 4 bytes\n"
            "%s of %d bytes\n"
            "unexpected %s (flags %d)\n"
            "%s with packet id 0\n"
            "PUBLISH with QoS %d on a QoS 1 subscription\n"
            "PUBLISH of %d bytes, too short for its topic\n"
            "PUBLISH topic longer than the receive buffer\n"
            "CONNACK flags %d with return code %d\n"
            "SUBACK return code %d\n"
            "return code %d\n"
            "unacceptable protocol version\n"
            "identifier rejected\n"
            "server unavailable\n"
            "bad username or password\n"
            "not authorised")
_LONG_LENGTH = const(0)
_BAD_SIZE = const(1)
_BAD_TYPE = const(2)
_NO_PID = const(3)
_QOS = const(4)
_SHORT = const(5)
_LONG_TOPIC = const(6)
_CONNACK_FLAGS = const(7)
_SUBACK_CODE = const(8)
_CODE = const(9)       # a CONNACK return code above 5; 1-5 are the lines after it
_NAMES = ("reserved-0 CONNECT CONNACK PUBLISH PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE SUBACK "
          "UNSUBSCRIBE UNSUBACK PINGREQ PINGRESP DISCONNECT reserved-15")


class MqttError(ValueError):
    """A packet from the broker that is not well-formed MQTT 3.1.1 for this client."""


def line(table, i, args=()):
    """Line i of `table`, formatted with `args`."""
    a = 0
    for _ in range(i):
        a = table.index("\n", a) + 1
    b = table.find("\n", a)
    return table[a:b if b >= 0 else len(table)] % args


# -- encoding ---------------------------------------------------------------------------------

def _head(buf, b, size):
    """The fixed header (first byte b, remaining length size); returns where the rest goes."""
    if size + 5 > len(buf):
        raise ValueError(size)  # a packet of ours that does not fit: a bug, not the broker's
    buf[0] = b
    i = 1
    while size > 0x7F:
        buf[i] = (size & 0x7F) | 0x80
        size >>= 7
        i += 1
    buf[i] = size
    return i + 1


def _put(buf, i, data):
    """A length-prefixed string at buf[i:]; returns the offset after it."""
    struct.pack_into(">H", buf, i, len(data))
    i += 2
    buf[i:i + len(data)] = data
    return i + len(data)


def connect(buf, client_id, interval, user=None, password=None, topic=None, payload=b""):
    """CONNECT: keepalive `interval` seconds, clean_session 0 (a persistent session); with a
    will when `topic` is given: `payload`, QoS 1, retained."""
    flags = 0
    size = 12 + len(client_id)
    if topic is not None:
        flags = 0x2C  # will retain, will QoS 1, will flag
        size += 4 + len(topic) + len(payload)
    if user is not None:
        flags |= 0x80
        size += 2 + len(user)
    if password is not None:
        flags |= 0x40
        size += 2 + len(password)
    i = _put(buf, _head(buf, _CONNECT << 4, size), b"MQTT")
    struct.pack_into(">BBH", buf, i, 4, flags, interval)  # protocol level 4: 3.1.1
    i = _put(buf, i + 4, client_id)
    if topic is not None:
        i = _put(buf, _put(buf, i, topic), payload)
    if user is not None:
        i = _put(buf, i, user)
    if password is not None:
        i = _put(buf, i, password)
    return i


def publish(buf, topic, payload, qos=0, pid=0, retain=False):
    b = (_PUBLISH << 4) | (qos << 1) | (1 if retain else 0)
    i = _put(buf, _head(buf, b, 2 + len(topic) + (2 if qos else 0) + len(payload)), topic)
    if qos:
        struct.pack_into(">H", buf, i, pid)
        i += 2
    buf[i:i + len(payload)] = payload
    return i + len(payload)


def control(buf, b, pid=0, topic=None):
    """The packets made of a fixed header, at most a packet id and one topic filter:
    PUBACK (b 0x40) for `pid`, PINGREQ (0xC0), DISCONNECT (0xE0), and SUBSCRIBE (0x82)
    `pid` to `topic` at QoS 1."""
    if topic is not None:
        i = _put(buf, _head(buf, b, 5 + len(topic)) + 2, topic)
        struct.pack_into(">H", buf, i - len(topic) - 4, pid)
        buf[i] = 1
        return i + 1
    if pid:
        struct.pack_into(">BBH", buf, 0, b, 2, pid)
        return 4
    buf[0] = b
    buf[1] = 0
    return 2


# -- decoding ---------------------------------------------------------------------------------

def read(buf, have, topic):
    """The packet at the start of buf[:have]: None while it is not whole, else
    (its length n, its type, x, y):
        CONNACK  2, return code, None if 0 else the refusal in words
        PUBLISH  3, packet id (0 for QoS 0), payload offset, or -1 when not on `topic`
        PUBACK   4, packet id, 0
        SUBACK   9, packet id, the QoS granted (0x80: refused)
        PINGRESP 13, 0, 0
    A PUBLISH longer than buf is read once buf is full, as far as its packet id: the caller
    acknowledges it and skips the rest."""
    n = 0
    shift = 0
    i = 1
    while True:
        if i >= have:
            return None
        b = buf[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
        if i == 5:
            raise MqttError(line(_REASONS, _LONG_LENGTH))
    n += i
    b = buf[0]
    t = b >> 4
    if n > have:
        if have < len(buf):
            return None
        if t != _PUBLISH:
            raise MqttError(line(_REASONS, _BAD_SIZE, (_NAMES.split()[t], n)))
    if t == _PUBLISH:
        if b & 0x04:
            raise MqttError(line(_REASONS, _QOS, (b >> 1) & 3))
        end = i + 2
        if end > n:
            raise MqttError(line(_REASONS, _SHORT, n))
        at = end
        if at <= len(buf):
            end += struct.unpack_from(">H", buf, i)[0]
            at = end + (2 if b & 0x02 else 0)
            if at > n:
                raise MqttError(line(_REASONS, _SHORT, n))
        if at > len(buf):
            raise MqttError(line(_REASONS, _LONG_TOPIC))
        pid = 0
        if at > end:
            pid = struct.unpack_from(">H", buf, end)[0]
            if not pid:
                raise MqttError(line(_REASONS, _NO_PID, "PUBLISH"))
        i += 2
        if end - i != len(topic):
            return n, t, pid, -1
        j = 0
        while i < end:
            if buf[i] != topic[j]:
                return n, t, pid, -1
            i += 1
            j += 1
        return n, t, pid, at
    if b & 0x0F or t not in (_CONNACK, _PUBACK, _SUBACK, _PINGRESP):
        raise MqttError(line(_REASONS, _BAD_TYPE, (_NAMES.split()[t], b & 0x0F)))
    if n != (2 if t == _PINGRESP else 5 if t == _SUBACK else 4):
        raise MqttError(line(_REASONS, _BAD_SIZE, (_NAMES.split()[t], n)))
    if t == _PINGRESP:
        return n, t, 0, 0
    if t == _CONNACK:
        code = buf[3]
        if buf[2] & 0xFE or (buf[2] and code):
            raise MqttError(line(_REASONS, _CONNACK_FLAGS, (buf[2], code)))
        if not code:
            return n, t, 0, None
        if code > 5:
            return n, t, code, line(_REASONS, _CODE, code)
        return n, t, code, line(_REASONS, _CODE + code)
    pid = struct.unpack_from(">H", buf, 2)[0]
    if not pid:
        raise MqttError(line(_REASONS, _NO_PID, _NAMES.split()[t]))
    if t == _PUBACK:
        return n, t, pid, 0
    code = buf[4]
    if code > 2 and code != 0x80:
        raise MqttError(line(_REASONS, _SUBACK_CODE, code))
    return n, t, pid, code
