# BLE privacy (SPEC section 10): the rotating identifier a wearable advertises instead of its
# device id, and the mask its frames wear on the BLE link. Sans-I/O: the caller brings the
# random bytes (the wearable, at each rotation) and the identifiers it heard (the gateway).
#
#   id_key     = HMAC-SHA256(key, "vigil/v2/ble-id" | 0x01)     (HKDF-Expand, as in mac.py)
#   mask_key   = HMAC-SHA256(key, "vigil/v2/ble-mask" | 0x01)
#   identifier = prand | HMAC-SHA256(id_key, prand)[0:3]        prand: 3 fresh random bytes
#   mask(dir)  = HMAC-SHA256(mask_key, identifier | dir | 0) | ... | dir | 1)   64 bytes
#   on BLE     = frame XOR mask(dir)[0:len(frame)]              dir: 0x00 up, 0x01 down
#
# Resolvable, like a BLE resolvable private address: whoever holds the key checks the hash; to
# anyone else an identifier is 6 random bytes. No clock is needed, so a wearable without a
# trusted one rotates on its own ticks and a gateway resolves whatever it hears.
from ._compat import const
from .mac import _ONE, _hmac, _keyed, as_key, equal

PRAND_LEN = const(3)
HASH_LEN = const(3)
ID_LEN = const(6)
MASK_LEN = const(64)  # MAX_FRAME: every frame is masked whole
ID_LABEL = b"vigil/v2/ble-id"
MASK_LABEL = b"vigil/v2/ble-mask"
_DIRS = (b"\x00", b"\x01")  # up, down
_BLOCKS = (b"\x00", b"\x01")


class BleKey:
    """The BLE privacy keys of one device, derived from its device key (a DeviceKey or the 32
    key bytes). Never shows them."""

    def __init__(self, key):
        keyed = as_key(key)._keyed
        self._id = _keyed(_hmac(keyed, ID_LABEL, _ONE))
        self._mask = _keyed(_hmac(keyed, MASK_LABEL, _ONE))

    def __repr__(self):
        return "<BleKey (hidden)>"

    def identifier(self, prand):
        """The 6-byte identifier for 3 random bytes `prand`."""
        if len(prand) != PRAND_LEN:
            raise ValueError("prand is %d bytes" % PRAND_LEN)
        return bytes(prand) + _hmac(self._id, prand)[:HASH_LEN]

    def resolves(self, identifier):
        """True when `identifier` was made with this key (constant time in its bytes)."""
        if len(identifier) != ID_LEN:
            return False
        prand = bytes(identifier[:PRAND_LEN])
        return equal(_hmac(self._id, prand)[:HASH_LEN], bytes(identifier[PRAND_LEN:]))

    def masks(self, identifier, up=None, down=None):
        """(up, down): the two 64-byte masks of `identifier`, written into the bytearrays
        `up` and `down` when given (the wearable allocates them once, at boot)."""
        out = []
        for i, buf in enumerate((up, down)):
            if buf is None:
                buf = bytearray(MASK_LEN)
            first = _hmac(self._mask, identifier, _DIRS[i] + _BLOCKS[0])
            second = _hmac(self._mask, identifier, _DIRS[i] + _BLOCKS[1])
            buf[0:32] = first
            buf[32:64] = second
            out.append(buf)
        return out[0], out[1]


def apply(mask, data, out):
    """out[0:n] = data XOR mask, n = len(data) (at most MASK_LEN); returns n. Masks and
    unmasks alike; `out` may be `data` itself."""
    n = len(data)
    if n > MASK_LEN:
        raise ValueError("a frame on BLE is at most %d bytes" % MASK_LEN)
    for i in range(n):
        out[i] = data[i] ^ mask[i]
    return n
