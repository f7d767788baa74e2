# The site's beacon table: BLE beacons and Wi-Fi access points, each with the place it marks
# (name, floor, room, optional coordinates), and resolve(): what wearables heard -> a place.
# Wearables send 4-byte short ids of what they heard (protocol/SPEC.md section 4, extensions
# 0x05 and 0x06); the table keeps each beacon's full identifier and its short id.
#
# Identifiers (as typed; stored in one canonical form, lower case):
#   ble   iBeacon        proximity UUID:major:minor    e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2
#         Eddystone-UID  namespace:instance (hex)      edd1ebeac04e5defa017:0badcafe0001
#   wifi  BSSID                                        a4:b1:c2:d3:e4:f5 (or with dashes)
#
# Rules:
#   one row per beacon; two beacons with one short id in one kind are refused at add (the
#     wearable could not tell them apart), and so is an identifier added twice;
#   a place name is required (1-80 characters); floor and room are free text (up to 40);
#     coordinates are both given or neither, latitude -90..90 and longitude -180..180;
# resolve(beacons, wifi) -- each the frame's (scan age s, ((short id, rssi), ...)) or None:
#   the place is that of the STRONGEST KNOWN BLE BEACON (highest RSSI among those in the table;
#     on a tie, the one the wearable listed first); beacons not in the table are skipped (a
#     neighbour's), whatever their strength;
#   only when no BLE beacon is known does Wi-Fi count, by the same rule (an access point reaches
#     through walls and floors: a hint, never preferred to a beacon);
#   nothing known: None. The caller counts what was unknown (Resolved.unknown).
# The rules live in Beacons; its SQL in the five methods at its end, which beacons_pg.py
# gives PostgreSQL's form.
import re
import time
from collections import namedtuple

from vigil_protocol.beacon_id import EDDYSTONE, IBEACON, WIFI, short_id

from .errors import GatewayError

KINDS = ("ble", "wifi")

Beacon = namedtuple("Beacon", "kind identifier short_id place floor room lat lon added_at")
# What resolve() found: the beacon, the RSSI and scan age it was heard at, the source ("ble" or
# "wifi"), and how many short ids in the frame the table did not know.
Resolved = namedtuple("Resolved", "beacon rssi age source unknown")

_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_BSSID = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
COLUMNS = "kind, identifier, short_id, place, floor, room, lat, lon, added_at"


class BeaconError(GatewayError):
    """A beacon cannot be added or removed as asked; the message says why, in one line."""


def parse_identifier(kind, text):
    """(canonical identifier, protocol kind, identifier bytes) of a typed identifier."""
    text = str(text).strip().lower()
    if kind == "wifi":
        if not _BSSID.match(text):
            raise BeaconError("a Wi-Fi access point is its BSSID: six hex pairs, "
                              "a4:b1:c2:d3:e4:f5")
        raw = bytes.fromhex(re.sub("[:-]", "", text))
        return ":".join("%02x" % b for b in raw), WIFI, raw
    if kind != "ble":
        raise BeaconError("a beacon's kind is ble or wifi, not %r" % kind)
    parts = text.split(":")
    if len(parts) == 3 and _UUID.match(parts[0]):
        uuid = parts[0].replace("-", "")
        try:
            major, minor = int(parts[1]), int(parts[2])
        except ValueError:
            major = minor = -1
        if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFFFF):
            raise BeaconError("an iBeacon's major and minor are numbers from 0 to 65535")
        canonical = "%s-%s-%s-%s-%s:%d:%d" % (uuid[:8], uuid[8:12], uuid[12:16], uuid[16:20],
                                              uuid[20:], major, minor)
        return canonical, IBEACON, bytes.fromhex(uuid) + bytes([major >> 8, major & 0xFF,
                                                                 minor >> 8, minor & 0xFF])
    if (len(parts) == 2 and len(parts[0]) == 20 and len(parts[1]) == 12
            and _HEX.match(parts[0] + parts[1])):
        return text, EDDYSTONE, bytes.fromhex(parts[0] + parts[1])
    raise BeaconError("a BLE beacon is an iBeacon UUID:major:minor or an Eddystone-UID "
                      "namespace:instance (20 and 12 hex digits)")


class Beacons:
    """The beacon table on the gateway's database (an autocommit sqlite3 connection)."""

    def __init__(self, conn):
        self.conn = conn

    def add(self, kind, identifier, place, floor="", room="", lat=None, lon=None, at=None):
        canonical, protocol_kind, raw = parse_identifier(kind, identifier)
        place = (place or "").strip()
        floor, room = (floor or "").strip(), (room or "").strip()
        if not 1 <= len(place) <= 80:
            raise BeaconError("--place: a beacon needs a place name of 1 to 80 characters")
        if len(floor) > 40 or len(room) > 40:
            raise BeaconError("--floor and --room: at most 40 characters each")
        lat, lon = _coordinates(lat, lon)
        sid = short_id(protocol_kind, raw)
        if self.get(kind, identifier) is not None:
            raise BeaconError("%s %s is already placed (remove it first to move it)"
                              % (kind, canonical))
        clash = self._by_short_id(kind, sid)
        if clash is not None:
            raise BeaconError("%s %s has the same short id (%s) as %s: wearables could not "
                              "tell them apart; give one of them another identifier"
                              % (kind, canonical, sid.hex(), clash.identifier))
        self._insert((kind, canonical, sid, place, floor, room, lat, lon,
                      time.time() if at is None else at))
        return self.get(kind, identifier)

    def get(self, kind, identifier):
        return self._by_identifier(kind, parse_identifier(kind, identifier)[0])

    def remove(self, kind, identifier):
        canonical = parse_identifier(kind, identifier)[0]
        if not self._delete(kind, canonical):
            raise BeaconError("no %s beacon %s (see `vigil gateway beacon list`)"
                              % (kind, canonical))

    def resolve(self, beacons=None, wifi=None):
        """The place of what a frame heard (the rules at the top), as Resolved, or None."""
        unknown = 0
        found = None
        for source, heard in (("ble", beacons), ("wifi", wifi)):
            if not heard:
                continue
            age, entries = heard
            best = None
            for sid, rssi in entries:
                beacon = self._by_short_id(source, bytes(sid))
                if beacon is None:
                    unknown += 1
                elif best is None or rssi > best[1]:  # (a tie keeps the one listed first)
                    best = (beacon, rssi)
            if best is not None and found is None:  # BLE first: Wi-Fi only without it
                found = (best[0], best[1], age, source)
        if found is None:
            return None
        return Resolved(found[0], found[1], found[2], found[3], unknown)

    # -- the SQL (SQLite's; beacons_pg.PostgresBeacons has PostgreSQL's) --
    def all(self):
        """Every beacon, by place, floor, room, then identifier."""
        return [from_row(row) for row in self.conn.execute(
            "SELECT %s FROM beacons ORDER BY place, floor, room, kind, identifier" % COLUMNS)]

    def _by_identifier(self, kind, canonical):
        row = self.conn.execute("SELECT %s FROM beacons WHERE kind = ? AND identifier = ?"
                                % COLUMNS, (kind, canonical)).fetchone()
        return None if row is None else from_row(row)

    def _by_short_id(self, kind, sid):
        row = self.conn.execute("SELECT %s FROM beacons WHERE kind = ? AND short_id = ?"
                                % COLUMNS, (kind, sid)).fetchone()
        return None if row is None else from_row(row)

    def _insert(self, values):
        self.conn.execute("INSERT INTO beacons (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                          % COLUMNS, values)

    def _delete(self, kind, canonical):
        """How many rows went (0 or 1)."""
        return self.conn.execute("DELETE FROM beacons WHERE kind = ? AND identifier = ?",
                                 (kind, canonical)).rowcount


def _coordinates(lat, lon):
    if lat is None and lon is None:
        return None, None
    if lat is None or lon is None:
        raise BeaconError("--lat and --lon: give both, or neither")
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        raise BeaconError("--lat and --lon are decimal degrees") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise BeaconError("--lat is -90 to 90 and --lon -180 to 180 degrees")
    return lat, lon


def from_row(row):
    kind, identifier, sid, place, floor, room, lat, lon, added_at = row
    return Beacon(kind, identifier, bytes(sid), place, floor, room, lat, lon, added_at)
