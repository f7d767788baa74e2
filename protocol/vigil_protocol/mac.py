# Frame authentication and, for v2, encryption: HMAC-SHA256 (RFC 2104) under a per-device
# 256-bit key.
#
# v1: tag = HMAC-SHA256(device key, direction label | frame without tag)[0:8].
#   The direction label is the first input to the MAC, so a frame signed as an uplink can never
#   verify as a downlink (and the reverse), whatever its type byte says.
# v2: four keys derived from the device key, one per job and direction (SPEC section 5):
#   subkey = HMAC-SHA256(device key, label | 0x01)   (HKDF-Expand, RFC 5869, one block)
#   keystream block i = HMAC-SHA256(enc key, header | i)   (a PRF in counter mode)
#   tag = HMAC-SHA256(mac key, header | ciphertext)[0:8]   (encrypt-then-MAC)
#
# Each key keeps its HMAC pads hashed once where the port can copy a hash (CPython: the inner
# and outer SHA-256 states are copied per MAC), else keeps the padded key to start each MAC
# from (MicroPython: its sha256 objects have no copy). CPython's hmac module is not used: it
# hashes the pads again on every call. Tests check this HMAC against RFC 4231.
import hashlib

import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

try:
    from hmac import compare_digest as _compare  # type: ignore[import-not-found]  # CPython
except ImportError:
    _compare = None

KEY_LEN = 32
TAG_LEN = 8
UP = "up"
DOWN = "down"
_LABELS = {UP: b"VIGIL-UP", DOWN: b"VIGIL-DN"}
# v2 derivation labels: (encryption key, MAC key) per direction. No v1 MAC input starts like
# these ("VIGIL-" is upper case), so no v1 tag is ever a piece of a v2 key.
_V2_LABELS = {UP: (b"vigil/v2/enc/up", b"vigil/v2/mac/up"),
              DOWN: (b"vigil/v2/enc/down", b"vigil/v2/mac/down")}
_BLOCK = 64
_COPY = hasattr(hashlib.sha256(), "copy")
_ONE = b"\x01"
_COUNTERS = (b"\x00", b"\x01")  # keystream block numbers: v2 bodies need at most two blocks


def _pad(key, byte):
    out = bytearray(key)
    for i in range(len(out)):
        out[i] ^= byte
    return bytes(out)


def hmac_sha256(key, message):
    """HMAC-SHA256 computed over hashlib.sha256 alone (the path MicroPython takes)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(_pad(key, 0x36))
    inner.update(message)
    outer = hashlib.sha256(_pad(key, 0x5C))
    outer.update(inner.digest())
    return outer.digest()


def equal(a, b):
    """Compare two byte strings in time that depends only on their length."""
    if len(a) != len(b):
        return False
    if _compare is not None:
        return _compare(a, b)
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def label(direction):
    try:
        return _LABELS[direction]
    except KeyError:
        raise protocol.LocalProtocolError("direction must be 'up' or 'down', not %r"
                                          % (direction,))


def _keyed(key):
    """The (inner, outer) pads of an HMAC-SHA256 key of at most 64 bytes: hashed once where
    the port can copy a hash, else kept as bytes to start each MAC from. A plain tuple: on
    MicroPython it costs a third of an object with two attributes."""
    block = bytes(key) + bytes(_BLOCK - len(key))
    if _COPY:
        return hashlib.sha256(_pad(block, 0x36)), hashlib.sha256(_pad(block, 0x5C))
    return _pad(block, 0x36), _pad(block, 0x5C)


def _hmac(keyed, first, second=None):
    """HMAC-SHA256(key, first | second) with the pads from _keyed(key)."""
    if _COPY:
        inner = keyed[0].copy()
        outer = keyed[1].copy()
    else:
        inner = hashlib.sha256(keyed[0])
        outer = hashlib.sha256(keyed[1])
    inner.update(first)
    if second is not None:
        inner.update(second)
    outer.update(inner.digest())
    return outer.digest()


class DeviceKey:
    """A device's 256-bit key, ready to sign and verify (v1) and to seal and open (v2).
    Never shows its bytes. The v2 keys of a direction are derived on first use."""

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise protocol.LocalProtocolError("a device key is exactly %d bytes" % KEY_LEN)
        self._keyed = _keyed(key)
        self._v2 = None  # type: dict | None  # direction -> (encryption, MAC key's pads)

    def __repr__(self):
        return "<DeviceKey (hidden)>"

    # -- v1 --
    def tag(self, direction, message):
        """The truncated v1 MAC of `message` sent in `direction` ("up" or "down")."""
        return _hmac(self._keyed, label(direction), message)[:TAG_LEN]

    def verify(self, direction, message, tag):
        return equal(self.tag(direction, message), tag)

    # -- v2 --
    def _keys(self, direction):
        if self._v2 is None:  # a v1-only wearable never pays for the dict
            self._v2 = {}
        keys = self._v2.get(direction)
        if keys is None:
            label(direction)  # a LocalProtocolError for anything but "up" and "down"
            enc, mac = _V2_LABELS[direction]
            keys = (_keyed(_hmac(self._keyed, enc, _ONE)), _keyed(_hmac(self._keyed, mac, _ONE)))
            self._v2[direction] = keys
        return keys

    def subkeys(self, direction):
        """The v2 (encryption key, MAC key) of `direction` as bytes, for test vectors and other
        implementations; the codec keeps them inside this object."""
        label(direction)
        enc, mac = _V2_LABELS[direction]
        return _hmac(self._keyed, enc, _ONE), _hmac(self._keyed, mac, _ONE)

    def seal_tag(self, direction, message):
        """The truncated v2 MAC of `message` (header | ciphertext) sent in `direction`."""
        return _hmac(self._keys(direction)[1], message)[:TAG_LEN]

    def crypt(self, direction, header, buf, start, end):
        """XOR the v2 keystream of (direction, header) into buf[start:end], in place; the same
        call encrypts and decrypts. `header` is the frame's 9 clear bytes: version, device id
        and counter, so the nonce is (direction, device id, counter) and nothing extra travels."""
        keyed = self._keys(direction)[0]
        block = 0
        while start < end:
            stream = _hmac(keyed, header, _COUNTERS[block])
            n = min(end - start, 32)
            for i in range(n):
                buf[start + i] ^= stream[i]
            start += n
            block += 1


def as_key(key):
    """Accept a DeviceKey or raw key bytes."""
    if isinstance(key, DeviceKey):
        return key
    return DeviceKey(key)
