# What the responder actions API keeps, on PostgreSQL (store_pg.py's family; api_requests.py
# is SQLite's and states the interface): the requests it took, so a backend's retry gets the
# original answer from whichever worker the retry reaches.
#
# Rules:
#   a request_id is taken by INSERT ... ON CONFLICT DO NOTHING in the action's transaction: two
#   workers taking the same one at once take turns on the unique key, the second waits for the
#   first's end and finds it taken (then reads its committed answer: READ COMMITTED reads
#   what committed before each statement), or takes it itself when the first rolled back;
#   an action reads its incident only after locking the incident's device row (store_pg's
#   lock), as every transaction touching a device does: two workers' actions on one incident,
#   or an action and an alarm's frames, take turns;
#   a read outside an action ends its transaction: a worker's connection is never left idle in
#   one.
import psycopg

from .errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_requests (
    backend text NOT NULL,
    request_id text NOT NULL,
    at double precision NOT NULL,
    request_sha256 text,
    status integer,
    reply text,
    PRIMARY KEY (backend, request_id)
);
"""


class PostgresApiRequests:
    def __init__(self, store):
        self.store = store  # a PostgresStore: the API's own connection

    def reading(self):
        return self.store.transaction()

    def incident(self, store, incident_id):
        row = store._conn.execute("SELECT device_id FROM incidents WHERE id = %s",
                                  (incident_id,)).fetchone()
        if row is None:
            return None
        store.lock([row[0]])  # (a device's incidents never change device)
        return store.incident(incident_id)

    def stored(self, backend, request_id):
        try:  # its own transaction outside an action, a savepoint inside one
            with self.store.conn.transaction():
                row = self.store._conn.execute(
                    "SELECT request_sha256, status, reply FROM api_requests WHERE backend = %s "
                    "AND request_id = %s", (backend, request_id)).fetchone()
        except psycopg.Error as exc:
            raise StoreError("cannot read the API's requests: %s" % _first_line(exc)) from None
        return tuple(row) if row is not None else None

    def take(self, backend, request_id, at):
        return self.store._conn.execute(
            "INSERT INTO api_requests (backend, request_id, at) VALUES (%s, %s, %s) "
            "ON CONFLICT (backend, request_id) DO NOTHING", (backend, request_id, at)
        ).rowcount == 1

    def keep(self, backend, request_id, sha256, status, reply):
        self.store._conn.execute(
            "UPDATE api_requests SET request_sha256 = %s, status = %s, reply = %s "
            "WHERE backend = %s AND request_id = %s",
            (sha256, status, reply, backend, request_id))


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
