# Stored downlinks on PostgreSQL (downlinks_pg.py): made once whichever worker asks, each with
# a counter of its own, and announced to every worker's pump (LISTEN/NOTIFY).
import threading

import psycopg
import pytest

from pg_workers import Worker, alarm
from vigil_gateway import downlinks_pg
from vigil_gateway.store_pg import PostgresStore

DEV = 0x00C0FFEE


@pytest.fixture
def stores(pg_store_url):
    made = []

    def make(n=1):
        new = [PostgresStore(pg_store_url) for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for store in made:
        store.close()


def _sign(counter):
    return b"signed-%d" % counter  # (the caller's key signs; none reaches the database)


def _deliver(store, ref, code=2):
    with store.locked([DEV]):
        return downlinks_pg.make(store, DEV, ref, "ack", code, _sign, at=10.0)


def test_workers_asking_for_the_same_downlinks_make_each_once_with_its_own_counter(stores):
    workers = stores(3)
    workers[0].add_device(DEV, at=1.0, counter_floor=1)
    made, errors = [[] for _ in workers], []

    def run(index):
        try:
            for ref in range(1, 41):
                made[index].append(_deliver(workers[index], ref))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    real = [m for per_worker in made for m in per_worker if m is not None]
    assert sorted(m.ref for m in real) == list(range(1, 41))  # each once, by one worker
    assert sorted(m.counter for m in real) == list(range(1, 41))  # no counter twice
    assert all(m.frame == _sign(m.counter) for m in real)


def test_downlinks_and_acks_of_ingest_at_once_never_share_a_counter(stores, pg_store_url,
                                                                    tmp_path):
    (sender,) = stores()
    ingester = Worker(pg_store_url, tmp_path / "keys")
    ingester.add(DEV)
    made = []
    thread = threading.Thread(target=lambda: made.extend(_deliver(sender, r)
                                                         for r in range(1, 101)))
    thread.start()
    try:
        acks = [v.ack_counter for c in range(1, 101) for v in ingester.ingest(
            [alarm(DEV, c)], now=10.0)]
    finally:
        thread.join(60)
        ingester.close()
    assert sorted(acks + [m.counter for m in made]) == list(range(1, 201))


def test_a_downlink_made_wakes_a_listening_worker_at_commit(stores, pg_store_url):
    (store,) = stores()
    store.add_device(DEV, at=1.0, counter_floor=1)
    with psycopg.connect(pg_store_url, autocommit=True) as listener:
        listener.execute("LISTEN %s" % downlinks_pg.CHANNEL)
        with store.locked([DEV]):
            downlinks_pg.make(store, DEV, 1, "ack", 2, _sign, at=10.0)
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []  # not before commit
        got = list(listener.notifies(timeout=30, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [(downlinks_pg.CHANNEL, str(DEV))]
