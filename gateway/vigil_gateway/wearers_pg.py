# Wearer profiles on PostgreSQL (store_pg.py's family; wearers.py is SQLite's and states the
# rules of a profile): the same fields, checked by the same code, shared by every worker.
#
# Rules:
#   a profile is read where it is used, never cached by a worker: an operator's change is in
#   the next incident event queued (its outbox snapshot, read in the incident change's
#   transaction) and the next DC-09 message (the wearer's zone and account), whichever worker
#   makes them;
#   each change is one transaction of its own; nothing here locks a device (a profile is not
#   the device's state, and may be set before the device is registered).
import psycopg

from .errors import StoreError
from .wearers import checked, from_row

SCHEMA = """
CREATE TABLE IF NOT EXISTS wearers (
    device_id bigint PRIMARY KEY,
    name text NOT NULL,
    contacts text NOT NULL DEFAULT '[]',
    notes text NOT NULL DEFAULT '',
    zone integer NOT NULL DEFAULT 1,
    updated_at double precision NOT NULL,
    dc09_account text NOT NULL DEFAULT ''
);
"""

_COLUMNS = "device_id, name, contacts, notes, zone, updated_at, dc09_account"


def get(conn, device_id):
    """Inside the caller's transaction: the device's profile, or None."""
    row = conn.execute("SELECT %s FROM wearers WHERE device_id = %%s" % _COLUMNS,
                       (device_id,)).fetchone()
    return None if row is None else from_row(row)


class PostgresWearers:
    """wearers.Wearers' methods on a PostgresStore's connection, each its own transaction."""

    def __init__(self, store):
        self.store = store

    def set(self, device_id, name, contacts=(), notes="", zone=1, at=None, dc09_account=""):
        row = checked(device_id, name, contacts, notes, zone, at, dc09_account)
        self._run(lambda conn: conn.execute(
            "INSERT INTO wearers (%s) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, %%s) ON CONFLICT "
            "(device_id) DO UPDATE SET name = excluded.name, contacts = excluded.contacts, "
            "notes = excluded.notes, zone = excluded.zone, updated_at = excluded.updated_at, "
            "dc09_account = excluded.dc09_account" % _COLUMNS, row), "write")

    def get(self, device_id):
        return self._run(lambda conn: get(conn, device_id), "read")

    def all(self):
        return self._run(lambda conn: [from_row(r) for r in conn.execute(
            "SELECT %s FROM wearers ORDER BY device_id" % _COLUMNS).fetchall()], "read")

    def remove(self, device_id):
        return self._run(lambda conn: conn.execute(
            "DELETE FROM wearers WHERE device_id = %s", (device_id,)).rowcount > 0, "write")

    def _run(self, work, what):
        try:
            with self.store.conn.transaction():
                return work(self.store._conn)
        except psycopg.Error as exc:
            raise StoreError("cannot %s wearer profiles: %s" % (what, _first_line(exc))
                             ) from None


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
