# Where the wearer is, through to responders: the real gateway (`vigil gateway run`) with a
# beacon table made by `vigil gateway beacon add`, alarms through a real Mosquitto, the webhook
# body at the reference backend (checked against webhook-schema.json) and the SIA DC-09 message
# at pysiaalarm's receiver. A beacon heard names the place (no coordinates of its own here); a
# current fix gives coordinates; a fix older than 60 s is marked stale at both, never current.
import json
import os
import queue
import sys

import jsonschema
import pytest

import vigil_protocol as p
from vigil_responder import ResponderBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import Device, GatewayProcess, key_for, write_secret  # noqa: E402
from sia_receiver import start_receiver  # noqa: E402
from vigil_gateway.beacons import parse_identifier  # noqa: E402
from vigil_tools.broker import free_port  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
WEBHOOK_SCHEMA = json.load(open(os.path.join(ROOT, "gateway", "webhook-schema.json")))
SECRET = b"webhook-secret-for-location-0123"
AES_KEY = "0123456789ABCDEF0123456789ABCDEF"
DEV = 0x10CA7E01
KEY = key_for(DEV)
HALL = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2"
FIX = (515007000, -1246000, 9)  # 51.5007 N, 0.1246 W, 9 m


def short_id(kind, identifier):
    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


@pytest.fixture
def site(tmp_path, mosquitto_factory):
    broker = mosquitto_factory()
    backend = ResponderBackend(SECRET).start()
    arc_port = free_port()
    write_secret(tmp_path / "secret", SECRET)
    write_secret(tmp_path / "arc.key", AES_KEY.encode().hex() + "\n")
    gw = GatewayProcess(
        tmp_path / "gw", broker.port, forward={"backoff_min_s": 0.05, "backoff_max_s": 0.3},
        **{"forward.webhook": {"url": backend.url, "secret_file": str(tmp_path / "secret")},
           "forward.dc09": {"host": "127.0.0.1", "port": arc_port, "account": "1234AB",
                            "key_file": str(tmp_path / "arc.key")}})
    gw.add_device(DEV, KEY)
    gw.cli("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--zone", "7")
    gw.cli("beacon", "add", "ble", HALL, "--place", "Main hall", "--floor", "G",
           "--room", "Reception")
    events = queue.Queue()
    receiver = start_receiver(arc_port, {"1234AB": AES_KEY}, events)
    gw.start()
    device = Device(broker.port, DEV, KEY)
    yield gw, device, backend, events
    device.close()
    gw.stop()
    receiver.stop()
    backend.stop()


def _raise(device, backend, events, **ext):
    counter = device.next_counter()
    device.publish(p.encode(p.Alarm(DEV, counter, p.SOS, **ext), device.key, 2, size=48))
    device.wait_acked([counter])
    key = "%08x-%d-raised" % (DEV, counter)
    body = backend.wait_for(lambda e: e["idempotency_key"] == key)
    jsonschema.validate(body, WEBHOOK_SCHEMA)
    arc = events.get(timeout=20)
    while arc.code != "PA":  # a NULL link test may come first
        arc = events.get(timeout=20)
    return body["location"], arc.x_data or ""


def test_a_beacon_heard_names_the_place_at_the_webhook_and_the_arc(site):
    gw, device, backend, events = site
    heard = (2, ((b"\x00\x00\x00\x09", -40), (short_id("ble", HALL), -61)))  # strongest unknown
    location, x_data = _raise(device, backend, events, beacons=heard)
    assert (location["source"], location["place"], location["floor"], location["room"]) == \
        ("ble", "Main hall", "G", "Reception")
    assert (location["lat"], location["lon"], location["fix"]) == (None, None, None)
    assert location["stale"] is False and 2 <= location["age_s"] < 60
    # the I-text alone: no coordinates to give
    assert x_data == "Idev 10ca7e01, Main hall, floor G, Reception, A. Worker"


def test_a_current_fix_gives_coordinates_and_a_stale_one_is_marked_stale(site):
    gw, device, backend, events = site
    location, x_data = _raise(device, backend, events, location=FIX + (3,))
    assert (location["source"], location["place"]) == ("gnss", None)
    assert (location["lat"], location["lon"], location["accuracy_m"]) == \
        pytest.approx((51.5007, -0.1246, 9))
    assert location["stale"] is False and location["fix"]["stale"] is False
    assert "Y51N30.042" in x_data and "X000W07.476" in x_data
    assert "stale" not in x_data

    location, x_data = _raise(device, backend, events, location=FIX + (300,))
    assert location["source"] == "gnss" and location["stale"] is True
    assert location["age_s"] >= 300 and location["fix"]["stale"] is True
    assert "Y51N30.042" in x_data and "location stale" in x_data


def _check_in(device, **ext):
    counter = device.next_counter()
    device.publish(p.encode(p.CheckIn(DEV, counter, 80, 0, 0, **ext), device.key, 2, size=48))
    device.wait_acked([counter])
    return counter


def test_a_later_check_in_updates_the_open_alarm_s_location_and_raises_nothing(site):
    gw, device, backend, events = site
    first, _ = _raise(device, backend, events, location=FIX + (3,))
    assert first["source"] == "gnss"
    _check_in(device, location=(515007100, -1246000, 9, 1))  # 11 m off: within accuracy
    heard = (1, ((short_id("ble", HALL), -58),))
    moved = _check_in(device, beacons=heard)  # indoors now: the hall's beacon
    update = backend.wait_for(lambda e: e["event"] == "location_updated")
    jsonschema.validate(update, WEBHOOK_SCHEMA)
    assert update["idempotency_key"] == "%08x-1-location_updated-1" % DEV
    assert (update["incident"]["alarm_counter"], update["incident"]["state"]) == (1, "open")
    assert (update["location"]["source"], update["location"]["place"]) == ("ble", "Main hall")
    assert update["audit"][-1]["detail"] == "location updated; checkin frame %d" % moved
    arc = events.get(timeout=20)
    while arc.code == "RP":
        arc = events.get(timeout=20)
    # the open alarm again (its code, pairing with it at the ARC), with where the wearer is now
    assert arc.code == "PA"
    # (60 characters of I-text: the wearer's name does not fit after the place)
    assert arc.x_data == "Ilocation update, dev 10ca7e01, Main hall, floor G, Reception"

    _check_in(device, beacons=heard)  # the same place, still current: no news
    far = _check_in(device, location=(515100000, -1246000, 5, 1))  # outdoors, ~1 km north
    second = backend.wait_for(lambda e: e["idempotency_key"] ==
                              "%08x-1-location_updated-2" % DEV)
    assert (second["location"]["source"], second["location"]["lat"]) == \
        ("gnss", pytest.approx(51.51))
    assert second["audit"][-1]["detail"] == "location updated; checkin frame %d" % far
    [incident] = gw.incidents()  # nothing new raised
    updates = [a for a in incident["audit"] if a["event"] == "location_updated"]
    assert len(updates) == 2
    assert [e["event"] for e in backend.events].count("location_updated") == 2
