# Short identifiers of the beacons and Wi-Fi access points a wearable hears (SPEC section 4,
# extensions 0x05 and 0x06). A frame has no room for a beacon's full identifier (an iBeacon's
# is 20 bytes), so both sides name it by 4 bytes of a hash: the wearable of what it heard, the
# gateway of each beacon in its table, and they meet on the short id.
#
#   short_id = SHA-256("vigil/heard/" | kind | 0x00 | identifier)[0:4]
#   kind        identifier (bytes as broadcast)                    length
#   ibeacon     proximity UUID | major u16 | minor u16             20
#   eddystone   Eddystone-UID namespace | instance                 16
#   wifi        BSSID                                              6
#
# The kind is in the hash, so one identifier never names two kinds.
import hashlib

import vigil_protocol as protocol

IBEACON = "ibeacon"
EDDYSTONE = "eddystone"
WIFI = "wifi"
ID_LENGTHS = {IBEACON: 20, EDDYSTONE: 16, WIFI: 6}
SHORT_LEN = 4


def short_id(kind, identifier):
    """The 4-byte short id of a beacon or access point; LocalProtocolError for an unknown kind
    or an identifier of the wrong length."""
    if ID_LENGTHS.get(kind) != len(identifier):
        raise protocol.LocalProtocolError("a %s identifier is not %d bytes" % (kind,
                                                                              len(identifier)))
    h = hashlib.sha256(b"vigil/heard/")
    h.update(kind.encode())
    h.update(b"\x00")
    h.update(identifier)
    return h.digest()[:SHORT_LEN]
