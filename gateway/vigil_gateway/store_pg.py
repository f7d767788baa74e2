# The PostgreSQL store: the state of every device shared by many gateway workers
# (gateway/README.md, "Many workers on one PostgreSQL"): ingest (the pipeline on device_state_pg.py),
# incidents, downlink counters, supervision, outbox claims, the actions API's requests, wearer
# profiles, the beacon table (beacons_pg.py) and the registry and CLI's reads are here.
#
# The storage interface, at the level of the gateway's operations. Each operation is one
# transaction; acks, PUBACKs and webhooks leave only after it commits (persist before ack).
#   ingest a batch     verified uplinks of many devices -> for each its verdict (new,
#                      retransmission, counter_reuse, stale_counter, unknown_device,
#                      revoked_device), a RECEIVED ack counter for each one to acknowledge, the
#                      incident a new alarm raised, the device's contact and deadline
#   replay verdicts    from the unique key (device, direction, counter) and the device's history
#                      floor, inside that transaction: no replay window is cached by a worker
#   downlink counters  allocated from the device's row under its lock (RECEIVED acks in ingest;
#                      DELIVERED acks and responder actions in their own transactions, stored
#                      with their counter: downlinks_pg.py)
#   outbox claims      FOR UPDATE SKIP LOCKED with a lease from the database clock; delivered is
#                      marked only while the lease is held; one incident's events in order
#                      (outbox_pg.py)
#   DC-09              one sender per receiving centre (an advisory lock), its sequence numbers
#                      in a locked row (dc09_pg.py)
#   supervision        a deadline per device, written by ingest from the database clock; a
#                      worker claims expired devices (SKIP LOCKED) and raises LOST_CONTACT once
#   registry           devices, their state, key version, protocol, counter floor
#   incidents          raise, apply an event (incidents.RULES), audit, under the device's lock
#   actions API        the requests a responder backend made and their answers, an action's
#                      incident read under its device's lock (api_requests_pg.py)
#   wearer profiles    read where they are used, as last committed (wearers_pg.py)
#   beacon table       the places a frame's beacons name, read in the batch (beacons_pg.py)
# SQLite (store.py, registry.py, downlinks.py, outbox.py) is the other backend, unchanged: one
# process owns its database, so there the pipeline's device state (device_state.py) keeps
# windows, contacts and downlink counters in memory and writes them once per batch. Here
# (device_state_pg.py) nothing per device is kept between transactions: another worker may
# have changed it. The pipeline and incidents.py are the same on both: this class answers
# store.py's incident methods (create_alarm_incident, add_audit, early taps, lateness ...).
#
# Rules of this backend:
#   every transaction that touches devices first locks their rows in `devices`
#   (SELECT ... ORDER BY device_id FOR UPDATE): always in device-id order, so two batches
#   naming the same devices cannot deadlock; what it reads of a device after that is current;
#   a frame is stored once, its key (device, direction, counter) unique: under the device's
#     lock no other transaction stores its frames, so a plain INSERT (a conflict would be a
#     bug, and fails the batch);
#   a frame already stored is a retransmission when its tag is the same, else counter_reuse;
#   a frame not stored at or below the device's history floor is stale_counter; any other is
#   new (a late one included: SPEC section 7, "Gateways keep history");
#   the downlink counter is read and written back under the row lock, so no two workers sign
#   two downlinks of one device with one counter;
#   one incident per alarm (device, counter): the unique index, and only the transaction that
#   stored the frame raises it;
#   times the workers compare (deadlines, leases) come from the database clock; the times a
#   frame or incident records come from the worker, as in SQLite;
#   READ COMMITTED (the default): a row locked FOR UPDATE is read as last committed, so a
#   worker that waited for a device sees what the worker before it wrote;
#   a lost connection (a restart, a failover) fails the operation it was in with StoreError;
#   the next operation connects again, never one midway: a new connection holds none of the
#   old transaction, and committing it would commit nothing;
#   retention (retention.py on SQLite) must raise history_floor past what it deletes, as there;
#   no SQL outside this module (and store.py's family for SQLite).
import json
import re
from collections import namedtuple

import psycopg

from . import (api_requests_pg, beacons_pg, dc09_pg, downlinks_pg, migrations, outbox_pg,
               wearers_pg)
from .errors import StoreError
from .lateness import Lateness
from .outbox import Item
from .registry import ACTIVE, REVOKED, Device
from .store import AuditEntry, Contact, EarlyTap, Incident

UP = 0  # frames.direction

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id bigint PRIMARY KEY CHECK (device_id BETWEEN 1 AND 4294967295),
    state text NOT NULL,
    key_version integer NOT NULL DEFAULT 1,
    mqtt_password_hash text,
    interval_s integer,
    label text NOT NULL DEFAULT '',
    added_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    protocol smallint NOT NULL DEFAULT 2,
    counter_floor bigint,
    -- the device's state, written only under this row's lock
    downlink_counter bigint NOT NULL DEFAULT 0,
    history_floor bigint,
    last_seen double precision,
    checkin_interval_s integer,
    lost_incident bigint,
    deadline timestamptz
);
CREATE INDEX IF NOT EXISTS devices_by_deadline ON devices (deadline)
    WHERE lost_incident IS NULL AND deadline IS NOT NULL;
CREATE TABLE IF NOT EXISTS frames (
    device_id bigint NOT NULL REFERENCES devices (device_id),
    direction smallint NOT NULL,
    counter bigint NOT NULL,
    tag bytea NOT NULL,
    type text NOT NULL,
    kind text,
    ref bigint,
    payload bytea NOT NULL,
    received_at double precision NOT NULL,
    PRIMARY KEY (device_id, direction, counter)
);
CREATE TABLE IF NOT EXISTS incidents (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices (device_id),
    counter bigint,
    kind text NOT NULL,
    state text NOT NULL,
    opened_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_by_alarm ON incidents (device_id, counter)
    WHERE counter IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id),
    at double precision NOT NULL,
    event text NOT NULL,
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_incident ON audit (incident_id, id);
CREATE TABLE IF NOT EXISTS early_taps (
    device_id bigint NOT NULL REFERENCES devices (device_id),
    counter bigint NOT NULL,
    ref bigint NOT NULL,
    received_at double precision NOT NULL,
    PRIMARY KEY (device_id, counter)
);
CREATE INDEX IF NOT EXISTS early_taps_by_ref ON early_taps (device_id, ref);
CREATE TABLE IF NOT EXISTS incident_lateness (
    incident_id bigint PRIMARY KEY REFERENCES incidents (id),
    raised_at double precision NOT NULL,
    late_s double precision NOT NULL,
    basis text NOT NULL,
    held_up_to_s double precision
);
"""

_DEVICE = ("device_id, state, key_version, mqtt_password_hash, interval_s, label, added_at, "
           "protocol, counter_floor")  # registry.Device
_LOCK = ("SELECT %s, downlink_counter, history_floor, last_seen, checkin_interval_s, "
         "lost_incident FROM devices WHERE device_id = ANY(%%s) ORDER BY device_id FOR UPDATE"
         % _DEVICE)
# A device's row as its lock read it: the registry's columns, then the device's state.
Locked = namedtuple("Locked", Device._fields + ("downlink_counter", "history_floor",
                                                "last_seen", "checkin_interval_s",
                                                "lost_incident"))
_INCIDENT = "id, device_id, counter, kind, state, opened_at, updated_at"
LOST_CONTACT = "LOST_CONTACT"  # incidents.LOST_CONTACT


class _AnyDevice:
    """What early_tap_devices() answers here: every device may have a DOUBLE_TAP another
    worker kept, so incidents.py never rules one out from a cache."""

    def __contains__(self, device_id):
        return True

    def __bool__(self):
        return True

    def add(self, device_id):
        pass


_ANY_DEVICE = _AnyDevice()


def _table_names(*scripts):
    return tuple(name for script in scripts
                 for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", script))


def create_schema(conn):
    """The tables, in the connection's database (idempotent; one connection at a time);
    commits."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('vigil-schema'))")
        conn.execute(SCHEMA)
        conn.execute(outbox_pg.SCHEMA)
        conn.execute(dc09_pg.SCHEMA)
        conn.execute(downlinks_pg.SCHEMA)
        conn.execute(api_requests_pg.SCHEMA)
        conn.execute(wearers_pg.SCHEMA)
        conn.execute(beacons_pg.SCHEMA)
        if conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


_TABLES = _table_names(SCHEMA, outbox_pg.SCHEMA, dc09_pg.SCHEMA, downlinks_pg.SCHEMA,
                      api_requests_pg.SCHEMA, wearers_pg.SCHEMA, beacons_pg.SCHEMA)


class PostgresStore:
    """One worker's connection. Not shared between threads: each worker (or thread) opens its
    own. A connection lost (PostgreSQL restarted, a failover) fails the operation it was in
    with StoreError - its transaction is gone, the caller retries it - and the next operation
    connects again."""

    def __init__(self, url, default_interval_s=300, grace_s=60, destinations=()):
        self.default_interval_s = default_interval_s
        self.grace_s = grace_s
        self.destinations = tuple(destinations)  # forwarding: one outbox row per destination
        self._url = url
        self._closed = False
        self._conn = self._connect()
        self.outbox = outbox_pg.PostgresOutbox(self)
        # what incidents.py queues events through (the SQLite Outbox's part in Incidents)
        self.events = outbox_pg.IncidentEvents(self.outbox, self.destinations)

    def _connect(self):
        try:
            return psycopg.connect(self._url)
        except psycopg.Error as exc:
            # The driver's message names host and database, never the password.
            raise StoreError("cannot connect to PostgreSQL: %s" % _first_line(exc)) from None

    def _live(self):
        """The connection, a new one when the last was lost. At the start of an operation
        only: inside one, a new connection would hold none of its transaction."""
        if (self._conn.closed or self._conn.broken) and not self._closed:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    conn = property(_live)

    def close(self):
        self._closed = True
        self._conn.close()

    def ensure_schema(self):
        """The tables, made if any is missing (a worker or a command on a new database, or
        one of a release with fewer tables), one connection at a time (an advisory lock: two
        workers starting at once); StoreError for a database a newer release made. Nothing is run when they are all there: CREATE ... IF NOT
        EXISTS still locks an existing table, and would wait for (or deadlock with) the
        transactions of workers already running."""
        try:
            missing = [name for name, found in self.conn.execute(
                "SELECT name, to_regclass(name) IS NOT NULL FROM unnest(%s::text[]) AS name",
                (list(_TABLES),)).fetchall() if not found]
            self._conn.rollback()
            if missing:
                create_schema(self._conn)
            found = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            self._conn.rollback()
        except psycopg.Error as exc:
            raise StoreError("cannot make the tables: %s" % _first_line(exc)) from None
        if found is not None and found > SCHEMA_VERSION:  # (its tables may mean otherwise)
            raise StoreError(migrations.newer("the database", found, SCHEMA_VERSION))

    # -- registry (the keys are registry_pg.py's) --
    def add_device(self, device_id, at, counter_floor=None, interval_s=None, protocol=2,
                   mqtt_password_hash=None, label="", downlink_counter=0):
        """Register a device (one transaction); False if it is registered already.
        `downlink_counter`: the last one used (a device moving in from another home)."""
        with self.conn.transaction():
            return self._conn.execute(
                "INSERT INTO devices (device_id, state, added_at, updated_at, counter_floor, "
                "interval_s, protocol, mqtt_password_hash, label, downlink_counter) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device_id) DO NOTHING",
                (device_id, ACTIVE, at, at, counter_floor, interval_s, protocol,
                 mqtt_password_hash, label, downlink_counter)).rowcount == 1

    def downlink_counter(self, device_id):
        """The last downlink counter used for the device (0: none yet), as last committed."""
        row = self.conn.execute("SELECT downlink_counter FROM devices WHERE device_id = %s",
                                (device_id,)).fetchone()
        self._conn.rollback()
        return row[0] if row else 0

    def devices(self):
        """Every registered device's registry.Device as last committed, by id."""
        rows = self.conn.execute("SELECT %s FROM devices ORDER BY device_id" % _DEVICE
                                 ).fetchall()
        self._conn.rollback()
        return [Device(*row) for row in rows]

    def contacts(self):
        """store.Contact of every device, as last committed: (device_id, last_seen,
        interval_s, lost_incident, history_floor)."""
        rows = self.conn.execute("SELECT device_id, last_seen, checkin_interval_s, "
                                 "lost_incident, history_floor FROM devices ORDER BY device_id"
                                 ).fetchall()
        self._conn.rollback()
        return [Contact(*row) for row in rows]

    def set_key_version(self, device_id, version, at, mqtt_password_hash=None):
        """Under the device's row lock: its key version (and broker password hash) changed;
        the next batch of every worker signs and verifies with that key."""
        with self.conn.transaction():
            self.lock([device_id])
            self._conn.execute(
                "UPDATE devices SET key_version = %s, updated_at = %s, mqtt_password_hash = "
                "coalesce(%s, mqtt_password_hash) WHERE device_id = %s",
                (version, at, mqtt_password_hash, device_id))

    def device(self, device_id):
        """The device's registry.Device as last committed (no lock), or None."""
        row = self.conn.execute("SELECT %s FROM devices WHERE device_id = %%s" % _DEVICE,
                                (device_id,)).fetchone()
        self._conn.rollback()
        return Device(*row) if row else None

    def raise_protocol(self, device_id, version):
        """Inside the transaction holding the device's row: its downlinks are sealed in
        `version` from now on, if that is higher."""
        self._conn.execute("UPDATE devices SET protocol = %s, updated_at = extract(epoch FROM "
                           "clock_timestamp()) WHERE device_id = %s AND protocol < %s",
                           (version, device_id, version))

    def revoke(self, device_id, at):
        with self.conn.transaction():
            self.lock([device_id])
            self._conn.execute("UPDATE devices SET state = %s, updated_at = %s "
                              "WHERE device_id = %s", (REVOKED, at, device_id))

    # -- the transaction an operation left open (the pipeline's batches) --
    def commit(self):
        # (the connection the operation used, never a new one: that would commit nothing)
        try:
            self._conn.commit()
        except psycopg.Error as exc:
            self.rollback()
            raise StoreError("cannot commit: %s" % _first_line(exc)) from None

    def rollback(self):
        try:
            self._conn.rollback()
        except psycopg.Error:
            pass  # a broken connection has nothing open

    # -- downlink counters outside ingest (DELIVERED acks, responder actions) --
    def transaction(self):
        """`with store.transaction():` one transaction (forwarding.py's), committed at the end,
        rolled back on an exception; StoreError when the commit fails."""
        return _Transaction(self)

    def locked(self, device_ids):
        """`with store.locked(ids):` a transaction holding those devices' rows (in id order);
        commits at the end, rolls back on an exception."""
        return _LockedDevices(self, sorted(set(device_ids)))

    def lock(self, device_ids):
        """Inside a transaction: lock the devices' rows, always in device-id order (so two
        transactions naming the same devices cannot deadlock); {device_id: Locked} of those
        that exist, as last committed."""
        rows = self._conn.execute(_LOCK, (sorted(device_ids),)).fetchall()
        return {row[0]: Locked(*row) for row in rows}

    def take_downlink_counter(self, device_id):
        """Inside locked(): the device's next downlink counter, written at once."""
        row = self._conn.execute("UPDATE devices SET downlink_counter = downlink_counter + 1 "
                                "WHERE device_id = %s RETURNING downlink_counter",
                                (device_id,)).fetchone()
        if row is None:
            raise StoreError("no device %08x in the store" % device_id)
        return row[0]

    # -- supervision --
    def claim_overdue(self, now, limit=100):
        """Raise LOST_CONTACT for up to `limit` active devices past their deadline (database
        clock) with none open, and commit; returns [(device_id, incident_id)]. Devices another
        transaction holds (a worker claiming them, or ingesting their frames) are skipped."""
        try:
            with self.conn.transaction():
                due = self._conn.execute(
                    "SELECT device_id, last_seen, extract(epoch FROM deadline)::float8 FROM "
                    "devices WHERE state = %s AND lost_incident IS NULL AND deadline < "
                    "clock_timestamp() ORDER BY device_id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (ACTIVE, limit)).fetchall()
                raised = []
                for device_id, last_seen, deadline in due:
                    incident_id = self._conn.execute(
                        "INSERT INTO incidents (device_id, counter, kind, state, opened_at, "
                        "updated_at) VALUES (%s, NULL, %s, 'open', %s, %s) RETURNING id",
                        (device_id, LOST_CONTACT, now, now)).fetchone()[0]
                    self._conn.execute("INSERT INTO audit (incident_id, at, event, detail) "
                                      "VALUES (%s, %s, 'raised', %s)", (
                                          incident_id, now, "raised; silent since %.0f "
                                          "(deadline %.0f)" % (last_seen or 0, deadline)))
                    self._conn.execute("UPDATE devices SET lost_incident = %s WHERE "
                                      "device_id = %s", (incident_id, device_id))
                    self._enqueue(incident_id, "raised", now)
                    raised.append((device_id, incident_id))
            return raised
        except psycopg.Error as exc:
            raise StoreError("cannot claim overdue devices: %s" % _first_line(exc)) from None

    def _enqueue(self, incident_id, event, now):
        """The event for every destination, in the transaction that made it."""
        self.events.enqueue(self, self.incident(incident_id), event, now)

    # -- incidents: incidents.py's store interface (store.py's methods), inside the caller's
    #    transaction, which holds the device's row --
    def create_incident(self, device_id, counter, kind, state, at):
        row = self._conn.execute(
            "INSERT INTO incidents (device_id, counter, kind, state, opened_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (device_id, counter, kind, state, at, at)).fetchone()
        return Incident(row[0], device_id, counter, kind, state, at, at)

    def create_alarm_incident(self, device_id, counter, kind, state, at):
        """create_incident() for an alarm, or None when that alarm has an incident already
        (the unique index: one incident per alarm)."""
        row = self._conn.execute(
            "INSERT INTO incidents (device_id, counter, kind, state, opened_at, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, counter) "
            "WHERE counter IS NOT NULL DO NOTHING RETURNING id",
            (device_id, counter, kind, state, at, at)).fetchone()
        if row is None:
            return None
        return Incident(row[0], device_id, counter, kind, state, at, at)

    def incident(self, incident_id):
        row = self._conn.execute("SELECT %s FROM incidents WHERE id = %%s" % _INCIDENT,
                                 (incident_id,)).fetchone()
        return Incident(*row) if row else None

    def incidents(self, device_id, states):
        """The device's incidents in `states`, oldest first."""
        return [Incident(*row) for row in self._conn.execute(
            "SELECT %s FROM incidents WHERE device_id = %%s AND state = ANY(%%s) ORDER BY id"
            % _INCIDENT, (device_id, list(states))).fetchall()]

    def incident_for_alarm(self, device_id, counter):
        row = self._conn.execute("SELECT %s FROM incidents WHERE device_id = %%s AND "
                                 "counter = %%s" % _INCIDENT, (device_id, counter)).fetchone()
        return Incident(*row) if row else None

    def set_incident_state(self, incident_id, state, at):
        self._conn.execute("UPDATE incidents SET state = %s, updated_at = %s WHERE id = %s",
                           (state, at, incident_id))

    def add_audit(self, incident_id, at, event, detail=""):
        self._conn.execute("INSERT INTO audit (incident_id, at, event, detail) "
                           "VALUES (%s, %s, %s, %s)", (incident_id, at, event, detail))

    def audit(self, incident_id):
        return [AuditEntry(*row) for row in self._conn.execute(
            "SELECT incident_id, at, event, detail FROM audit WHERE incident_id = %s "
            "ORDER BY id", (incident_id,)).fetchall()]

    def set_lateness(self, incident_id, lateness):
        self._conn.execute(
            "INSERT INTO incident_lateness VALUES (%s, %s, %s, %s, %s) ON CONFLICT "
            "(incident_id) DO UPDATE SET raised_at = excluded.raised_at, late_s = "
            "excluded.late_s, basis = excluded.basis, held_up_to_s = excluded.held_up_to_s",
            (incident_id,) + tuple(lateness))

    def lateness(self, incident_id):
        row = self._conn.execute("SELECT raised_at, late_s, basis, held_up_to_s FROM "
                                 "incident_lateness WHERE incident_id = %s",
                                 (incident_id,)).fetchone()
        return Lateness(*row) if row else None

    def add_early_tap(self, device_id, counter, ref, at):
        """A DOUBLE_TAP that came before the alarm it answers, kept for it."""
        self._conn.execute("INSERT INTO early_taps (device_id, counter, ref, received_at) "
                           "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                           (device_id, counter, ref, at))

    def take_early_taps(self, device_id, ref):
        """The early taps naming alarm `ref` of the device, oldest first, removed."""
        rows = self._conn.execute("DELETE FROM early_taps WHERE device_id = %s AND ref = %s "
                                  "RETURNING device_id, counter, ref, received_at",
                                  (device_id, ref)).fetchall()
        return sorted((EarlyTap(*row) for row in rows), key=lambda tap: tap.counter)

    def early_taps_due(self, received_before):
        """(device_id, ref) of every alarm named by an early tap received before the time."""
        return self._conn.execute("SELECT DISTINCT device_id, ref FROM early_taps WHERE "
                                  "received_at <= %s ORDER BY device_id, ref",
                                  (received_before,)).fetchall()

    def early_tap_devices(self):
        return _ANY_DEVICE

    def lock_early_tap_devices(self, received_before):
        """Inside a transaction, before incidents.promote_early_taps(): lock (in id order)
        the devices with a tap kept since before the time, so the promotion and an alarm of
        theirs arriving at another worker take turns."""
        devices = [r[0] for r in self._conn.execute(
            "SELECT DISTINCT device_id FROM early_taps WHERE received_at <= %s",
            (received_before,)).fetchall()]
        return self.lock(devices) if devices else {}

    # -- retention (retention.py, inside its transaction) --
    def prune_frames(self, cutoff, keep):
        """Delete uplinks received before `cutoff`, except each device's `keep` highest
        counters, and raise each device's history floor past what went (under its row lock,
        in device-id order): a copy of a deleted frame is refused as stale by every worker,
        never taken for a late new one (SPEC section 7). Returns the frames deleted."""
        floors = self._conn.execute(
            "SELECT f.device_id, max(f.counter) FROM frames f JOIN (SELECT device_id, "
            "max(counter) AS top FROM frames WHERE direction = %(up)s GROUP BY device_id) t "
            "ON t.device_id = f.device_id WHERE f.direction = %(up)s AND f.received_at < "
            "%(cutoff)s AND f.counter <= t.top - %(keep)s GROUP BY f.device_id",
            {"up": UP, "cutoff": cutoff, "keep": keep}).fetchall()
        floors = dict(floors)
        # (counted before the lock: frames coming meanwhile are higher and newer, so what may
        # go stays the same)
        self.lock(floors)
        deleted = 0
        for device_id in sorted(floors):
            self._conn.execute("UPDATE devices SET history_floor = greatest(history_floor, %s) "
                               "WHERE device_id = %s", (floors[device_id], device_id))
            deleted += self._conn.execute(
                "DELETE FROM frames WHERE device_id = %s AND direction = %s AND counter <= %s "
                "AND received_at < %s", (device_id, UP, floors[device_id], cutoff)).rowcount
        return deleted

    # -- reading (tests, the CLI) --
    def committed_incidents(self, device_id=None, states=None):
        """The incidents (of a device, in those states) as last committed, by id (store.Store's
        incidents() for the CLI)."""
        where, args = [], []
        if device_id is not None:
            where.append("device_id = %s")
            args.append(device_id)
        if states:
            where.append("state = ANY(%s)")
            args.append(list(states))
        rows = self.conn.execute("SELECT %s FROM incidents%s ORDER BY id" % (
            _INCIDENT, " WHERE " + " AND ".join(where) if where else ""), args).fetchall()
        self._conn.rollback()
        return [Incident(*row) for row in rows]

    def committed_outbox(self, pending_only=False):
        """outbox.Item of every outbox row (undelivered only, if asked), by id; its times in
        unix seconds (the database's clock)."""
        rows = self.conn.execute(
            "SELECT id, destination, incident_id, device_id, key, event, snapshot, "
            "extract(epoch FROM created_at)::float8, attempts, extract(epoch FROM next_at)::"
            "float8, last_error, extract(epoch FROM delivered_at)::float8, extract(epoch FROM "
            "alerted_at)::float8 FROM outbox%s ORDER BY id"
            % (" WHERE delivered_at IS NULL" if pending_only else "")).fetchall()
        self._conn.rollback()
        return [Item(*(row[:6] + (json.loads(row[6]),) + row[7:])) for row in rows]

    def gauges(self):
        """What /metrics shows of the shared state, as last committed: {"devices": {state:
        n, "lost_contact": n}, "pending": {destination: n}, "incidents": {state: n}}."""
        try:
            devices = dict(self.conn.execute("SELECT state, count(*) FROM devices GROUP BY "
                                             "state").fetchall())
            devices["lost_contact"] = self._conn.execute(
                "SELECT count(*) FROM devices WHERE lost_incident IS NOT NULL").fetchone()[0]
            pending = dict(self._conn.execute(
                "SELECT destination, count(*) FROM outbox WHERE delivered_at IS NULL GROUP BY "
                "destination").fetchall())
            incidents = dict(self._conn.execute("SELECT state, count(*) FROM incidents GROUP "
                                                "BY state").fetchall())
            self._conn.rollback()
        except psycopg.Error as exc:
            self.rollback()
            raise StoreError("cannot read the gauges: %s" % _first_line(exc)) from None
        return {"devices": devices, "pending": pending, "incidents": incidents}

    def committed_audit(self, incident_id):
        """audit() outside a transaction (the CLI's), as last committed."""
        self.conn  # (connected again if it was lost)
        entries = self.audit(incident_id)
        self._conn.rollback()
        return entries

    def open_lost_contacts(self):
        """(device_id, incident_id) of every open LOST_CONTACT, by device."""
        rows = self.conn.execute("SELECT device_id, id FROM incidents WHERE kind = %s AND "
                                 "state = 'open' ORDER BY device_id, id",
                                 (LOST_CONTACT,)).fetchall()
        self._conn.rollback()
        return rows

    def downlink_counter(self, device_id):
        row = self.conn.execute("SELECT downlink_counter FROM devices WHERE device_id = %s",
                                (device_id,)).fetchone()
        self._conn.rollback()  # a read leaves no transaction open (it would hold no lock)
        return row[0] if row else 0

    def frame_count(self, device_id):
        count = self.conn.execute("SELECT count(*) FROM frames WHERE device_id = %s",
                                  (device_id,)).fetchone()[0]
        self._conn.rollback()
        return count

    def alarm_incidents(self, device_id):
        """(counter, incident id) of every alarm incident of the device, by counter."""
        rows = self.conn.execute("SELECT counter, id FROM incidents WHERE device_id = %s AND "
                                 "counter IS NOT NULL ORDER BY counter", (device_id,)).fetchall()
        self._conn.rollback()
        return rows


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Transaction:
    def __init__(self, store):
        self.store = store
        self._tx = None

    def __enter__(self):
        try:
            self._tx = self.store.conn.transaction()  # (connected again if it was lost)
            self._tx.__enter__()
        except psycopg.Error as error:  # (its BEGIN is where a dead connection shows first)
            raise StoreError("cannot begin: %s" % _first_line(error)) from None
        return self.store

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._tx.__exit__(exc_type, exc, tb)
        except psycopg.Error as error:
            raise StoreError("cannot commit: %s" % _first_line(error)) from None


class _LockedDevices(_Transaction):
    def __init__(self, store, device_ids):
        _Transaction.__init__(self, store)
        self.device_ids = device_ids

    def __enter__(self):
        _Transaction.__enter__(self)
        return self.store.lock(self.device_ids)
