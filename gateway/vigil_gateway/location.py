# Where the wearer is, for responders: a decoded frame's location extensions (protocol/SPEC.md
# section 4) and the beacon table's answer turned into the incident's location, then into the
# webhook body's `location`. Two pure functions, no I/O: locate() at ingest (what the frame
# said, as plain data an incident can keep), webhook_location() when a body is sent (ages and
# staleness at that moment).
#
# Rules:
#   ages: a fix's age and a scan's age are lower bounds at the frame's arrival (the wearable
#     rounded them up when sealing, and the frame may have travelled since); taken_at =
#     received_at - age, the latest it can have been taken; a fix without its age (extension
#     0x01, older wearables) is taken at received_at at the latest, its age not known;
#   at sending, age_s = sent_at - taken_at in whole seconds: the location is at least that old;
#   a location is STALE when age_s is over STALE_S (60 s: a walking wearer is 90 m on); a stale
#     one is marked stale, with its age, never shown as current; where the age is not known
#     and its lower bound is not over STALE_S, stale is null (not known), never false;
#   the source, in order: "ble" when the beacon table names the place of a BLE beacon heard
#     (indoors: a named place beats coordinates); else "gnss" for a fix that was current on
#     arrival; else "wifi" when the table names an access point heard (a hint); else "gnss"
#     for a stale fix or one of unknown age; else no location at all (None);
#   place, floor, room: the resolved beacon's (a "gnss" location names none);
#   lat, lon, accuracy_m: the source's: a fix's own; a beacon's registered coordinates (accuracy
#     unknown: null), or, where the table has none, those of a fix that was current on arrival;
#   fix: the GNSS fix the frame carried, whatever the source, with its own age and staleness.
#   news (is_news): a later location tells responders something the incident's does not when
#     it names another place (source, place, floor or room), or its coordinates are more than
#     MOVED_M (or either's accuracy, if larger) from the incident's, or it is current where the
#     incident's has gone stale (or its age was never known); one taken no later than the
#     incident's is no news.
import math
from collections import namedtuple

STALE_S = 60
MOVED_M = 25

# What an incident keeps (record() and from_record() for a JSON snapshot). age_known is False
# for a fix of extension 0x01 (and a location taken from one).
Location = namedtuple("Location", "source place floor room lat lon accuracy_m taken_at "
                                  "age_known fix")
Fix = namedtuple("Fix", "lat lon accuracy_m taken_at age_known")


def locate(frame, received_at, resolved=None):
    """The Location of a decoded frame that arrived at `received_at` (epoch seconds), given
    what the beacon table resolved from it (beacons.Beacons.resolve(frame.beacons,
    frame.wifi), or None); None when it says nothing usable."""
    fix = None
    if frame.location is not None:
        lat, lon, accuracy = frame.location[0] / 1e7, frame.location[1] / 1e7, frame.location[2]
        age = frame.location[3] if len(frame.location) > 3 else None
        fix = Fix(lat, lon, accuracy, received_at - (age or 0), age is not None)
    current = fix is not None and fix.age_known and received_at - fix.taken_at <= STALE_S
    if resolved is not None and (resolved.source == "ble" or not current):
        b = resolved.beacon
        if b.lat is not None:
            lat, lon, accuracy = b.lat, b.lon, None
        elif current:
            lat, lon, accuracy = fix.lat, fix.lon, fix.accuracy_m
        else:
            lat = lon = accuracy = None
        return Location(resolved.source, b.place, b.floor or None, b.room or None, lat, lon,
                        accuracy, received_at - resolved.age, True, fix)
    if fix is not None:
        return Location("gnss", None, None, None, fix.lat, fix.lon, fix.accuracy_m,
                        fix.taken_at, fix.age_known, fix)
    return None


def webhook_location(location, sent_at, iso):
    """The webhook body's `location` for a Location (or None) in a body sent at `sent_at`;
    `iso` formats epoch seconds as the body's times (webhook._iso)."""
    if location is None:
        return None
    age, stale = _age(location.taken_at, location.age_known, sent_at)
    body = {"source": location.source, "place": location.place, "floor": location.floor,
            "room": location.room, "lat": location.lat, "lon": location.lon,
            "accuracy_m": location.accuracy_m, "at": iso(location.taken_at), "age_s": age,
            "stale": stale, "fix": None}
    fix = location.fix
    if fix is not None:
        age, stale = _age(fix.taken_at, fix.age_known, sent_at)
        body["fix"] = {"lat": fix.lat, "lon": fix.lon, "accuracy_m": fix.accuracy_m,
                       "at": iso(fix.taken_at), "age_s": age, "stale": stale}
    return body


def place_text(location, sent_at):
    """The place in a few words, for DC-09's extended text (its coordinates travel in the
    standard's own form) and for people: "Main hall, floor G, Reception", then ", stale" when
    stale at `sent_at`; None when no place is named."""
    if location is None or not location.place:
        return None
    parts = [location.place]
    if location.floor:
        parts.append("floor " + location.floor)
    if location.room:
        parts.append(location.room)
    if is_stale(location, sent_at):
        parts.append("stale")
    return ", ".join(parts)


def is_stale(location, at):
    """True when `location` is over STALE_S old at `at`; False when it is not; None when the
    wearable did not say how old it was (and it is not provably over)."""
    return _age(location.taken_at, location.age_known, at)[1]


def is_news(old, new, at):
    """Whether the Location `new` (arrived at `at`) updates the incident's `old` (or None)."""
    if new is None:
        return False
    if old is None:
        return True
    if new.taken_at <= old.taken_at:
        return False
    if (new.source, new.place, new.floor, new.room) != (old.source, old.place, old.floor,
                                                        old.room):
        return True
    if new.lat is not None and (old.lat is None or _metres(old, new) > max(
            MOVED_M, old.accuracy_m or 0, new.accuracy_m or 0)):
        return True
    return is_stale(old, at) is not False and is_stale(new, at) is False


def _metres(a, b):
    """The distance between two locations' coordinates (equirectangular: metres apart)."""
    north = (b.lat - a.lat) * 110_574
    east = (b.lon - a.lon) * 111_320 * math.cos(math.radians((a.lat + b.lat) / 2))
    return math.hypot(north, east)


def record(location):
    """A Location as plain JSON-able data (an incident's snapshot), or None."""
    if location is None:
        return None
    out = location._asdict()
    out["fix"] = None if location.fix is None else location.fix._asdict()
    return out


def from_record(data):
    """The Location of a record(), or of the coordinates alone an older gateway kept (lat,
    lon, accuracy_m, at: a GNSS fix of unknown age); None for None."""
    if data is None:
        return None
    if "source" not in data:
        fix = Fix(data["lat"], data["lon"], data["accuracy_m"], data["at"], False)
        return Location("gnss", None, None, None, fix.lat, fix.lon, fix.accuracy_m,
                        fix.taken_at, False, fix)
    fix = data.get("fix")
    return Location(**dict(data, fix=None if fix is None else Fix(**fix)))


def _age(taken_at, known, sent_at):
    age = max(0, int(sent_at - taken_at))
    if age > STALE_S:
        return age, True
    return age, False if known else None
