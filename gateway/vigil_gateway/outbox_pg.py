# The forwarding outbox on PostgreSQL (store_pg.py's family; outbox.py is SQLite's): rows
# claimed by whichever worker asks, each delivered by one worker at a time.
#
# Rules:
#   a row is claimed with FOR UPDATE SKIP LOCKED and leased until the database clock says
#   otherwise (lease_s from the claim): while the lease holds no other worker claims it;
#   a claim takes only the oldest undelivered row of an incident, per destination, so one
#   incident's events reach a destination in order (a later one waits, even while the earlier
#   one is leased by another worker);
#   the delivery itself happens outside any transaction; delivered() and failed() change the
#   row only while the caller's lease (its token) still holds it: a worker whose lease ran out
#   learns so (False) and changes nothing, since another worker may be delivering that row;
#   the idempotency key goes with every attempt, so a backend dedupes a row delivered twice
#   after a lease ran out mid-delivery;
#   next_at, lease_until and created_at are the database's clock: workers' clocks may differ;
#   incidents.py queues events through IncidentEvents (as through outbox.Outbox on SQLite), in
#   the transaction of the incident change: the events outbox.FORWARDED_EVENTS names, with a
#   snapshot of the incident as outbox.py makes it (the wearer profile as committed then:
#   wearers_pg.py).
import json
import random
import secrets
import time
from collections import namedtuple

import psycopg

from .errors import StoreError
from .location import record
from .outbox import FORWARDED_EVENTS, Item, event_key
from . import wearers_pg
from .wearers import as_payload

Claimed = namedtuple("Claimed", "id destination incident_id device_id key event snapshot "
                                "attempts lease created_at")
# A claimed row as forwarding.py takes it (outbox.Item, its snapshot decoded), with its lease.
Leased = namedtuple("Leased", Item._fields + ("lease",))

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL,
    incident_id bigint NOT NULL,
    device_id bigint NOT NULL,
    key text NOT NULL,
    event text NOT NULL,
    snapshot text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease text,
    lease_until timestamptz,
    last_error text,
    delivered_at timestamptz,
    alerted_at timestamptz,
    UNIQUE (destination, key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (destination, incident_id, id)
    WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS incident_locations (
    incident_id bigint PRIMARY KEY,
    location text NOT NULL
);
"""

# "the oldest undelivered row of its incident" as one index lookup per row (outbox_pending),
# whatever the planner's statistics: written as NOT EXISTS it became an anti join, and on an
# outbox filled faster than autovacuum analyses it (a burst on a new database) the planner
# chose a nested loop comparing every pending row with every other: 2,000 pending rows took
# 0.8 s a claim, and forwarding crawled at ten events a second per worker
_OLDEST_OF_INCIDENT = """o.id = (SELECT min(e.id) FROM outbox e WHERE e.destination = o.destination
                AND e.incident_id = o.incident_id AND e.delivered_at IS NULL)"""
_CLAIM = """
SELECT o.id FROM outbox o
WHERE o.destination = %(destination)s AND o.delivered_at IS NULL
  AND o.next_at <= clock_timestamp()
  AND (o.lease_until IS NULL OR o.lease_until < clock_timestamp())
  AND """ + _OLDEST_OF_INCIDENT + """
ORDER BY o.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
_NEXT_DUE = """
SELECT extract(epoch FROM min(greatest(next_at, coalesce(lease_until, next_at)))
               - clock_timestamp())::float8
FROM outbox o WHERE destination = %s AND delivered_at IS NULL AND """ + _OLDEST_OF_INCIDENT


class PostgresOutbox:
    """The outbox on a worker's connection: its PostgresStore's, connected again when lost."""

    def __init__(self, store):
        self.store = store

    @property
    def conn(self):
        """The store's connection as it is, inside a transaction (enqueue)."""
        return self.store._conn

    def enqueue(self, destinations, incident_id, device_id, key, event, snapshot):
        """Inside the transaction of the incident change that causes it: one row per
        destination, none added twice for one key; returns the rows added."""
        added = 0
        for destination in destinations:
            added += self.conn.execute(
                "INSERT INTO outbox (destination, incident_id, device_id, key, event, snapshot) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (destination, key) DO NOTHING",
                (destination, incident_id, device_id, key, event, snapshot)).rowcount
        return added

    def claim(self, destination, lease_s, limit=50, lease=None):
        """Lease up to `limit` due rows of `destination` (the oldest undelivered of each
        incident) for lease_s seconds, and commit; returns them as Claimed, oldest first.
        `lease`: the claim's token (a fresh one when not given)."""
        lease = lease or secrets.token_hex(16)
        try:
            with self.store.conn.transaction():  # (connected again if it was lost)
                ids = [r[0] for r in self.conn.execute(
                    _CLAIM, {"destination": destination, "limit": limit}).fetchall()]
                if not ids:
                    return []
                rows = self.conn.execute(
                    "UPDATE outbox SET lease = %s, lease_until = clock_timestamp() + "
                    "make_interval(secs => %s) WHERE id = ANY(%s) RETURNING id, destination, "
                    "incident_id, device_id, key, event, snapshot, attempts, lease, "
                    "extract(epoch FROM created_at)::float8",
                    (lease, lease_s, ids)).fetchall()
        except psycopg.Error as exc:
            raise StoreError("cannot claim outbox rows: %s" % _first_line(exc)) from None
        return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)

    def delivered(self, item):
        """The row was delivered: True if this claim still held it (and it is marked)."""
        return self._while_leased(
            "UPDATE outbox SET delivered_at = clock_timestamp(), attempts = attempts + 1, "
            "last_error = NULL, lease = NULL, lease_until = NULL", (), item)

    def failed(self, item, delay_s, error):
        """An attempt failed: due again after delay_s. True if this claim still held it."""
        return self._while_leased(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s, lease = NULL, "
            "lease_until = NULL, next_at = clock_timestamp() + make_interval(secs => %s)",
            (error[:300], delay_s), item)

    def _while_leased(self, update, args, item):
        try:
            with self.store.conn.transaction():
                return self.conn.execute(
                    update + " WHERE id = %s AND lease = %s AND delivered_at IS NULL AND "
                    "lease_until >= clock_timestamp()", args + (item.id, item.lease)
                ).rowcount == 1
        except psycopg.Error as exc:
            raise StoreError("cannot update outbox row %d: %s" % (item.id, _first_line(exc))
                             ) from None

    def release(self, lease):
        """Give back what a claim with this token still holds (a worker stopping): due at once
        for the other workers, not after the lease. Commits; returns how many."""
        try:
            with self.store.conn.transaction():
                return self.conn.execute(
                    "UPDATE outbox SET lease = NULL, lease_until = NULL WHERE lease = %s AND "
                    "delivered_at IS NULL", (lease,)).rowcount
        except psycopg.Error as exc:
            raise StoreError("cannot release outbox rows: %s" % _first_line(exc)) from None

    def delivered_keys(self, destination):
        """(incident_id, key) of each delivered row of `destination`, by when it was marked."""
        rows = self.store.conn.execute(
            "SELECT incident_id, key FROM outbox WHERE destination = %s AND delivered_at IS "
            "NOT NULL ORDER BY delivered_at, id", (destination,)).fetchall()
        self.conn.rollback()
        return rows


class ForwardingOutbox:
    """forwarding.py's outbox (outbox.Outbox's methods) on PostgreSQL, for one worker: due()
    claims rows with a lease, so the loops of many workers share the queue; delivered() and
    failed() change a row only while this worker's lease holds it. `senders` names the
    destinations that take one sender at a time ({destination: try_become_sender}, DC-09's
    dc09_pg lock): their rows are claimed only while it says True. The times forwarding.py
    compares (next_due_at) are the worker's clock, moved by the database's own distance to what
    is due."""

    def __init__(self, outbox, backoff=(1.0, 300.0), max_age_s=120.0, lease_s=60.0,
                 clock=time.time, rng=random.random, senders=None):
        self.outbox = outbox
        self.lease = secrets.token_hex(16)  # this worker's claims (release() on stopping)
        self.backoff = backoff
        self.max_age_s = max_age_s
        self.lease_s = lease_s
        self.clock = clock
        self.rng = rng
        self.senders = dict(senders or {})

    def due(self, destination, now, limit=10):
        # (few at a time: the rows of a claim wait for each other's deliveries, and a worker
        # that dies holds them until the lease runs out)
        sender = self.senders.get(destination)
        if sender is not None and not sender():
            return []
        return [Leased(c.id, c.destination, c.incident_id, c.device_id, c.key, c.event,
                       json.loads(c.snapshot), c.created_at, c.attempts, None, None, None, None,
                       c.lease)
                for c in self.outbox.claim(destination, self.lease_s, limit, self.lease)]

    def release(self):
        """What this worker still holds, given back (it is stopping)."""
        return self.outbox.release(self.lease)

    def delivered(self, item, now):
        """True if this worker's lease still held the row (and it is marked delivered)."""
        return self.outbox.delivered(item)

    def failed(self, item, now, error):
        """Record a failed attempt (while the lease holds); returns the delay before the next
        one (outbox.Outbox's backoff with jitter)."""
        low, high = self.backoff
        delay = min(high, low * (2 ** min(item.attempts, 30))) * (0.5 + 0.5 * self.rng())
        self.outbox.failed(item, delay, error)
        return delay

    def next_due_at(self, destination):
        """When this worker may next claim a row of `destination` (worker's clock): a row due
        but leased by another worker only once its lease runs out, and nothing while another
        worker is the destination's one sender. None when there is none or the database
        cannot say: forwarding.py then looks again within a second (never at once: a loop
        told "due now" of rows it cannot claim would spin)."""
        sender = self.senders.get(destination)
        if sender is not None and not sender():
            return None
        try:
            row = self._read(_NEXT_DUE, (destination,))
        except StoreError:  # (the loop outside its try: a restart must not end it)
            return None
        return None if row[0] is None else self.clock() + row[0]

    def retry_now(self, destination, now):
        """Every undelivered row of `destination` due now (its link is back); how many."""
        return self._write(
            "UPDATE outbox SET next_at = clock_timestamp() WHERE destination = %s AND "
            "delivered_at IS NULL AND next_at > clock_timestamp()", (destination,)).rowcount

    def too_old(self, now):
        """Undelivered rows older than max_age_s not alerted yet, by any worker; marks them
        alerted (once, whichever worker sees them first)."""
        rows = self._write(
            "UPDATE outbox SET alerted_at = clock_timestamp() WHERE delivered_at IS NULL AND "
            "alerted_at IS NULL AND created_at < clock_timestamp() - make_interval(secs => %s) "
            "RETURNING id, destination, incident_id, device_id, key, event, snapshot, "
            "extract(epoch FROM created_at)::float8, attempts, last_error",
            (self.max_age_s,)).fetchall()
        return sorted((Item(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8],
                            None, r[9], None, None) for r in rows), key=lambda i: i.id)

    def prune_delivered(self, cutoff):
        """Inside retention's transaction: delete the events delivered before `cutoff` (a
        worker's time; delivered_at is the database's)."""
        return self._write("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND "
                           "delivered_at < to_timestamp(%s)", (cutoff,)).rowcount

    def overdue_count(self, now):
        return self._read("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND "
                          "created_at < clock_timestamp() - make_interval(secs => %s)",
                          (self.max_age_s,))[0]

    def pending_counts(self):
        return dict(self._reads("SELECT destination, count(*) FROM outbox WHERE delivered_at IS "
                                "NULL GROUP BY destination", ()))

    def _write(self, sql, args):
        # inside the caller's transaction
        try:
            return self.outbox.conn.execute(sql, args)
        except psycopg.Error as exc:
            raise StoreError("cannot write the outbox: %s" % _first_line(exc)) from None

    def _read(self, sql, args):
        return self._reads(sql, args)[0]

    def _reads(self, sql, args):
        try:
            rows = self.outbox.store.conn.execute(sql, args).fetchall()
            self.outbox.conn.rollback()  # a read leaves no transaction open
        except psycopg.Error as exc:
            raise StoreError("cannot read the outbox: %s" % _first_line(exc)) from None
        return rows


class IncidentEvents:
    """Incidents' outbox (incidents.py calls enqueue() and set_location()), on the store's
    connection, inside the transaction of the incident change."""

    def __init__(self, outbox, destinations):
        self.outbox = outbox
        self.destinations = tuple(destinations)

    def set_location(self, incident_id, location):
        """Keep `location` (a location.Location) as the incident's (location.record())."""
        self.outbox.conn.execute(
            "INSERT INTO incident_locations VALUES (%s, %s) ON CONFLICT (incident_id) "
            "DO UPDATE SET location = excluded.location",
            (incident_id, json.dumps(record(location), sort_keys=True)))

    def location(self, incident_id):
        row = self.outbox.conn.execute("SELECT location FROM incident_locations "
                                       "WHERE incident_id = %s", (incident_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def enqueue(self, store, incident, event, at):
        """Queue `event` of `incident` for every destination; returns the rows added."""
        if event not in FORWARDED_EVENTS or not self.destinations:
            return 0
        snapshot = json.dumps(self.snapshot(store, incident, event), sort_keys=True)
        return self.outbox.enqueue(self.destinations, incident.id, incident.device_id,
                                   event_key(store, incident, event), event, snapshot)

    def snapshot(self, store, incident, event):
        late = store.lateness(incident.id)
        wearer = wearers_pg.get(self.outbox.conn, incident.device_id)
        return {
            "event": event,
            "device_id": incident.device_id,
            "incident": {"id": incident.id, "kind": incident.kind, "state": incident.state,
                         "counter": incident.counter, "opened_at": incident.opened_at,
                         "updated_at": incident.updated_at},
            "wearer": as_payload(wearer),
            "zone": wearer.zone if wearer else 1,
            "location": self.location(incident.id),
            "late": None if late is None else late._asdict(),
            "audit": [{"at": a.at, "event": a.event, "detail": a.detail}
                      for a in store.audit(incident.id)],
        }


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
