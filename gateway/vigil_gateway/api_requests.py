# What the responder actions API (actions.py) keeps in the store, on SQLite: the requests it
# took (api_requests), so a backend's retry gets the original answer. api_requests_pg.py is the
# same interface on PostgreSQL. actions.py holds no SQL.
#
# The interface (each method inside the caller's transaction unless it says otherwise):
#   reading()                  a context for reads outside an action (GET): nothing is held
#                              after it
#   incident(store, id)        the incident, read after its device is serialised with every
#                              other transaction touching that device (SQLite: one writer, the
#                              transaction is the turn; PostgreSQL: the device's row locked)
#   stored(backend, rid)       (request_sha256, status, reply JSON) of the request the backend
#                              made under that request_id, or None: committed rows only
#   take(backend, rid, at)     claim the request_id for this transaction: True when it is new;
#                              False when it is taken already (a concurrent claim waits for the
#                              other transaction's end, then reads False if it committed)
#   keep(backend, rid, sha256, status, reply)
#                              the answer a retry of this request gets
import contextlib

_STORED = ("SELECT request_sha256, status, reply FROM api_requests WHERE backend = ? AND "
           "request_id = ?")


class SqliteApiRequests:
    def __init__(self, conn):
        self.conn = conn

    def reading(self):
        return contextlib.nullcontext()

    def incident(self, store, incident_id):
        return store.incident(incident_id)

    def stored(self, backend, request_id):
        row = self.conn.execute(_STORED, (backend, request_id)).fetchone()
        return tuple(row) if row is not None else None

    def take(self, backend, request_id, at):
        return self.conn.execute(
            "INSERT OR IGNORE INTO api_requests (backend, request_id, at) VALUES (?, ?, ?)",
            (backend, request_id, at)).rowcount == 1

    def keep(self, backend, request_id, sha256, status, reply):
        self.conn.execute("UPDATE api_requests SET request_sha256 = ?, status = ?, reply = ? "
                          "WHERE backend = ? AND request_id = ?",
                          (sha256, status, reply, backend, request_id))
