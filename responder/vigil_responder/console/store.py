# The console's durable truth, one SQLite file (WAL): every webhook event once per idempotency
# key, the incidents as the latest event shows them, every responder step (done or refused),
# accounts and sessions. An event is committed before the webhook is answered 2xx.
import json
import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    idempotency_key TEXT PRIMARY KEY,
    incident_id INTEGER NOT NULL,
    event TEXT NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,          -- the gateway's incident id
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    device TEXT NOT NULL,
    first_seen_at REAL NOT NULL,     -- when the console had it: raise-to-console figure
    updated_at REAL NOT NULL,
    holder TEXT,                     -- the responder who has taken it
    resolved_at REAL,
    resolution TEXT,
    snapshot TEXT NOT NULL           -- the latest event's body
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    at REAL NOT NULL,
    responder TEXT NOT NULL,
    outcome TEXT NOT NULL,           -- done | refused
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_incident ON steps (incident_id, id);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class Store:
    def __init__(self, data_dir):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(Path(data_dir) / "console.sqlite3"),
                                    isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a 2xx promises the event is on disk
        self.conn.executescript(_SCHEMA)

    # --- webhook events -------------------------------------------------------------------

    def add_event(self, event, now=None):
        """Store one webhook body (a dict); False if its idempotency key was seen before."""
        now = time.time() if now is None else now
        incident = event["incident"]
        body = json.dumps(event, sort_keys=True)
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "INSERT INTO events (idempotency_key, incident_id, event, received_at, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (event["idempotency_key"], incident["id"], event["event"], now, body))
            except sqlite3.IntegrityError:
                return False
            self.conn.execute(
                "INSERT INTO incidents (id, kind, state, device, first_seen_at, updated_at,"
                " snapshot) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " kind = excluded.kind, state = excluded.state, updated_at = excluded.updated_at,"
                " snapshot = excluded.snapshot",
                (incident["id"], incident["kind"], incident["state"], event["device"]["id"],
                 now, now, body))
        return True

    def events(self, incident_id):
        rows = self.conn.execute("SELECT event, received_at, body FROM events WHERE "
                                 "incident_id = ? ORDER BY rowid", (incident_id,))
        return [dict(event=r["event"], received_at=r["received_at"], body=json.loads(r["body"]))
                for r in rows]

    # --- incidents ------------------------------------------------------------------------

    def incidents(self, open_only=True):
        sql = "SELECT * FROM incidents"
        if open_only:
            sql += " WHERE resolved_at IS NULL AND state != 'closed'"
        return [_incident(r) for r in self.conn.execute(sql)]

    def incident(self, incident_id):
        row = self.conn.execute("SELECT * FROM incidents WHERE id = ?",
                                (incident_id,)).fetchone()
        return None if row is None else _incident(row)

    def set_holder(self, incident_id, name):
        self.conn.execute("UPDATE incidents SET holder = ? WHERE id = ?", (name, incident_id))

    def set_resolved(self, incident_id, at, resolution):
        self.conn.execute("UPDATE incidents SET resolved_at = ?, resolution = ? WHERE id = ?",
                          (at, resolution, incident_id))

    # --- the responders' steps (the console's audit trail) ---------------------------------

    def add_step(self, incident_id, step, responder, outcome, detail="", at=None):
        at = time.time() if at is None else at
        self.conn.execute("INSERT INTO steps (incident_id, step, at, responder, outcome, detail)"
                          " VALUES (?, ?, ?, ?, ?, ?)",
                          (incident_id, step, at, responder, outcome, detail))
        return at

    def steps(self, incident_id):
        return [dict(r) for r in self.conn.execute(
            "SELECT step, at, responder, outcome, detail FROM steps WHERE incident_id = ? "
            "ORDER BY id", (incident_id,))]

    # --- accounts and sessions ------------------------------------------------------------

    def put_user(self, name, password_hash):
        self.conn.execute("INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)"
                          " ON CONFLICT (name) DO UPDATE SET password_hash = excluded."
                          "password_hash", (name, password_hash, time.time()))

    def user_hash(self, name):
        row = self.conn.execute("SELECT password_hash FROM users WHERE name = ?",
                                (name,)).fetchone()
        return None if row is None else row[0]

    def users(self):
        return [r[0] for r in self.conn.execute("SELECT name FROM users ORDER BY name")]

    def add_session(self, token_sha256, name, csrf, expires_at):
        self.conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                          (token_sha256, name, csrf, expires_at))

    def session(self, token_sha256, now):
        row = self.conn.execute("SELECT name, csrf FROM sessions WHERE token_sha256 = ? AND "
                                "expires_at > ?", (token_sha256, now)).fetchone()
        return None if row is None else (row[0], row[1])

    def drop_session(self, token_sha256):
        self.conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (token_sha256,))


def _incident(row):
    d = dict(row)
    d["snapshot"] = json.loads(d["snapshot"])
    return d
