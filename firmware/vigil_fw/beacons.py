# What the wearable heard in one scan: iBeacon and Eddystone-UID advertisements (or Wi-Fi
# access points), each kept by its identifier with the strongest RSSI heard, the strongest
# `size` of them only; at the end, the (short id, rssi) entries of location extension 0x05
# or 0x06 (protocol/SPEC.md section 4), strongest first.
#
# Rules:
#   an advertisement is AD structures: length u8 (type and data), type u8, data; a length of
#     0 ends it early; one running past the end makes the advertisement malformed (counted)
#   iBeacon: manufacturer data (0xFF) of Apple (0x004C, little-endian), 0x02 0x15, then the
#     20-byte identifier (proximity UUID, major, minor) and the measured power
#   Eddystone-UID: 16-bit service data (0x16) for 0xFEAA, frame type 0x00, the ranging byte,
#     then the 16-byte identifier (namespace, instance) and 2 optional reserved bytes
#   anything else is not a beacon (counted as `other`, nothing kept)
#   RSSI 127 (the controller's "not available") is ignored; others are held to -127..+20
#   the same identifier again keeps its strongest RSSI; a new one takes a free slot, or the
#     weakest slot if it is stronger than that one (ties keep the one heard first)
# Per advertisement nothing is allocated: identifiers are compared and copied byte by byte
# into slots made at construction; short ids (a SHA-256 each) are computed once, at the end.
from vigil_protocol.beacon_id import EDDYSTONE, IBEACON, WIFI, short_id

from .clock import ticks_diff

_KINDS = {20: IBEACON, 16: EDDYSTONE, 6: WIFI}  # identifier length -> kind (all differ)
_RSSI_NONE = 127


class Strongest:
    SIZE = 5  # the most a 48-byte frame holds without a fix (SPEC section 4)

    def __init__(self, size=0):
        size = size or self.SIZE
        self._ids = [bytearray(20) for _ in range(size)]
        self._lens = [0] * size  # identifier length per slot; 0: free
        self._rssi = [0] * size
        self.ended = None  # the caller's ticks when the scan ended (finish())
        self.adverts = 0  # counters: advertisements seen, beacons among them, malformed
        self.beacons = 0
        self.other = 0
        self.malformed = 0

    def clear(self):
        """Start a new scan (counters keep counting)."""
        for i in range(len(self._lens)):
            self._lens[i] = 0
        self.ended = None

    def advert(self, adv, rssi):
        """Take one advertisement's payload (bytes as the radio gave them) and its RSSI.
        True when it was a beacon."""
        self.adverts += 1
        i = 0
        n = len(adv)
        while i < n:
            length = adv[i]
            if length == 0:
                break
            if i + 1 + length > n:
                self.malformed += 1
                return False
            ad_type = adv[i + 1]
            if (ad_type == 0xFF and length == 26 and adv[i + 2] == 0x4C and adv[i + 3] == 0
                    and adv[i + 4] == 0x02 and adv[i + 5] == 0x15):
                return self._heard(adv, i + 6, 20, rssi)
            if (ad_type == 0x16 and length >= 21 and adv[i + 2] == 0xAA and adv[i + 3] == 0xFE
                    and adv[i + 4] == 0x00):
                return self._heard(adv, i + 6, 16, rssi)
            i += 1 + length
        self.other += 1
        return False

    def access_point(self, bssid, rssi):
        """Take one Wi-Fi scan result's BSSID (6 bytes) and RSSI."""
        if len(bssid) != 6:
            self.malformed += 1
            return False
        return self._heard(bssid, 0, 6, rssi)

    def finish(self, now):
        """The scan is over at ticks `now`: what it heard ages from here."""
        self.ended = now

    def entries(self, now, most=0):
        """(scan age s, ((short id, rssi), ...)) strongest first, at most `most` (default:
        all kept), as Alarm(beacons=...) / CheckIn(wifi=...) take it; None when nothing was
        heard. The age counts from finish() (from now if it was not called), rounded up."""
        order = []
        for i in range(len(self._lens)):
            if self._lens[i]:
                order.append(i)
        if not order:
            return None
        order.sort(key=lambda i: -self._rssi[i])  # stable: equal RSSIs keep slot order
        if most:
            order = order[:most]
        out = []
        for i in order:
            length = self._lens[i]
            out.append((short_id(_KINDS[length], bytes(self._ids[i][:length])), self._rssi[i]))
        age_ms = 0 if self.ended is None else ticks_diff(now, self.ended)
        return ((max(age_ms, 0) + 999) // 1000, tuple(out))

    def _heard(self, data, start, length, rssi):
        if rssi == _RSSI_NONE:
            return False
        if rssi > 20:
            rssi = 20
        elif rssi < -127:
            rssi = -127
        self.beacons += 1
        free = -1
        weakest = -1
        for slot in range(len(self._lens)):
            if self._lens[slot] == length and self._same(slot, data, start, length):
                if rssi > self._rssi[slot]:
                    self._rssi[slot] = rssi
                return True
            if not self._lens[slot]:
                if free < 0:
                    free = slot
            elif weakest < 0 or self._rssi[slot] < self._rssi[weakest]:
                weakest = slot
        if free < 0:
            if rssi <= self._rssi[weakest]:
                return True  # a beacon, weaker than every one kept
            free = weakest
        ident = self._ids[free]
        for k in range(length):
            ident[k] = data[start + k]
        self._lens[free] = length
        self._rssi[free] = rssi
        return True

    def _same(self, slot, data, start, length):
        ident = self._ids[slot]
        for k in range(length):
            if ident[k] != data[start + k]:
                return False
        return True
