# The ingest pipeline on the PostgreSQL store (pipeline.py on device_state_pg.py) on a real
# server: replay verdicts from the unique key, the downlink counter under the device's row
# lock, one incident per alarm, with several workers (connections) at once.
import random
import threading
import time

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import (COUNTER_REUSE, NEW, RETRANSMISSION, REVOKED_DEVICE, STALE_COUNTER,
                        UNKNOWN_DEVICE, Worker, alarm, checkin)
from vigil_gateway import StoreError, store_pg
from vigil_gateway.store_pg import PostgresStore
from vigil_tools.postgres import free_port

DEV = 0x00C0FFEE


@pytest.fixture
def stores(pg_store_url, tmp_path):
    """make(n) -> n Workers on the test's database (one folder of key files); closed after."""
    made = []

    def make(n=1):
        new = [Worker(pg_store_url, tmp_path / "keys") for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for worker in made:
        worker.close()


def _raised(url, device_id):
    """{alarm counter: how many times its incident was raised (audited)} for the device."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "SELECT i.counter, count(a.id) FROM incidents i LEFT JOIN audit a ON "
            "a.incident_id = i.id AND a.event = 'raised' WHERE i.device_id = %s AND "
            "i.counter IS NOT NULL GROUP BY i.counter", (device_id,)).fetchall())


def test_a_frame_is_new_once_then_a_retransmission_and_another_tag_is_counter_reuse(stores):
    (worker,) = stores()
    worker.add(DEV)
    first = worker.ingest([alarm(DEV, 5)], now=10.0)
    again = worker.ingest([alarm(DEV, 5), alarm(DEV, 5, kind=p.DURESS)], now=11.0)
    assert [v.result for v in first] == [NEW]
    assert [v.result for v in again] == [RETRANSMISSION, COUNTER_REUSE]
    # the new frame and its retransmission are acked, each with a counter of its own
    assert [first[0].ack_counter, again[0].ack_counter, again[1].ack_counter] == [1, 2, None]
    assert worker.store.frame_count(DEV) == 1
    assert [c for c, _ in worker.store.alarm_incidents(DEV)] == [5]
    assert worker.store.downlink_counter(DEV) == 2


def test_below_the_history_floor_a_frame_never_stored_is_stale(stores):
    (worker,) = stores()
    worker.add(DEV, counter_floor=100)  # its counters start at 100
    verdicts = worker.ingest([alarm(DEV, 150), alarm(DEV, 99), alarm(DEV, 100)], now=10.0)
    assert [v.result for v in verdicts] == [NEW, STALE_COUNTER, NEW]
    assert verdicts[1].ack_counter is None


def test_a_late_frame_above_the_floor_is_new_however_far_below_the_newest(stores):
    (worker,) = stores()
    worker.add(DEV)
    worker.ingest([alarm(DEV, 1000)], now=10.0)
    late = worker.ingest([alarm(DEV, 3)], now=11.0)  # 997 counters below: still authentic
    assert [v.result for v in late] == [NEW]
    assert worker.metrics.late_frames.values[()] == 1  # said so: from below the window


def test_unknown_and_revoked_devices_are_judged_under_the_lock(stores):
    first, second = stores(2)
    first.add(DEV)
    first.ingest([alarm(DEV, 1)], now=10.0)
    first.registry.revoke(DEV)  # by another worker: the next batch reads the row again
    verdicts = second.ingest([alarm(DEV, 2), alarm(0x0BADBEEF, 1)], now=10.0)
    assert [v.result for v in verdicts] == [REVOKED_DEVICE, UNKNOWN_DEVICE]
    assert first.ingest([alarm(DEV, 3)], now=11.0)[0].result == REVOKED_DEVICE
    assert first.store.frame_count(DEV) == 1


def _wait_until_blocked(observer, pid):
    """Until the backend `pid` waits for a lock (the server says so; no sleep decides it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                               (pid,)).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.01)
    raise AssertionError("the second worker never waited for the device's lock")


def test_a_second_worker_waits_for_the_device_and_then_sees_what_the_first_committed(
        stores, pg_store_url):
    first, second = stores(2)
    first.add(DEV)
    held = first.write([alarm(DEV, 7)], now=10.0)  # its transaction stays open: row locked
    done = []
    thread = threading.Thread(target=lambda: done.append(
        second.ingest([alarm(DEV, 7)], now=10.5)))
    thread.start()
    with psycopg.connect(pg_store_url, autocommit=True) as observer:
        _wait_until_blocked(observer, second.store.conn.info.backend_pid)
    assert not done
    first.commit()
    thread.join(30)
    (copy,) = done[0]
    assert held[0].result == NEW and copy.result == RETRANSMISSION
    assert (held[0].ack_counter, copy.ack_counter) == (1, 2)
    assert _raised(pg_store_url, DEV) == {7: 1}


def test_batches_naming_the_same_devices_in_opposite_orders_both_commit(stores, pg_store_url):
    first, second = stores(2)
    for device_id in (1, 2):
        first.add(device_id)
    first.write([alarm(2, 1), alarm(1, 1)], now=10.0)
    done = []
    thread = threading.Thread(target=lambda: done.append(
        second.ingest([alarm(1, 2), alarm(2, 2)], now=10.5)))
    thread.start()
    with psycopg.connect(pg_store_url, autocommit=True) as observer:
        _wait_until_blocked(observer, second.store.conn.info.backend_pid)
    first.commit()  # no deadlock: both locked device 1 first
    thread.join(30)
    assert [v.result for v in done[0]] == [NEW, NEW]
    assert [first.store.downlink_counter(d) for d in (1, 2)] == [2, 2]


def test_concurrent_workers_never_reuse_a_downlink_counter_nor_raise_an_alarm_twice(
        stores, pg_store_url):
    """Four workers, each handed every frame of three devices (every frame delivered four
    times, in its own order and batches): each frame is new exactly once, one incident per
    alarm, and every ack has a downlink counter no other ack of its device has."""
    workers = stores(4)
    devices = (0x11, 0x22, 0x33)
    for device_id in devices:
        workers[0].add(device_id)
    frames = [alarm(d, c) for d in devices for c in range(1, 121)] + [
        checkin(d, c, 60) for d in devices for c in range(121, 141)]
    results, errors = [[] for _ in workers], []

    def run(index):
        rng = random.Random(index)
        mine = frames[:]
        rng.shuffle(mine)
        try:
            for start in range(0, len(mine), 9):
                results[index].extend(workers[index].ingest(mine[start:start + 9], now=10.0))
        except Exception as exc:  # a deadlock or serialisation failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    verdicts = [v for r in results for v in r]
    assert len(verdicts) == 4 * len(frames)
    for device_id in devices:
        mine = [v for v in verdicts if v.device_id == device_id]
        new = sorted(v.counter for v in mine if v.result == NEW)
        assert new == list(range(1, 141))  # each frame new once, whichever worker had it
        assert all(v.result in (NEW, RETRANSMISSION) for v in mine)
        acks = sorted(v.ack_counter for v in mine)
        assert acks == list(range(1, len(mine) + 1))  # no counter twice, none skipped
        assert workers[0].store.downlink_counter(device_id) == len(mine)
        # one incident per alarm, raised once, whichever worker had it first
        assert _raised(pg_store_url, device_id) == {c: 1 for c in range(1, 121)}
        assert workers[0].store.frame_count(device_id) == 140


def test_ingest_writes_the_deadline_from_the_database_clock(stores, pg_store_url):
    (worker,) = stores()
    worker.add(DEV)
    worker.ingest([checkin(DEV, 1, interval=120)], now=10.0)
    with psycopg.connect(pg_store_url) as conn:
        left = conn.execute("SELECT extract(epoch FROM deadline - clock_timestamp()) FROM "
                            "devices WHERE device_id = %s", (DEV,)).fetchone()[0]
    # interval 120 s + grace 60 s from when the transaction wrote it, a moment ago
    assert 0 < float(left) <= 180


def test_the_schema_can_be_created_again(pg_store_url):
    with psycopg.connect(pg_store_url) as conn:
        store_pg.create_schema(conn)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_a_database_a_newer_release_made_is_refused_in_one_line(pg_store_url):
    with psycopg.connect(pg_store_url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (store_pg.SCHEMA_VERSION + 1,))
    store = PostgresStore(pg_store_url)
    try:
        with pytest.raises(StoreError) as raised:
            store.ensure_schema()
        assert str(raised.value) == (
            "the database has schema version %d, written by a newer Vigil gateway; this one "
            "knows up to version %d: run the newer gateway, or restore a backup this one made"
            % (store_pg.SCHEMA_VERSION + 1, store_pg.SCHEMA_VERSION))
    finally:
        store.close()


def test_a_worker_that_cannot_connect_says_so_without_the_password(postgres):
    url = "postgresql://vigil:s3cr3t-pw@127.0.0.1:%d/nothing" % free_port()  # nobody there
    with pytest.raises(StoreError) as raised:
        PostgresStore(url)
    assert str(raised.value).startswith("cannot connect to PostgreSQL: ")
    assert "s3cr3t-pw" not in str(raised.value) and "\n" not in str(raised.value)
