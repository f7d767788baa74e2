# The PostgreSQL store: the state of every device shared by many gateway workers. In progress
# (gateway/README.md, "Scale-out on PostgreSQL"): ingest, downlink counters, supervision and
# outbox claims are here; `[store] url = "postgresql://..."` is refused until the rest is.
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
# SQLite (store.py, registry.py, downlinks.py, outbox.py) is the other backend, unchanged: one
# process owns its database, so there the pipeline keeps windows, contacts and downlink
# counters in memory and writes them once per batch. Here nothing per device is kept between
# transactions: another worker may have changed it.
#
# Rules of this backend:
#   every transaction that touches devices first locks their rows in `devices`
#   (SELECT ... ORDER BY device_id FOR UPDATE): always in device-id order, so two batches
#   naming the same devices cannot deadlock; what it reads of a device after that is current;
#   a frame is stored once: INSERT ... ON CONFLICT DO NOTHING on (device, direction, counter);
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
from collections import namedtuple

import psycopg

from . import dc09_pg, downlinks_pg, outbox_pg
from .errors import StoreError
from .pipeline import WINDOW_SIZE  # the floor of a device first heard mid-stream
from .registry import ACTIVE, REVOKED
from .webhook import idempotency_key

UP = 0  # frames.direction

NEW = "new"
RETRANSMISSION = "retransmission"
COUNTER_REUSE = "counter_reuse"
STALE_COUNTER = "stale_counter"
UNKNOWN_DEVICE = "unknown_device"
REVOKED_DEVICE = "revoked_device"
_NOT_ALARMS = ("DOUBLE_TAP",)  # answers an incident rather than raising one (incidents.py)

# A verified uplink, as the pipeline has it after decode() (type: the frame's NAME).
Uplink = namedtuple("Uplink", "device_id counter tag type kind ref payload interval")
# What ingest made of it: ack_counter is the RECEIVED ack's downlink counter (None: no ack).
Verdict = namedtuple("Verdict", "device_id counter result ack_counter incident_id")

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
"""

_LOCK = ("SELECT device_id, state, counter_floor, downlink_counter, history_floor, interval_s, "
         "lost_incident FROM devices WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE")
_Locked = namedtuple("_Locked", "device_id state counter_floor downlink_counter history_floor "
                                "interval_s lost_incident")
LOST_CONTACT = "LOST_CONTACT"  # incidents.LOST_CONTACT


def create_schema(conn):
    """The tables, in the connection's database (idempotent); commits."""
    with conn.transaction():
        conn.execute(SCHEMA)
        conn.execute(outbox_pg.SCHEMA)
        conn.execute(dc09_pg.SCHEMA)
        conn.execute(downlinks_pg.SCHEMA)
        if conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))


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

    # -- registry (the part ingest needs so far) --
    def add_device(self, device_id, at, counter_floor=None, interval_s=None):
        with self.conn.transaction():
            self._conn.execute(
                "INSERT INTO devices (device_id, state, added_at, updated_at, counter_floor, "
                "interval_s) VALUES (%s, %s, %s, %s, %s, %s)",
                (device_id, ACTIVE, at, at, counter_floor, interval_s))

    def revoke(self, device_id, at):
        with self.conn.transaction():
            self._lock([device_id])
            self._conn.execute("UPDATE devices SET state = %s, updated_at = %s "
                              "WHERE device_id = %s", (REVOKED, at, device_id))

    # -- ingest --
    def write(self, uplinks, now):
        """Ingest up to the commit: every uplink judged and written in a transaction left
        open; returns their Verdicts, to be acted on only once commit() has returned."""
        try:
            self._live()
            return self._write(uplinks, now)
        except psycopg.Error as exc:
            self.rollback()
            raise StoreError("cannot write %d frames: %s" % (len(uplinks), _first_line(exc))
                             ) from None
        except BaseException:  # a bug: nothing of the batch stays, and no lock is held
            self.rollback()
            raise

    def commit(self):
        # (the connection write() used, never a new one: that would commit nothing)
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

    def ingest(self, uplinks, now):
        """write() and commit(): the Verdicts of a batch now on disk."""
        verdicts = self.write(uplinks, now)
        self.commit()
        return verdicts

    def _write(self, uplinks, now):
        devices = self._lock(sorted({u.device_id for u in uplinks}))
        changed = set()  # devices whose row is written back
        heard = {}  # device_id -> its new uplinks (contact, deadline)
        verdicts = []
        for uplink in uplinks:
            device = devices.get(uplink.device_id)
            if device is None:
                verdicts.append(Verdict(uplink.device_id, uplink.counter, UNKNOWN_DEVICE,
                                        None, None))
                continue
            if device.state != ACTIVE:
                verdicts.append(Verdict(uplink.device_id, uplink.counter, REVOKED_DEVICE,
                                        None, None))
                continue
            if device.history_floor is None:  # its first frame (pipeline._contact)
                floor = (max(0, uplink.counter - WINDOW_SIZE) if device.counter_floor is None
                         else max(0, device.counter_floor - 1))
                device = devices[uplink.device_id] = device._replace(history_floor=floor)
                changed.add(uplink.device_id)
            result = self._verdict(device, uplink, now)
            incident_id = None
            if result == NEW:
                heard.setdefault(uplink.device_id, []).append(uplink)
                if uplink.type == "alarm" and uplink.kind not in _NOT_ALARMS:
                    incident_id = self._raise_alarm(uplink, now)
            ack = None
            if result in (NEW, RETRANSMISSION):
                ack = device.downlink_counter + 1
                device = devices[uplink.device_id] = device._replace(downlink_counter=ack)
                changed.add(uplink.device_id)
            verdicts.append(Verdict(uplink.device_id, uplink.counter, result, ack, incident_id))
        for device_id in sorted(changed | set(heard)):
            self._write_device(devices[device_id], now, heard.get(device_id, ()))
        return verdicts

    def _lock(self, device_ids):
        rows = self._conn.execute(_LOCK, (list(device_ids),)).fetchall()
        return {row[0]: _Locked(*row) for row in rows}

    def _verdict(self, device, uplink, now):
        if uplink.counter > device.history_floor:
            stored = self._conn.execute(
                "INSERT INTO frames (device_id, direction, counter, tag, type, kind, ref, "
                "payload, received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (device_id, direction, counter) DO NOTHING RETURNING counter",
                (uplink.device_id, UP, uplink.counter, uplink.tag, uplink.type, uplink.kind,
                 uplink.ref, uplink.payload, now)).fetchone()
            if stored is not None:
                return NEW
        row = self._conn.execute("SELECT tag FROM frames WHERE device_id = %s AND direction = %s "
                                "AND counter = %s", (uplink.device_id, UP, uplink.counter)
                                ).fetchone()
        if row is None:
            return STALE_COUNTER
        return RETRANSMISSION if bytes(row[0]) == bytes(uplink.tag) else COUNTER_REUSE

    def _raise_alarm(self, uplink, now):
        row = self._conn.execute(
            "INSERT INTO incidents (device_id, counter, kind, state, opened_at, updated_at) "
            "VALUES (%s, %s, %s, 'open', %s, %s) ON CONFLICT (device_id, counter) "
            "WHERE counter IS NOT NULL DO NOTHING RETURNING id",
            (uplink.device_id, uplink.counter, uplink.kind, now, now)).fetchone()
        if row is None:  # its double tap raised it first (not in this backend yet)
            return None
        self._conn.execute("INSERT INTO audit (incident_id, at, event, detail) "
                          "VALUES (%s, %s, 'raised', 'raised')", (row[0], now))
        self._enqueue(row[0], "raised", now)
        return row[0]

    def _write_device(self, device, now, heard):
        """The device's row once per batch: its downlink counter and floor; and when new
        frames came from it (retransmissions say nothing new), its contact and deadline, from
        the database clock (workers' clocks may differ)."""
        if not heard:
            self._conn.execute("UPDATE devices SET downlink_counter = %s, history_floor = %s "
                              "WHERE device_id = %s",
                              (device.downlink_counter, device.history_floor, device.device_id))
            return
        if device.lost_incident is not None:
            self._restore_contact(device, now, heard[0])
        interval = next((u.interval for u in reversed(heard) if u.interval), None)
        self._conn.execute(
            "UPDATE devices SET downlink_counter = %s, history_floor = %s, lost_incident = NULL, "
            "last_seen = greatest(last_seen, %s), "
            "checkin_interval_s = coalesce(%s, checkin_interval_s), "
            "deadline = clock_timestamp() + make_interval(secs => "
            "coalesce(%s, checkin_interval_s, interval_s, %s) + %s) WHERE device_id = %s",
            (device.downlink_counter, device.history_floor, now, interval, interval,
             self.default_interval_s, self.grace_s, device.device_id))

    # -- downlink counters outside ingest (DELIVERED acks, responder actions) --
    def locked(self, device_ids):
        """`with store.locked(ids):` a transaction holding those devices' rows (in id order);
        commits at the end, rolls back on an exception."""
        return _LockedDevices(self, sorted(set(device_ids)))

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
                    "SELECT device_id, last_seen FROM devices WHERE state = %s AND "
                    "lost_incident IS NULL AND deadline < clock_timestamp() ORDER BY device_id "
                    "LIMIT %s FOR UPDATE SKIP LOCKED", (ACTIVE, limit)).fetchall()
                raised = []
                for device_id, last_seen in due:
                    incident_id = self._conn.execute(
                        "INSERT INTO incidents (device_id, counter, kind, state, opened_at, "
                        "updated_at) VALUES (%s, NULL, %s, 'open', %s, %s) RETURNING id",
                        (device_id, LOST_CONTACT, now, now)).fetchone()[0]
                    self._conn.execute("INSERT INTO audit (incident_id, at, event, detail) "
                                      "VALUES (%s, %s, 'raised', %s)", (
                                          incident_id, now, "raised; silent since %.0f"
                                          % (last_seen or 0)))
                    self._conn.execute("UPDATE devices SET lost_incident = %s WHERE "
                                      "device_id = %s", (incident_id, device_id))
                    self._enqueue(incident_id, "raised", now)
                    raised.append((device_id, incident_id))
            return raised
        except psycopg.Error as exc:
            raise StoreError("cannot claim overdue devices: %s" % _first_line(exc)) from None

    def _restore_contact(self, device, now, uplink):
        """A frame from a device with LOST_CONTACT open closes it (incidents.RULES)."""
        closed = self._conn.execute("UPDATE incidents SET state = 'closed', updated_at = %s "
                                   "WHERE id = %s AND state = 'open'",
                                   (now, device.lost_incident)).rowcount
        if not closed:
            return
        self._conn.execute("INSERT INTO audit (incident_id, at, event, detail) VALUES (%s, %s, "
                          "'contact_restored', %s)", (device.lost_incident, now,
                                                      "contact restored; %s frame %d"
                                                      % (uplink.type, uplink.counter)))
        self._enqueue(device.lost_incident, "contact_restored", now)

    def _enqueue(self, incident_id, event, now):
        """The event for every destination, in the transaction that made it, with a snapshot
        of the incident and its audit trail as they are now (outbox.py's snapshot less the
        wearer, location and lateness, which this backend does not keep yet)."""
        if not self.destinations:
            return
        row = self._conn.execute("SELECT id, device_id, counter, kind, state, opened_at, "
                                "updated_at FROM incidents WHERE id = %s", (incident_id,)
                                ).fetchone()
        audit = self._conn.execute("SELECT at, event, detail FROM audit WHERE incident_id = %s "
                                  "ORDER BY id", (incident_id,)).fetchall()
        incident = dict(zip(("id", "device_id", "counter", "kind", "state", "opened_at",
                             "updated_at"), row))
        device_id = incident.pop("device_id")
        snapshot = {"event": event, "device_id": device_id, "incident": incident,
                    "audit": [{"at": a, "event": e, "detail": d} for a, e, d in audit]}
        ref = incident["counter"] if incident["counter"] is not None else "i%d" % incident_id
        self.outbox.enqueue(self.destinations, incident_id, device_id,
                            idempotency_key(device_id, ref, event), event,
                            json.dumps(snapshot, sort_keys=True))

    # -- reading (tests, the CLI) --
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


class _LockedDevices:
    def __init__(self, store, device_ids):
        self.store = store
        self.device_ids = device_ids
        self._tx = None

    def __enter__(self):
        self._tx = self.store.conn.transaction()
        self._tx.__enter__()
        return self.store._lock(self.device_ids)

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._tx.__exit__(exc_type, exc, tb)
        except psycopg.Error as error:
            raise StoreError("cannot commit: %s" % _first_line(error)) from None
