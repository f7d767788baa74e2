# The beacon table on PostgreSQL (beacons_pg.PostgresBeacons): beacons.py's rules on a shared
# table - identifiers canonical with their short ids, refusals in one line, resolve()'s choice
# of place - two commands adding clashing beacons at once, and a worker's ingest naming the
# place of an alarm another process placed the beacon for.
import json
import threading

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import TOPICS, Worker, key_for
from vigil_gateway import beacons_pg
from vigil_gateway.beacons import BeaconError, parse_identifier
from vigil_gateway.pipeline import Message
from vigil_gateway.store_pg import PostgresStore

HALL = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2"
AP = "A4-B1-C2-D3-E4-F5"
CLASH = ("02:00:00:00:87:36", "02:00:00:01:05:ee")  # two BSSIDs with one short id
DEV = 0x00C0FFEE


def sid(kind, identifier):
    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


@pytest.fixture
def url(pg_store_url):
    return pg_store_url  # (store_pg's schema makes the table)


@pytest.fixture
def table(url):
    store = PostgresStore(url)
    yield beacons_pg.PostgresBeacons(store)
    store.close()


def test_the_rules_of_the_sqlite_table_hold(table, url):
    hall = table.add("ble", HALL, "Main hall", floor="G", room="Reception")
    assert (hall.identifier, hall.short_id) == (HALL.lower(), sid("ble", HALL))
    table.add("wifi", AP, "Plant room", floor="B1", lat=51.501, lon=-0.127)
    with pytest.raises(BeaconError, match="already placed"):
        table.add("ble", HALL.lower(), "Elsewhere")
    table.add("wifi", CLASH[0], "Yard")
    with pytest.raises(BeaconError, match="same short id"):
        table.add("wifi", CLASH[1], "Gate")
    with pytest.raises(BeaconError, match="place name"):
        table.add("ble", "edd1ebeac04e5defa017:0badcafe0001", "")
    assert [b.place for b in table.all()] == ["Main hall", "Plant room", "Yard"]
    # another connection sees what was committed
    with psycopg.connect(url) as other:
        assert other.execute("SELECT count(*) FROM beacons").fetchone()[0] == 3
    heard = (2, ((b"\xb0\x00\x00\x01", -40), (sid("ble", HALL), -58)))
    got = table.resolve(beacons=heard, wifi=(1, ((sid("wifi", AP), -30),)))
    assert (got.beacon.place, got.source, got.rssi, got.unknown) == ("Main hall", "ble", -58, 1)
    assert table.resolve(wifi=(1, ((sid("wifi", AP), -30),))).beacon.place == "Plant room"
    table.remove("wifi", AP)
    with pytest.raises(BeaconError, match="no wifi beacon"):
        table.remove("wifi", AP)
    assert table.resolve(wifi=(1, ((sid("wifi", AP), -30),))) is None


def test_two_commands_adding_one_beacon_at_once_place_it_once(url, table):
    # the first holds its insert uncommitted; the second passes the checks, then waits on the
    # unique key and is refused once the first commits
    first = psycopg.connect(url)
    first.execute("INSERT INTO beacons (kind, identifier, short_id, place, added_at) VALUES "
                  "('ble', %s, %s, 'Main hall', 1.0)", (HALL.lower(), sid("ble", HALL)))
    outcome = []

    def second():
        try:
            table.add("ble", HALL, "Boiler room")
            outcome.append("added")
        except BeaconError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive()  # waiting on the first's uncommitted row
    first.commit()
    first.close()
    thread.join(10)
    assert len(outcome) == 1 and "placed meanwhile" in outcome[0] and "\n" not in outcome[0]
    assert [b.place for b in table.all()] == ["Main hall"]
    table.add("wifi", AP, "Plant room")  # the store's connection is fine after the refusal


def test_a_worker_names_the_place_of_a_beacon_placed_by_another_process(url, table, tmp_path):
    table.add("ble", HALL, "Main hall", floor="G", room="Reception")
    worker = Worker(url, tmp_path / "keys", destinations=("webhook",))
    try:
        worker.add(DEV)
        worker.pipeline.places = beacons_pg.PostgresBeacons(worker.store)
        heard = (3, ((sid("ble", HALL), -61),))
        frame = p.encode(p.Alarm(DEV, 5, p.SOS, beacons=heard), p.DeviceKey(key_for(DEV)), 2,
                         size=48)
        worker.ingest([Message(TOPICS.up(DEV), frame)], now=100.0)
    finally:
        worker.close()
    with psycopg.connect(url) as conn:
        [(snapshot,)] = conn.execute("SELECT snapshot FROM outbox").fetchall()
    location = json.loads(snapshot)["location"]
    assert (location["source"], location["place"], location["floor"], location["room"]) == \
        ("ble", "Main hall", "G", "Reception")
    assert location["taken_at"] == 100.0 - 3
