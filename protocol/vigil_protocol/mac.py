# Frame authentication: HMAC-SHA256 (RFC 2104) under a per-device 256-bit key, truncated.
#
# The direction label is the first input to the MAC, so a frame signed as an uplink can never
# verify as a downlink (and the reverse), whatever its type byte says.
#
# CPython uses the standard library's hmac. MicroPython has no working hmac on every port
# (the unix port has none and the PyPI port does not run against the built-in hashlib), so
# there the same construction is computed over hashlib.sha256 directly; tests check that
# both paths give RFC 4231's answers.
import hashlib

import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

try:
    from hmac import digest as _stdlib_digest  # type: ignore[import-not-found]  # CPython only
except ImportError:
    _stdlib_digest = None

KEY_LEN = 32
TAG_LEN = 8
UP = "up"
DOWN = "down"
_LABELS = {UP: b"VIGIL-UP", DOWN: b"VIGIL-DN"}
_BLOCK = 64


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


class DeviceKey:
    """A device's 256-bit key, ready to sign and verify. Never shows its bytes."""

    def __init__(self, key):
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
            raise protocol.LocalProtocolError("a device key is exactly %d bytes" % KEY_LEN)
        self._key = bytes(key)
        # Precomputed pads save two 64-byte XORs per MAC on MicroPython.
        self._ipad = _pad(self._key + bytes(_BLOCK - KEY_LEN), 0x36)
        self._opad = _pad(self._key + bytes(_BLOCK - KEY_LEN), 0x5C)

    def __repr__(self):
        return "<DeviceKey (hidden)>"

    def tag(self, direction, message):
        """The truncated MAC of `message` sent in `direction` ("up" or "down")."""
        data = label(direction) + message
        if _stdlib_digest is not None:
            return _stdlib_digest(self._key, data, "sha256")[:TAG_LEN]
        inner = hashlib.sha256(self._ipad)
        inner.update(data)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()[:TAG_LEN]

    def verify(self, direction, message, tag):
        return equal(self.tag(direction, message), tag)


def as_key(key):
    """Accept a DeviceKey or raw key bytes."""
    if isinstance(key, DeviceKey):
        return key
    return DeviceKey(key)
