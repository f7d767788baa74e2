# DC-09 across workers on PostgreSQL (dc09_pg.py): one sender per receiving centre, taken over
# when its worker goes; sequence numbers kept per outbox row whichever worker sends it.
import threading
import time

import psycopg
import pytest

from vigil_gateway.dc09_pg import PostgresDc09State
from vigil_gateway.store_pg import PostgresStore


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


def test_one_sender_per_centre_taken_over_when_its_worker_goes(stores):
    first, second, third = stores(3)
    a, b, c = (PostgresDc09State(s, "arc1") for s in (first, second, third))
    assert a.try_become_sender() and a.is_sender()
    assert not b.try_become_sender() and not b.is_sender()
    assert PostgresDc09State(second, "arc2").try_become_sender()  # another centre: its own
    first.close()  # the sender's worker dies: its session, and the lock, go with it
    for _ in range(1000):  # (the server ends the session a moment after the client goes)
        if b.try_become_sender():
            break
        time.sleep(0.01)
    assert b.is_sender()
    assert not c.try_become_sender()


def test_a_lost_connection_loses_the_lock_and_says_so(stores, postgres):
    (store,) = stores()
    state = PostgresDc09State(store, "arc1")
    assert state.try_become_sender()
    with postgres.connect(autocommit=True) as admin:  # the server ends the worker's session
        # (waits until that session has ended: 10 s at most)
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (store.conn.info.backend_pid,))
    assert state.is_sender()  # not known until the connection is used
    with pytest.raises(psycopg.OperationalError):
        store.conn.execute("SELECT 1")
    assert not state.is_sender()
    assert state.try_become_sender()  # connected again, and nobody else had it


def test_a_row_keeps_its_sequence_number_whichever_worker_sends_it(stores):
    workers = stores(3)
    states = [PostgresDc09State(s, "arc1") for s in workers]
    got, errors = [{} for _ in workers], []

    def run(index):
        try:
            for outbox_id in range(1, 101):
                got[index][outbox_id] = states[index].sequence_for(outbox_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert got[0] == got[1] == got[2]  # the same number for a row, whoever asked first
    assert sorted(got[0].values()) == list(range(1, 101))  # and no number given twice


def test_sequence_numbers_wrap_after_9999(stores, pg_store_url):
    (store,) = stores()
    state = PostgresDc09State(store, "arc1")
    assert state.sequence_for(1) == 1
    with store.conn.transaction():
        store.conn.execute("UPDATE dc09_state SET sequence = 9998")
    assert [state.sequence_for(i) for i in (2, 3, 4)] == [9999, 1, 2]
