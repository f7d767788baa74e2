# The durable forwarding outbox: incident events waiting for each responder destination.
#
# Rules:
#   an incident event is enqueued in the same transaction as the incident change that causes it
#   (Incidents calls enqueue()), one row per configured destination, so a crash between the
#   commit and the forwarding loses nothing: the rows are there when the gateway starts again;
#   the row holds a snapshot of the incident (state, audit trail, wearer, location) as it was
#   when the event happened, so a replay days later tells what was true then;
#   idempotency key per (device, alarm counter or incident id, event): one row per destination
#   and key (a second DOUBLE_TAP on the same alarm is audited, not forwarded again), and the
#   key goes with every attempt so a backend dedupes what a crash made us send twice;
#   order per incident: only the oldest undelivered row of an incident is due, per destination;
#   a failed attempt backs off exponentially (min doubling to max) with full jitter
#   (uniformly 50-100% of the step), per row;
#   nothing is dropped: a row older than max_age_s raises one operator alert (the caller logs
#   and counts it) and stays queued, retried like any other.
import json
import random
from collections import namedtuple

from . import wearers as wearer_profiles
from .location import record
from .webhook import idempotency_key

FORWARDED_EVENTS = ("raised", "wearer_confirms", "contact_restored", "resolved", "prompt_played",
                    "location_updated")
# Events an incident may have many of: each one's idempotency key ends in its number (1, 2, ...)
NUMBERED_EVENTS = ("location_updated",)

Item = namedtuple("Item", "id destination incident_id device_id key event snapshot created_at "
                          "attempts next_at last_error delivered_at alerted_at")

_COLUMNS = ("id, destination, incident_id, device_id, key, event, snapshot, created_at, "
            "attempts, next_at, last_error, delivered_at, alerted_at")


def event_key(store, incident, event):
    """The idempotency key of `event` of `incident`, just audited in `store`: one per event,
    a numbered one per location update (its count in the audit trail)."""
    ref = incident.counter if incident.counter is not None else "i%d" % incident.id
    if event in NUMBERED_EVENTS:
        event = "%s-%d" % (event, sum(1 for a in store.audit(incident.id) if a.event == event))
    return idempotency_key(incident.device_id, ref, event)


class Outbox:
    def __init__(self, conn, destinations=(), backoff=(1.0, 300.0), max_age_s=120.0,
                 rng=random.random):
        self.conn = conn
        self.destinations = tuple(destinations)
        self.backoff = backoff
        self.max_age_s = max_age_s
        self.rng = rng

    # -- writing (inside the caller's transaction) --
    def prune_delivered(self, cutoff):
        """Delete the events delivered before `cutoff` (their incidents and audit stay), and
        their DC-09 sequence numbers: SQLite reuses the ids of deleted rows, and a new event
        must never reach the ARC under an old one's number."""
        gone = self.conn.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND "
                                 "delivered_at < ?", (cutoff,)).rowcount
        if gone:
            self.conn.execute("DELETE FROM dc09_sequences WHERE outbox_id NOT IN "
                              "(SELECT id FROM outbox)")
        return gone

    def set_location(self, incident_id, location):
        """Keep `location` (a location.Location) as the incident's, for its events' bodies."""
        self.conn.execute("INSERT OR REPLACE INTO incident_locations VALUES (?, ?)",
                          (incident_id, json.dumps(record(location), sort_keys=True)))

    def location(self, incident_id):
        """The incident's location as location.record() made it, or None."""
        row = self.conn.execute("SELECT location FROM incident_locations WHERE incident_id = ?",
                                (incident_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def enqueue(self, store, incident, event, at):
        """Queue `event` of `incident` for every destination; returns the rows added."""
        if event not in FORWARDED_EVENTS or not self.destinations:
            return 0
        key = event_key(store, incident, event)
        snapshot = json.dumps(self.snapshot(store, incident, event), sort_keys=True)
        added = 0
        for destination in self.destinations:
            added += self.conn.execute(
                "INSERT OR IGNORE INTO outbox (destination, incident_id, device_id, key, event, "
                "snapshot, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (destination, incident.id, incident.device_id, key, event, snapshot, at,
                 at)).rowcount
        return added

    def snapshot(self, store, incident, event):
        wearer = wearer_profiles.get(self.conn, incident.device_id)
        return {
            "event": event,
            "device_id": incident.device_id,
            "incident": {"id": incident.id, "kind": incident.kind, "state": incident.state,
                         "counter": incident.counter, "opened_at": incident.opened_at,
                         "updated_at": incident.updated_at},
            "wearer": wearer_profiles.as_payload(wearer),
            "zone": wearer.zone if wearer else 1,
            "location": self.location(incident.id),
            "late": _late(store.lateness(incident.id)),
            "audit": [{"at": a.at, "event": a.event, "detail": a.detail}
                      for a in store.audit(incident.id)],
        }

    # -- the forwarding loop's view --
    def due(self, destination, now, limit=50):
        """The oldest undelivered row of each incident, when its time has come, oldest first."""
        rows = self.conn.execute(
            "SELECT %s FROM outbox WHERE id IN (SELECT min(id) FROM outbox WHERE destination = ? "
            "AND delivered_at IS NULL GROUP BY incident_id) AND next_at <= ? ORDER BY id LIMIT ?"
            % _COLUMNS, (destination, now, limit)).fetchall()
        return [_item(r) for r in rows]

    def next_due_at(self, destination):
        row = self.conn.execute(
            "SELECT min(next_at) FROM outbox WHERE id IN (SELECT min(id) FROM outbox WHERE "
            "destination = ? AND delivered_at IS NULL GROUP BY incident_id)",
            (destination,)).fetchone()
        return row[0]

    def delivered(self, item, now):
        self.conn.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, "
                          "last_error = NULL WHERE id = ?", (now, item.id))

    def failed(self, item, now, error):
        """Record a failed attempt; returns the delay before the next one."""
        low, high = self.backoff
        step = min(high, low * (2 ** min(item.attempts, 30)))
        delay = step * (0.5 + 0.5 * self.rng())
        self.conn.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, "
                          "last_error = ? WHERE id = ?", (now + delay, error[:300], item.id))
        return delay

    def retry_now(self, destination, now):
        """Every undelivered row of `destination` due at `now` (its link is back); returns how
        many were waiting."""
        return self.conn.execute("UPDATE outbox SET next_at = ? WHERE destination = ? AND "
                                 "delivered_at IS NULL AND next_at > ?",
                                 (now, destination, now)).rowcount

    def too_old(self, now):
        """Undelivered rows older than max_age_s not alerted yet; marks them alerted."""
        rows = [_item(r) for r in self.conn.execute(
            "SELECT %s FROM outbox WHERE delivered_at IS NULL AND alerted_at IS NULL AND "
            "created_at < ? ORDER BY id" % _COLUMNS, (now - self.max_age_s,))]
        for item in rows:
            self.conn.execute("UPDATE outbox SET alerted_at = ? WHERE id = ?", (now, item.id))
        return rows

    def items(self, destination=None, pending_only=False):
        sql, args = "SELECT %s FROM outbox" % _COLUMNS, []
        where = []
        if destination:
            where.append("destination = ?")
            args.append(destination)
        if pending_only:
            where.append("delivered_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_item(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def pending_counts(self):
        return dict(self.conn.execute("SELECT destination, count(*) FROM outbox WHERE "
                                      "delivered_at IS NULL GROUP BY destination"))

    def overdue_count(self, now):
        return self.conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND "
                                 "created_at < ?", (now - self.max_age_s,)).fetchone()[0]


def _item(row):
    row = list(row)
    row[6] = json.loads(row[6])
    return Item(*row)


def _late(lateness):
    """A Lateness as the snapshot keeps it (JSON), or None."""
    return None if lateness is None else lateness._asdict()
