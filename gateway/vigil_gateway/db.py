# One SQLite database per gateway, in WAL mode so the CLI can read and edit the registry while
# the service runs. The registry and the store each own their tables; both share this file.
import os
import sqlite3

from .errors import StoreError

DB_NAME = "gateway.db"


def open_database(data_dir, synchronous="full"):
    """Open (creating if needed) the gateway's database in `data_dir`."""
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        conn = sqlite3.connect(os.path.join(data_dir, DB_NAME), isolation_level=None,
                               timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (fsync) before we acknowledge anything, even on power loss.
        conn.execute("PRAGMA synchronous=%s" % ("FULL" if synchronous == "full" else "NORMAL"))
        conn.execute("PRAGMA foreign_keys=ON")
    except (OSError, sqlite3.Error) as exc:
        raise StoreError("cannot open the gateway database in %s: %s" % (data_dir, exc)) from None
    return conn


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
