# The forwarding outbox on PostgreSQL (outbox_pg.py): workers claim rows with SKIP LOCKED and a
# lease from the database clock; one incident's events in order; a lost lease changes nothing;
# the store's transactions queue each incident event once, whichever worker makes it.
import json
import random
import threading

import pytest

from pg_workers import Worker, alarm
from vigil_gateway.outbox_pg import PostgresOutbox
from vigil_gateway.store_pg import PostgresStore

HOOK = "webhook"


@pytest.fixture
def outboxes(pg_store_url):
    """make(n) -> n PostgresOutboxes, each on a worker connection of its own."""
    made = []

    def make(n=1):
        stores = [PostgresStore(pg_store_url) for _ in range(n)]
        made.extend(stores)
        return [PostgresOutbox(store) for store in stores]

    yield make
    for store in made:
        store.close()


def enqueue(outbox, incident_id, event, destinations=(HOOK,)):
    with outbox.conn.transaction():
        return outbox.enqueue(destinations, incident_id, 0x11, "11-%d-%s" % (incident_id, event),
                              event, "{}")


def test_one_row_per_destination_and_key(outboxes):
    (outbox,) = outboxes()
    assert enqueue(outbox, 1, "raised", (HOOK, "dc09")) == 2
    assert enqueue(outbox, 1, "raised", (HOOK, "dc09")) == 0


def test_only_the_oldest_undelivered_event_of_an_incident_is_claimed(outboxes):
    first, second = outboxes(2)
    for event in ("raised", "wearer_confirms", "resolved"):
        enqueue(first, 1, event)
    enqueue(first, 2, "raised")
    claimed = first.claim(HOOK, lease_s=60)
    assert [(c.incident_id, c.event) for c in claimed] == [(1, "raised"), (2, "raised")]
    # the next event of incident 1 waits for the first, leased by another worker
    assert second.claim(HOOK, lease_s=60) == []
    assert first.delivered(claimed[0])
    [nxt] = second.claim(HOOK, lease_s=60)
    assert (nxt.incident_id, nxt.event) == (1, "wearer_confirms")


def test_a_lease_that_ran_out_is_claimed_again_and_the_first_worker_changes_nothing(outboxes):
    first, second = outboxes(2)
    enqueue(first, 1, "raised")
    [mine] = first.claim(HOOK, lease_s=0)  # runs out at once, on the database clock
    [theirs] = second.claim(HOOK, lease_s=60)
    assert theirs.id == mine.id and theirs.lease != mine.lease
    assert not first.delivered(mine)
    assert not first.failed(mine, 0, "late")
    assert second.delivered(theirs)
    assert first.delivered_keys(HOOK) == [(1, "11-1-raised")]


def test_a_failed_row_waits_its_delay_then_is_due_again(outboxes):
    (outbox,) = outboxes()
    enqueue(outbox, 1, "raised")
    [item] = outbox.claim(HOOK, lease_s=60)
    assert outbox.failed(item, 3600, "HTTP 503")
    assert outbox.claim(HOOK, lease_s=60) == []  # not due for an hour
    enqueue(outbox, 2, "raised")
    [other] = outbox.claim(HOOK, lease_s=60)
    assert outbox.failed(other, 0, "HTTP 503")
    [again] = outbox.claim(HOOK, lease_s=60)
    assert (again.id, again.attempts) == (other.id, 1)


def test_workers_claiming_at_once_deliver_every_row_once_in_order_per_incident(outboxes):
    workers = outboxes(3)
    events = ("raised", "wearer_confirms", "contact_restored", "resolved")
    for incident_id in range(1, 31):
        for event in events:
            enqueue(workers[0], incident_id, event)
    delivered, errors = [[] for _ in workers], []

    def run(index):
        outbox = workers[index]
        try:
            idle = 0
            while idle < 50:  # others may hold what is left: ask again a few times
                claimed = outbox.claim(HOOK, lease_s=60, limit=4)
                idle = 0 if claimed else idle + 1
                for item in claimed:
                    assert outbox.delivered(item)
                    delivered[index].append(item.key)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    everything = [k for per_worker in delivered for k in per_worker]
    assert sorted(everything) == sorted("11-%d-%s" % (i, e) for i in range(1, 31)
                                        for e in events)  # each once, whoever claimed it
    marked = workers[0].delivered_keys(HOOK)
    for incident_id in range(1, 31):
        mine = [key for i, key in marked if i == incident_id]
        assert mine == ["11-%d-%s" % (incident_id, e) for e in events]


def test_workers_ingesting_copies_of_alarms_queue_each_raise_once_per_destination(
        pg_store_url, tmp_path):
    workers = [Worker(pg_store_url, tmp_path / "keys", destinations=(HOOK, "dc09"))
               for _ in range(3)]
    try:
        for device_id in (0x21, 0x22):
            workers[0].add(device_id)
        frames = [alarm(d, c) for d in (0x21, 0x22) for c in range(1, 61)]
        errors = []

        def run(index):
            mine = frames[:]
            random.Random(index).shuffle(mine)
            try:
                for start in range(0, len(mine), 8):
                    workers[index].ingest(mine[start:start + 8], now=10.0)
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        expected = sorted("%08x-%d-raised" % (d, c) for d in (0x21, 0x22) for c in range(1, 61))
        for destination in (HOOK, "dc09"):
            claimed = workers[1].store.outbox.claim(destination, lease_s=60, limit=500)
            assert sorted(c.key for c in claimed) == expected  # one row per alarm, not three
            snapshot = json.loads(claimed[0].snapshot)
            assert snapshot["event"] == "raised" and snapshot["audit"][0]["event"] == "raised"
    finally:
        for store in workers:
            store.close()


def test_a_lost_contact_and_its_return_are_queued_in_order(pg_store_url, tmp_path):
    worker = Worker(pg_store_url, tmp_path / "keys", default_interval_s=0, grace_s=0,
                    destinations=(HOOK,))
    store = worker.store
    try:
        worker.add(0x31)
        worker.ingest([alarm(0x31, 1)], now=10.0)
        [(_, incident_id)] = store.claim_overdue(now=20.0)
        worker.ingest([alarm(0x31, 2)], now=30.0)
        keys = []
        while True:
            claimed = [c for c in store.outbox.claim(HOOK, lease_s=60)
                       if c.incident_id == incident_id]
            if not claimed:
                break
            for item in claimed:
                keys.append(item.key)
                assert store.outbox.delivered(item)
        assert keys == ["00000031-i%d-raised" % incident_id,
                        "00000031-i%d-contact_restored" % incident_id]
    finally:
        store.close()


def _rows_read(conn, sql, args):
    """Rows every node of `sql`'s plan produced or filtered out, over all its loops
    (EXPLAIN ANALYZE): the work it did, independent of the machine's speed."""
    def walk(node):
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0) +
               node.get("Rows Removed by Join Filter", 0)) * node["Actual Loops"]
        return own + sum(walk(child) for child in node.get("Plans", ()))

    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, args).fetchone()[0]
    return walk(plan[0]["Plan"])


def test_a_claim_reads_each_pending_row_once_whatever_the_planner_knows(pg_store_url):
    # A burst on a new database: 2,000 rows pending before autovacuum has analysed the table.
    # "The oldest undelivered row of its incident" was a NOT EXISTS the planner made a nested
    # loop of, comparing every pending row with every other (4,000,000 rows read a claim,
    # 0.8 s): forwarding crawled. It must stay linear, before and after ANALYZE.
    from vigil_gateway.outbox_pg import _CLAIM, _NEXT_DUE

    store = PostgresStore(pg_store_url)
    try:
        conn = store.conn
        with conn.transaction():
            conn.execute("INSERT INTO outbox (destination, incident_id, device_id, key, event, "
                         "snapshot) SELECT %s, (g + 1) / 2, 17, 'k' || g, 'raised', '{}' "
                         "FROM generate_series(1, 2000) g", (HOOK,))
        pending = 2000
        for analysed in (False, True):
            if analysed:
                conn.execute("ANALYZE outbox")
            with conn.transaction():  # (the claim's row locks, let go at its end)
                claim = {"destination": HOOK, "limit": 10}
                # the oldest row of each incident (two rows each): ids 1, 3, 5, ...
                assert [r[0] for r in conn.execute(_CLAIM, claim)] == list(range(1, 20, 2))
                assert _rows_read(conn, _CLAIM, claim) < 10 * pending
                assert _rows_read(conn, _NEXT_DUE, (HOOK,)) < 10 * pending
    finally:
        store.close()
