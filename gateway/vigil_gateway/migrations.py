# The SQLite database's schema, and how a database an older gateway wrote is brought up to it.
# Every table and index of gateway.db is made here and nowhere else; the modules that use them
# (store, registry, outbox, downlinks, wearers, actions, forward_dc09) only read and write rows.
# PostgreSQL's schema is its own (store_pg.py and its neighbours).
#
# Rules:
#   the database records its schema version in its header (PRAGMA user_version, 0 in a new
#   file); VERSION is the version this code reads and writes: the number of STEPS;
#   STEPS is append-only: step N takes a database of version N-1 to version N. A step that has
#   shipped is never edited or removed (a database of any older release comes up through every
#   step after its version); a change to the schema is a new step at the end (ALTER TABLE, or a
#   table rebuilt by copying), and the fixture test (tests/gateway/test_migrations.py) shows a
#   database of the release before taken through it;
#   each step runs in one transaction (BEGIN IMMEDIATE) with the version it sets, so a database
#   is at one version or the next, never between: a step that fails is rolled back and the
#   gateway does not start (StoreError, one line); another process that got there first is
#   seen inside the transaction and the step is not run twice;
#   migrate() runs whenever the database is opened (db.open_database), before anything reads it;
#   a database of a higher version than VERSION was written by a newer gateway: it is refused,
#   untouched, rather than used by code that does not know its columns;
#   a step is SQL over what the database holds: it reads no config, clock or file, so it does
#   the same wherever and whenever it runs.
import sqlite3

from .errors import StoreError

# Step 1's tables: the schema of the first release that recorded a version.
_SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS devices (
    device_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    mqtt_password_hash TEXT,
    interval_s INTEGER,
    label TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    protocol INTEGER NOT NULL DEFAULT 1,
    counter_floor INTEGER
);
CREATE TABLE IF NOT EXISTS frames (
    device_id INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    tag BLOB NOT NULL,
    type TEXT NOT NULL,
    kind TEXT,
    ref INTEGER,
    payload BLOB NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    counter INTEGER,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_by_alarm ON incidents (device_id, counter)
    WHERE counter IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_incident ON audit (incident_id, id);
CREATE TABLE IF NOT EXISTS downlink_counters (
    device_id INTEGER PRIMARY KEY,
    last_counter INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS early_taps (
    device_id INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    ref INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, counter)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS early_taps_by_ref ON early_taps (device_id, ref);
CREATE TABLE IF NOT EXISTS incident_lateness (
    incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
    raised_at REAL NOT NULL,
    late_s REAL NOT NULL,
    basis TEXT NOT NULL,
    held_up_to_s REAL
);
CREATE TABLE IF NOT EXISTS contact (
    device_id INTEGER PRIMARY KEY,
    last_seen REAL NOT NULL,
    interval_s INTEGER,
    lost_incident INTEGER,
    history_floor INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS downlinks (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    ref INTEGER NOT NULL,
    kind TEXT NOT NULL,
    code INTEGER NOT NULL,
    frame BLOB NOT NULL,
    created_at REAL NOT NULL,
    mqtt_sent_at REAL,
    ble_sent_at REAL,
    confirmed_at REAL,
    offered_at REAL,
    offers INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, ref, kind, code)
);
CREATE INDEX IF NOT EXISTS downlinks_unconfirmed ON downlinks (device_id)
    WHERE confirmed_at IS NULL;
CREATE TABLE IF NOT EXISTS wearers (
    device_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    contacts TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '',
    zone INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL,
    dc09_account TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    incident_id INTEGER NOT NULL,
    device_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    event TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    alerted_at REAL,
    UNIQUE (destination, key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (destination, incident_id, id)
    WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS incident_locations (
    incident_id INTEGER PRIMARY KEY,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    accuracy_m INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_requests (
    backend TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at REAL NOT NULL,
    request_sha256 TEXT,
    status INTEGER,
    reply TEXT,
    PRIMARY KEY (backend, request_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dc09_state (
    destination TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    clock_offset REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dc09_sequences (
    destination TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    PRIMARY KEY (destination, outbox_id)
);
"""

# Columns releases before version 1 added to their tables when they opened them; a database of
# such a release may lack any of them (its table is older than the column).
_ADDED_BEFORE_1 = (
    ("devices", "protocol", "INTEGER NOT NULL DEFAULT 1"),  # before protocol v2: all v1
    ("devices", "counter_floor", "INTEGER"),                 # unknown: first counter - 64
    ("downlinks", "confirmed_at", "REAL"),                   # before receipts
    ("downlinks", "offered_at", "REAL"),
    ("downlinks", "offers", "INTEGER NOT NULL DEFAULT 0"),
    ("wearers", "dc09_account", "TEXT NOT NULL DEFAULT ''"),
    ("api_requests", "request_sha256", "TEXT"),  # a request stored then stays used, whatever
    ("api_requests", "status", "INTEGER"),       # the body of a retry
    ("api_requests", "reply", "TEXT"),
)


def _columns(conn, table):
    return [row[1] for row in conn.execute("PRAGMA table_info(%s)" % table)]


def _statements(script):
    return [s.strip() for s in script.split(";") if s.strip()]


def _step_1(conn):
    """A new file, or the data of any release before versions were recorded (each of its
    tables as old as that release): the columns its tables lack, then the tables it lacks."""
    for table, column, declaration in _ADDED_BEFORE_1:
        have = _columns(conn, table)
        if have and column not in have:
            conn.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, declaration))
    for statement in _statements(_SCHEMA_1):
        conn.execute(statement)


# Step 2: the beacon table (beacons.py): the BLE beacons and Wi-Fi access points a site has
# placed, by the short id wearables send for them (protocol/SPEC.md section 4). kind is the
# extension it is heard in ('ble': 0x05, 'wifi': 0x06); identifier the full one, canonical.
_SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS beacons (
    kind TEXT NOT NULL,
    short_id BLOB NOT NULL,
    identifier TEXT NOT NULL UNIQUE,
    place TEXT NOT NULL,
    floor TEXT NOT NULL DEFAULT '',
    room TEXT NOT NULL DEFAULT '',
    lat REAL,
    lon REAL,
    added_at REAL NOT NULL,
    PRIMARY KEY (kind, short_id)
) WITHOUT ROWID;
"""


def _step_2(conn):
    for statement in _statements(_SCHEMA_2):
        conn.execute(statement)


# Step 3: an incident's location as location.py's record (JSON: source, place, floor, room,
# lat, lon, accuracy_m, taken_at, age_known, fix), not coordinates alone: a place named by a
# beacon may have none. Rows of step 1's table (a GNSS fix, its age not known) are copied
# across as such records.
_SCHEMA_3 = """
CREATE TABLE incident_locations_3 (
    incident_id INTEGER PRIMARY KEY,
    location TEXT NOT NULL
);
INSERT INTO incident_locations_3 (incident_id, location)
    SELECT incident_id, json_object(
        'source', 'gnss', 'place', NULL, 'floor', NULL, 'room', NULL, 'lat', lat, 'lon', lon,
        'accuracy_m', accuracy_m, 'taken_at', at, 'age_known', json('false'),
        'fix', json_object('lat', lat, 'lon', lon, 'accuracy_m', accuracy_m, 'taken_at', at,
                           'age_known', json('false')))
    FROM incident_locations;
DROP TABLE incident_locations;
ALTER TABLE incident_locations_3 RENAME TO incident_locations;
"""


def _step_3(conn):
    for statement in _statements(_SCHEMA_3):
        conn.execute(statement)


# Step 4: the counters a stored downlink was signed with before it was signed again
# (downlinks.py: one offered again from below the wearable's window, or restored from a
# backup), so a receipt naming one of them, still on its way, confirms it too. Each counter
# was a downlink of that device once, and only one.
_SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS downlink_old_counters (
    device_id INTEGER NOT NULL,
    counter INTEGER NOT NULL,
    downlink_id INTEGER NOT NULL,
    PRIMARY KEY (device_id, counter)
) WITHOUT ROWID;
"""


def _step_4(conn):
    for statement in _statements(_SCHEMA_4):
        conn.execute(statement)


# (what the step does, function(conn)); step N is STEPS[N - 1]. Append only (see the rules).
STEPS = (
    ("the schema of the first versioned release; older databases get the columns they lack",
     _step_1),
    ("the beacon table (named places of BLE beacons and Wi-Fi access points)", _step_2),
    ("an incident's location as a record: a named place, its source and age, the fix", _step_3),
    ("the counters a stored downlink had before it was signed again", _step_4),
)
VERSION = len(STEPS)


def schema_version(conn):
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, where="the database", steps=STEPS):
    """Bring the database on `conn` (autocommit, no transaction open) up to len(steps);
    StoreError (one line naming `where`) if it is newer than that or a step fails. Returns the
    version it was at."""
    try:
        found = schema_version(conn)
        if found > len(steps):
            raise StoreError(newer(where, found, len(steps)))
        for number in range(found + 1, len(steps) + 1):
            _run_step(conn, number, steps[number - 1], where)
        if schema_version(conn) > len(steps):  # a newer gateway migrated it meanwhile
            raise StoreError(newer(where, schema_version(conn), len(steps)))
    except sqlite3.Error as exc:
        raise StoreError("cannot read the schema version of %s: %s" % (where, exc)) from None
    return found


def _run_step(conn, number, step, where):
    description, function = step
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = schema_version(conn)  # under the write lock: another process may be done
            if now >= number:
                conn.execute("ROLLBACK")
                return
            function(conn)
            conn.execute("PRAGMA user_version = %d" % number)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError("cannot bring %s to schema version %d (%s): %s; it is left at version "
                         "%d" % (where, number, description, exc, number - 1)) from None


def newer(where, found, known):
    return ("%s has schema version %d, written by a newer Vigil gateway; this one knows up to "
            "version %d: run the newer gateway, or restore a backup this one made"
            % (where, found, known))
