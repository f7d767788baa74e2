# The incident's location and the webhook body's `location` (vigil_gateway.location): which
# source names it, its ages as lower bounds, a stale fix marked stale and never current, and
# the body valid against gateway/webhook-schema.json.
import json
from pathlib import Path

import jsonschema
import pytest

import vigil_protocol as p
from vigil_gateway import db, webhook
from vigil_gateway.beacons import Beacons, parse_identifier
from vigil_gateway.location import (STALE_S, Fix, Location, from_record, is_news, locate,
                                    place_text, record, webhook_location)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "gateway" / "webhook-schema.json").read_text())
KEY = bytes(range(32))
HALL = "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2"
AP = "a4:b1:c2:d3:e4:f5"
T = 1_800_000_000.0  # when the frame arrived


@pytest.fixture
def table(tmp_path):
    conn = db.open_database(str(tmp_path / "data"))
    beacons = Beacons(conn)
    beacons.add("ble", HALL, "Main hall", floor="G", room="Reception")
    beacons.add("wifi", AP, "Plant room", floor="B1", lat=51.501, lon=-0.127)
    yield beacons
    conn.close()


def sid(kind, identifier):
    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


def frame(**extensions):
    """An alarm as the gateway decodes it after a wearable sealed it (48 bytes, v2)."""
    return p.decode(p.encode(p.Alarm(0xC0FFEE, 7, "SOS", **extensions), KEY, 2, size=48), KEY,
                    p.UP)


def body(table, f, sent_after=0.0):
    loc = locate(f, T, table.resolve(f.beacons, f.wifi))
    return webhook_location(loc, T + sent_after, webhook._iso)


FIX = (515007800, -1275700, 9)
HEARD_HALL = (2, ((b"\xb0\x00\x00\x01", -40), (sid("ble", HALL), -58)))
HEARD_AP = (5, ((sid("wifi", AP), -61),))


class TestSource:
    def test_a_known_beacon_names_the_place_even_beside_a_current_fix(self, table):
        got = body(table, frame(location=FIX + (3,), beacons=HEARD_HALL))
        assert (got["source"], got["place"], got["floor"], got["room"]) == (
            "ble", "Main hall", "G", "Reception")
        # the hall has no coordinates in the table: the current fix's
        assert (got["lat"], got["lon"], got["accuracy_m"]) == (51.50078, -0.12757, 9)
        assert (got["age_s"], got["stale"]) == (2, False)  # the scan's age
        assert got["fix"]["age_s"] == 3 and got["fix"]["stale"] is False

    def test_a_current_fix_beats_an_access_point(self, table):
        got = body(table, frame(location=FIX + (10,), wifi=HEARD_AP))
        assert (got["source"], got["place"], got["lat"], got["accuracy_m"], got["age_s"]) == (
            "gnss", None, 51.50078, 9, 10)

    def test_an_access_point_beats_a_stale_fix_and_gives_its_coordinates(self, table):
        got = body(table, frame(location=FIX + (600,), wifi=HEARD_AP))
        assert (got["source"], got["place"], got["floor"]) == ("wifi", "Plant room", "B1")
        assert (got["lat"], got["lon"], got["accuracy_m"]) == (51.501, -0.127, None)
        assert got["fix"]["stale"] is True and got["fix"]["age_s"] == 608  # 600 rounded up

    def test_a_stale_fix_alone_is_marked_stale_never_current(self, table):
        got = body(table, frame(location=FIX + (3600,)))
        assert (got["source"], got["stale"]) == ("gnss", True)
        assert got["age_s"] >= 3600
        assert got["at"] == webhook._iso(T - got["age_s"])

    def test_unknown_beacons_and_nothing_heard(self, table):
        assert locate(frame(beacons=(0, ((b"\xb0\x00\x00\x01", -40),))), T,
                      table.resolve(((0, ((b"\xb0\x00\x00\x01", -40),))))) is None
        assert locate(frame(), T, None) is None
        assert webhook_location(None, T, webhook._iso) is None

    def test_a_beacon_with_neither_coordinates_nor_a_current_fix_has_none(self, table):
        got = body(table, frame(location=FIX + (900,), beacons=HEARD_HALL))
        assert (got["source"], got["lat"], got["lon"], got["accuracy_m"]) == (
            "ble", None, None, None)


class TestAge:
    def test_a_location_grows_stale_between_ingest_and_a_later_body(self, table):
        f = frame(location=FIX + (30,))
        loc = locate(f, T, None)
        assert webhook_location(loc, T + 20, webhook._iso)["stale"] is False
        later = webhook_location(loc, T + STALE_S - 29, webhook._iso)
        assert (later["age_s"], later["stale"]) == (61, True)

    def test_a_fix_without_its_age_is_never_called_current(self, table):
        legacy = p.decode(p.encode(p.Alarm(0xC0FFEE, 8, "SOS", location=FIX), KEY, 2), KEY,
                          p.UP)  # extension 0x01: no age
        soon = webhook_location(locate(legacy, T, None), T + 5, webhook._iso)
        assert (soon["source"], soon["age_s"], soon["stale"]) == ("gnss", 5, None)
        assert soon["at"] == webhook._iso(T)  # taken by its arrival at the latest
        late = webhook_location(locate(legacy, T, None), T + 300, webhook._iso)
        assert late["stale"] is True  # at least 300 s old: stale whatever its real age

    def test_record_survives_json(self, table):
        loc = locate(frame(location=FIX + (3,), beacons=HEARD_HALL), T,
                     table.resolve(HEARD_HALL))
        again = from_record(json.loads(json.dumps(record(loc))))
        assert again == loc
        assert from_record(record(None)) is None


class TestBody:
    @pytest.mark.parametrize("extensions", [
        {"location": FIX + (3,), "beacons": HEARD_HALL},
        {"location": FIX + (600,), "wifi": HEARD_AP},
        {"location": FIX},
        {"beacons": HEARD_HALL},
    ])
    def test_the_webhook_body_is_valid(self, table, extensions):
        location = body(table, frame(**extensions), sent_after=1.5)
        incident = {"id": 1, "kind": "SOS", "state": "open", "counter": 7, "opened_at": T,
                    "updated_at": T}
        payload = webhook.incident_payload("raised", incident, 0xC0FFEE, None, [], location,
                                           sent_at=T + 1.5)
        jsonschema.validate(payload, SCHEMA)
        assert payload["location"] == location


class TestPlaceText:
    def test_the_place_in_a_few_words_and_stale_when_it_is(self, table):
        loc = locate(frame(beacons=HEARD_HALL), T, table.resolve(HEARD_HALL))
        assert place_text(loc, T) == "Main hall, floor G, Reception"
        assert place_text(loc, T + STALE_S) == "Main hall, floor G, Reception, stale"

    def test_no_place_no_text(self, table):
        assert place_text(locate(frame(location=FIX + (1,)), T, None), T) is None
        assert place_text(None, T) is None


def test_an_older_gateway_s_coordinates_read_as_a_fix_of_unknown_age():
    # what an event queued before the upgrade holds: lat, lon, accuracy_m, at
    loc = from_record({"lat": 51.5007, "lon": -0.1246, "accuracy_m": 9, "at": T})
    sent = webhook_location(loc, T + 5, webhook._iso)
    assert (sent["source"], sent["lat"], sent["lon"], sent["accuracy_m"]) == \
        ("gnss", 51.5007, -0.1246, 9)
    assert (sent["age_s"], sent["stale"], sent["fix"]["stale"]) == (5, None, None)
    assert webhook_location(loc, T + STALE_S + 1, webhook._iso)["stale"] is True


class TestNews:
    """is_news: what makes a later frame's location an update of the incident's."""

    def fix(self, lat=51.5007, lon=-0.1246, accuracy=9, at=T, age_known=True):
        fix = Fix(lat, lon, accuracy, at, age_known)
        return Location("gnss", None, None, None, lat, lon, accuracy, at, age_known, fix)

    def test_a_first_location_is_news_and_none_never_is(self):
        assert is_news(None, self.fix(), T) is True
        assert is_news(self.fix(), None, T) is False

    def test_one_taken_no_later_than_the_incident_s_is_not(self):
        old = self.fix(at=T)
        assert is_news(old, self.fix(lat=51.6, at=T), T) is False
        assert is_news(old, self.fix(lat=51.6, at=T - 5), T) is False

    def test_moved_beyond_the_larger_of_25_m_and_either_accuracy(self):
        old = self.fix(at=T)
        north = 1 / 110_574  # a metre north, in degrees
        assert is_news(old, self.fix(lat=51.5007 + 24 * north, at=T + 1), T + 1) is False
        assert is_news(old, self.fix(lat=51.5007 + 26 * north, at=T + 1), T + 1) is True
        rough = self.fix(lat=51.5007 + 40 * north, accuracy=50, at=T + 1)
        assert is_news(old, rough, T + 1) is False  # within what the new fix can tell

    def test_another_place_is_news(self, table):
        hall = locate(frame(beacons=HEARD_HALL), T, table.resolve(HEARD_HALL))
        assert is_news(self.fix(at=T - 10), hall, T) is True  # (heard at T - 2)
        assert is_news(hall, self.fix(at=T + 1), T + 1) is True  # left the hall's beacon

    def test_a_current_one_refreshes_a_stale_one_and_a_current_one_needs_none(self):
        old = self.fix(at=T)
        same = self.fix(at=T + STALE_S + 5)
        assert is_news(old, same, T + STALE_S + 5) is True
        assert is_news(old, self.fix(at=T + 30), T + 30) is False
        unknown = self.fix(at=T, age_known=False)
        assert is_news(unknown, self.fix(at=T + 1), T + 1) is True
