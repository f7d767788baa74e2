# Wearer profiles on PostgreSQL (wearers_pg.py): the fields checked as on SQLite, shared by
# every worker and read where they are used, so an operator's change is in the next event any
# worker queues (the webhook's `wearer` and the DC-09 zone) and the next DC-09 message.
import json

import psycopg
import pytest

from pg_workers import Worker, alarm
from vigil_gateway.dc09_pg import PostgresDc09State
from vigil_gateway.wearers import WearerError, parse_contact
from vigil_gateway.wearers_pg import PostgresWearers

DEV = 0x00B0E001
LEAD = "B. Lead,+44 1234 567890,supervisor"


@pytest.fixture
def workers(pg_store_url, tmp_path):
    made = []

    def make():
        made.append(Worker(pg_store_url, tmp_path / "keys", destinations=("webhook",)))
        return made[-1]

    yield make
    for worker in made:
        worker.close()


def test_a_profile_is_set_read_listed_and_removed_with_the_sqlite_rules(workers):
    wearers = PostgresWearers(workers().store)
    assert wearers.get(DEV) is None  # (no device needed: set before provisioning)
    wearers.set(DEV, "  A. Worker ", [parse_contact(LEAD)], "diabetic", zone=7, at=5.0,
                dc09_account="5a17")
    got = wearers.get(DEV)
    assert (got.name, got.contacts, got.notes, got.zone, got.updated_at, got.dc09_account) == (
        "A. Worker", [{"name": "B. Lead", "phone": "+44 1234 567890",
                       "relation": "supervisor"}], "diabetic", 7, 5.0, "5A17")
    wearers.set(DEV, "A. Worker", zone=8, at=6.0)  # replaced as a whole
    assert (wearers.get(DEV).zone, wearers.get(DEV).contacts) == (8, [])
    wearers.set(DEV + 1, "Other", at=6.0)
    assert [w.device_id for w in wearers.all()] == [DEV, DEV + 1]
    for bad, field in ((dict(name=" "), "--name"), (dict(zone=1000), "--zone"),
                       (dict(dc09_account="xyz"), "--dc09-account")):
        args = dict(name="A. Worker", zone=1)
        args.update(bad)
        with pytest.raises(WearerError, match=field):
            wearers.set(DEV, args.pop("name"), **args)
    assert wearers.get(DEV).zone == 8  # a refused change changes nothing
    assert wearers.remove(DEV) and not wearers.remove(DEV)
    assert [w.device_id for w in wearers.all()] == [DEV + 1]


def _snapshots(url):
    with psycopg.connect(url) as conn:
        return [json.loads(r[0]) for r in conn.execute(
            "SELECT snapshot FROM outbox ORDER BY id").fetchall()]


def test_every_worker_queues_and_sends_the_profile_as_it_is_now(workers, pg_store_url):
    first, second = workers(), workers()
    first.add(DEV)
    first.ingest([alarm(DEV, 1)])  # no profile yet
    wearers = PostgresWearers(second.store)  # set through another worker's connection
    wearers.set(DEV, "A. Worker", [parse_contact(LEAD)], "diabetic", zone=12)
    first.ingest([alarm(DEV, 2)])  # the worker that queued the first sees it at once
    wearers.set(DEV, "A. Worker", [parse_contact(LEAD)], zone=34)
    second.ingest([alarm(DEV, 3)])
    snaps = _snapshots(pg_store_url)
    assert [s["wearer"]["name"] for s in snaps] == [None, "A. Worker", "A. Worker"]
    assert [s["zone"] for s in snaps] == [1, 12, 34]
    assert snaps[1]["wearer"] == {"name": "A. Worker", "notes": "diabetic", "contacts": [
        {"name": "B. Lead", "phone": "+44 1234 567890", "relation": "supervisor"}]}
    assert snaps[2]["wearer"]["notes"] is None
    # the DC-09 sender reads the profile for each message, as last committed
    state = PostgresDc09State(first.store)
    assert state.wearer(DEV).zone == 34
    wearers.set(DEV, "A. Worker", zone=56, dc09_account="5A17")
    assert (state.wearer(DEV).zone, state.wearer(DEV).dc09_account) == (56, "5A17")
    assert state.wearer(DEV + 1) is None
