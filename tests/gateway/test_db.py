# The database connection whose batch COMMIT may run in the service's writer thread: while it
# is in flight nothing else uses the connection, and a COMMIT that fails is rolled back.
import sqlite3
import threading
from concurrent.futures import Future

import pytest

from vigil_gateway.db import open_database


class HeldExecutor:
    """An executor that runs its job only when the test says so."""

    def submit(self, fn):
        self.fn, self.future = fn, Future()
        return self.future

    def run(self):
        try:
            self.future.set_result(self.fn())
        except Exception as exc:
            self.future.set_exception(exc)


@pytest.fixture
def conn(tmp_path):
    conn = open_database(str(tmp_path))
    conn.executescript("CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                       "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
                       "DEFERRABLE INITIALLY DEFERRED);")
    yield conn
    conn.close()


def test_a_statement_waits_for_the_commit_in_flight_and_sees_it_done(conn):
    writer = HeldExecutor()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO parent VALUES (1)")
    future = conn.commit_in(writer)
    seen = []

    def read():
        count = conn.execute("SELECT count(*) FROM parent").fetchone()[0]
        seen.append((count, conn.in_transaction))

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not seen  # waiting for the COMMIT, not reading into it
    writer.run()
    reader.join(10)
    assert future.result() is None
    assert seen == [(1, False)]


def test_a_commit_that_fails_is_rolled_back_and_raises(conn):
    writer = HeldExecutor()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO child VALUES (7)")  # no parent 7: COMMIT refuses it
    future = conn.commit_in(writer)
    writer.run()
    with pytest.raises(sqlite3.IntegrityError):
        future.result()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    conn.execute("INSERT INTO parent VALUES (1)")  # the connection goes on working


def test_commit_or_rollback_commits_in_place_and_is_a_no_op_without_a_transaction(conn):
    conn.commit_or_rollback()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO parent VALUES (1)")
    conn.commit_or_rollback()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM parent").fetchone()[0] == 1
