# PostgreSQL restarted under a worker (its own server, not the session's): what was committed
# stays, what was not is not, and the worker connects again by itself.
import psycopg
import pytest

import pg_workers
from pg_workers import NEW, Worker
from vigil_gateway import StoreError, store_pg
from vigil_tools.postgres import PostgresServer

DEV = 0x00C0FFEE


def alarm(counter):
    return pg_workers.alarm(DEV, counter)


@pytest.fixture
def server():
    server = PostgresServer().start()
    server.create_database("vigil")
    with psycopg.connect(server.url("vigil")) as conn:
        store_pg.create_schema(conn)
    yield server
    server.stop()
    server.remove()


def _until_connected(store, batch, now):
    """The service's way: a batch the store cannot take is tried again until it can."""
    for _ in range(100):
        try:
            return store.ingest(batch, now)
        except StoreError:
            continue
    raise AssertionError("the worker never connected again")


def test_a_restart_keeps_what_was_committed_and_drops_what_was_not(server, tmp_path):
    store = Worker(server.url("vigil"), tmp_path / "keys")
    try:
        store.add(DEV)
        acked = store.ingest([alarm(c) for c in range(1, 11)], now=10.0)  # committed: acked
        pending = store.write([alarm(c) for c in range(11, 21)], now=11.0)  # not committed
        server.restart()
        with pytest.raises(StoreError):
            store.commit()  # the transaction died with the server: nothing of it is acked
        again = _until_connected(store, [alarm(c) for c in range(11, 21)], now=12.0)
        assert [v.result for v in again] == [NEW] * 10  # nothing of the lost one was kept
        # counters the lost transaction allocated were never sent: they may be given again,
        # and no counter of an ack that went out is
        sent = [v.ack_counter for v in acked + again]
        assert sorted(sent) == list(range(1, 21))
        assert [v.ack_counter for v in pending] == list(range(11, 21))
        assert store.store.frame_count(DEV) == 20
        assert [c for c, _ in store.store.alarm_incidents(DEV)] == list(range(1, 21))
    finally:
        store.close()


def test_a_worker_whose_server_went_away_says_so_and_goes_on_when_it_is_back(server,
                                                                            tmp_path):
    store = Worker(server.url("vigil"), tmp_path / "keys")
    try:
        store.add(DEV)
        server.stop()
        with pytest.raises(StoreError):
            store.ingest([alarm(1)], now=10.0)
        with pytest.raises(StoreError) as raised:  # and again, while it is down
            store.ingest([alarm(1)], now=10.0)
        assert "cannot connect to PostgreSQL" in str(raised.value)
        server.start()
        assert [v.result for v in _until_connected(store, [alarm(1)], now=11.0)] == [NEW]
    finally:
        store.close()
