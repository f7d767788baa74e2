# One SQLite database per gateway, in WAL mode so the CLI can read and edit the registry while
# the service runs. Its schema, and the steps that bring an older one up, are in migrations.py:
# they run here, whenever the database is opened.
# It and its -wal and -shm files are readable by the gateway's user only (0600).
#
# The service commits its ingest batches in a writer thread (commit_in()): the COMMIT and its
# fsync release the GIL, so the event loop goes on with the broker meanwhile. While such a
# COMMIT is in flight every other statement on the connection waits for it (a short wait, on
# the loop's thread), so nothing else sees or joins the transaction being committed.
import os
import sqlite3
import threading

from . import migrations
from .errors import StoreError

DB_NAME = "gateway.db"


def open_database(data_dir, synchronous="full"):
    """Open (creating if needed) the gateway's database in `data_dir`."""
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        path = os.path.join(data_dir, DB_NAME)
        _private_files(path)
        conn = sqlite3.connect(path, isolation_level=None,
                               timeout=10.0, factory=Connection, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (fsync) before we acknowledge anything, even on power loss.
        conn.execute("PRAGMA synchronous=%s" % ("FULL" if synchronous == "full" else "NORMAL"))
        conn.execute("PRAGMA foreign_keys=ON")
    except (OSError, sqlite3.Error) as exc:
        raise StoreError("cannot open the gateway database in %s: %s" % (data_dir, exc)) from None
    try:
        migrations.migrate(conn, "the gateway database in %s" % data_dir)  # before any read
    except BaseException:
        conn.close()
        raise
    return conn


def _private_files(path):
    """The database and its WAL and shared-memory files readable by this user only: made
    0600 before SQLite opens it (SQLite gives -wal and -shm the database file's mode), and an
    older one made so."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for name in (path, path + "-wal", path + "-shm"):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(name, 0o600)


class Connection(sqlite3.Connection):
    """sqlite3's connection, whose open transaction can be committed in another thread."""

    def __init__(self, *args, **kwargs):
        sqlite3.Connection.__init__(self, *args, **kwargs)
        self._in_flight = False
        self._done = threading.Event()
        self._done.set()

    def commit_in(self, executor):
        """commit_or_rollback() in `executor` (one thread); returns its
        concurrent.futures.Future. Call from the thread that uses the connection; until the
        commit is done, its statements wait."""
        self._done.clear()
        self._in_flight = True
        return executor.submit(self._commit_and_release)

    def commit_or_rollback(self):
        """COMMIT the open transaction, if any; ROLLBACK it if that fails (and raise)."""
        self._wait()
        self._commit()

    def _commit_and_release(self):
        try:
            self._commit()
        finally:
            self._in_flight = False
            self._done.set()

    def _commit(self):
        try:
            if self.in_transaction:
                sqlite3.Connection.execute(self, "COMMIT")
        except sqlite3.Error:
            if self.in_transaction:
                sqlite3.Connection.execute(self, "ROLLBACK")
            raise

    def _wait(self):
        if self._in_flight:
            self._done.wait()

    def execute(self, *args):
        self._wait()
        return sqlite3.Connection.execute(self, *args)

    def executemany(self, *args):
        self._wait()
        return sqlite3.Connection.executemany(self, *args)

    def executescript(self, *args):
        self._wait()
        return sqlite3.Connection.executescript(self, *args)

    def cursor(self, *args):
        self._wait()
        return sqlite3.Connection.cursor(self, *args)

    def close(self):
        self._wait()
        sqlite3.Connection.close(self)


class Transaction:
    """`with Transaction(conn):` BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False
