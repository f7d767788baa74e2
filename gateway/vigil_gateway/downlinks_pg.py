# Stored downlinks on PostgreSQL (store_pg.py's family; downlinks.py is SQLite's): DELIVERED
# acks and responder actions, made by whichever worker, each signed with a counter no other
# downlink of its device has.
#
# Rules:
#   a downlink is made inside a transaction holding its device's row (store_pg's lock): its
#   counter comes from that row and it is stored in the same transaction, so it is on disk
#   before it is sent and no two workers sign two downlinks with one counter;
#   one per (device, alarm counter, kind, code): a second worker asking for the same one, after
#   waiting for the lock, finds it made and makes nothing;
#   the frame is signed by the caller (sign(counter) -> bytes): keys never reach the database;
#   each one made NOTIFYs the channel CHANNEL at commit, so an idle pump in any worker wakes
#   (LISTEN) rather than polls;
#   the pump (downlink_pump_pg.py) of whichever worker claims an unsent one publishes it: a
#   claim is FOR UPDATE SKIP LOCKED with a lease on the database clock, so while it holds no
#   other worker publishes that one; sent (the broker's PUBACK took it) and not taken (PUBACK
#   16, a refusal) are written only while the claim's lease holds; one not taken waits
#   (next_at, doubling from RETRY_S[0] to RETRY_S[1]) and is due again at once when its device
#   is next heard from; a lease run out (a worker died mid-publish) lets another worker
#   publish the same stored bytes again, which the wearable's replay window makes harmless;
#   receipts confirm and new frames re-offer as on SQLite (downlinks.py), in the ingest
#   batch's transaction, which holds the device's row; a re-offer NOTIFYs too; one offered
#   again from RESIGN_BELOW or more below the device's latest downlink counter is signed
#   afresh first (downlinks.py's rules: the wearable's window would refuse its first counter),
#   with the batch's next counter from the device's row, the same transaction; its old
#   counters (downlink_old_counters, deleted with it) still name it for a receipt. After a
#   restore with PostgreSQL's own tools (its counters moved past the backup's) the first
#   re-offer signs each unconfirmed one afresh so;
#   BLE stays edge-local: no BLE path here.
import secrets
import time
from collections import namedtuple

import psycopg

import vigil_protocol as p

from .downlinks import ACK, REOFFER_S, Downlink, signed_afresh, to_sign_again
from .errors import StoreError

CHANNEL = "vigil_downlinks"
RETRY_S = (5.0, 300.0)  # service.DOWNLINK_RETRY_S

Made = namedtuple("Made", "id device_id counter ref kind code frame")
# A downlink a pump claimed: the stored one, and the claim's lease token.
Claimed = namedtuple("Claimed", Downlink._fields + ("lease",))
_COLUMNS = ("id, device_id, counter, ref, kind, code, frame, created_at, mqtt_sent_at, "
            "ble_sent_at, confirmed_at, offers")

SCHEMA = """
CREATE TABLE IF NOT EXISTS downlinks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices (device_id),
    counter bigint NOT NULL,
    ref bigint NOT NULL,
    kind text NOT NULL,
    code integer NOT NULL,
    frame bytea NOT NULL,
    created_at double precision NOT NULL,
    mqtt_sent_at double precision,
    ble_sent_at double precision,
    confirmed_at double precision,
    offered_at double precision,
    offers integer NOT NULL DEFAULT 0,
    lease text,
    lease_until timestamptz,
    next_at timestamptz,
    retries integer NOT NULL DEFAULT 0,
    UNIQUE (device_id, ref, kind, code),
    UNIQUE (device_id, counter)
);
CREATE INDEX IF NOT EXISTS downlinks_unsent ON downlinks (id) WHERE mqtt_sent_at IS NULL;
CREATE TABLE IF NOT EXISTS downlink_old_counters (
    device_id bigint NOT NULL,
    counter bigint NOT NULL,
    downlink_id bigint NOT NULL REFERENCES downlinks (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, counter)
);
"""


def make(store, device_id, ref, kind, code, sign, at):
    """Inside store.locked([device_id]): the signed downlink, stored (and notified at commit);
    None if it exists already."""
    conn = store._conn
    found = conn.execute("SELECT 1 FROM downlinks WHERE device_id = %s AND ref = %s AND "
                         "kind = %s AND code = %s", (device_id, ref, kind, code)).fetchone()
    if found is not None:
        return None
    counter = store.take_downlink_counter(device_id)
    frame = sign(counter)
    row = conn.execute("INSERT INTO downlinks (device_id, counter, ref, kind, code, frame, "
                       "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                       (device_id, counter, ref, kind, code, frame, at)).fetchone()
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "%d" % device_id))
    return Made(row[0], device_id, counter, ref, kind, code, frame)


class PostgresDownlinks:
    """DELIVERED acks and responder actions on PostgreSQL, with downlinks.Downlinks' methods
    for the pipeline (confirm, reoffer) and those of a pump (claim, sent, not_taken)."""

    def __init__(self, store, registry, pipeline=None):
        self.store = store
        self.registry = registry
        self.lease = secrets.token_hex(16)  # this one's claims (release() on stopping)
        self.pipeline = pipeline  # its state's counters sign a re-offer afresh
        if pipeline is not None:
            pipeline.downlinks = self  # receipts confirm, and contact re-offers, in its batches

    def make(self, device_id, ref, kind, code, at):
        """Inside the caller's transaction: the signed downlink, stored with its device's next
        counter (the device's row locked first); None if it exists already."""
        locked = self.store.lock([device_id]).get(device_id)
        if locked is None:
            raise StoreError("no device %08x in the store" % device_id)
        key = self.registry.key(locked)
        cls = p.Ack if kind == ACK else p.Action

        def sign(counter):
            return p.encode(cls(device_id, counter, ref, code), key, locked.protocol)

        made = make(self.store, device_id, ref, kind, code, sign, at)
        if made is None:
            return None
        return Downlink(made.id, device_id, made.counter, ref, kind, code, made.frame, at,
                        None, None, None, 0)

    def find(self, device_id, ref, kind, code):
        """Inside the caller's transaction: the stored downlink for (device, alarm, kind,
        code), or None (the actions API's answer to an action taken already)."""
        row = self.store._conn.execute(
            "SELECT %s FROM downlinks WHERE device_id = %%s AND ref = %%s AND kind = %%s AND "
            "code = %%s" % _COLUMNS, (device_id, ref, kind, code)).fetchone()
        return None if row is None else Downlink(*row)

    def confirm(self, device_id, counter, at):
        """In the ingest batch: a receipt names this downlink (by its counter, or one it had
        before it was signed afresh). The Downlink if that was news, else None."""
        conn = self.store._conn
        row = conn.execute(
            "UPDATE downlinks SET confirmed_at = %%s WHERE device_id = %%s AND counter = %%s AND "
            "confirmed_at IS NULL RETURNING %s" % _COLUMNS, (at, device_id, counter)).fetchone()
        if row is None:
            row = conn.execute(
                "UPDATE downlinks SET confirmed_at = %%s WHERE confirmed_at IS NULL AND id = "
                "(SELECT downlink_id FROM downlink_old_counters WHERE device_id = %%s AND "
                "counter = %%s) RETURNING %s" % _COLUMNS, (at, device_id, counter)).fetchone()
        return None if row is None else Downlink(*row)

    def reoffer(self, device_id, now):
        """In the ingest batch: the device was heard from. Its downlinks sent but not confirmed
        whose wait is over go out again (sent marks cleared), and those the broker did not
        take are due at once; the pumps are woken. Returns how many were offered again."""
        conn = self.store._conn
        due = [Downlink(*row) for row in conn.execute(
            "SELECT %s FROM downlinks WHERE device_id = %%(d)s AND confirmed_at IS NULL AND "
            "(mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL) AND "
            "%%(now)s - coalesce(offered_at, least(mqtt_sent_at, ble_sent_at)) >= "
            "least(%%(wait)s * power(2, least(offers, 20)), %%(most)s) ORDER BY id FOR UPDATE"
            % _COLUMNS,
            {"now": now, "d": device_id, "wait": REOFFER_S[0], "most": REOFFER_S[1]})]
        if due and self.pipeline is not None:
            state = self.pipeline.state
            stale = to_sign_again(due, state.last_downlink_counter(device_id),
                                  self._superseded)
            if stale:
                device = state.device(device_id)
                key = self.registry.key(device)
                for d in stale:
                    self._sign_again(d, state.next_downlink_counter(device_id), key,
                                     device.protocol)
        again = conn.execute(
            "UPDATE downlinks SET mqtt_sent_at = NULL, ble_sent_at = NULL, offered_at = %s, "
            "offers = offers + 1, lease = NULL, lease_until = NULL, next_at = NULL "
            "WHERE id = ANY(%s)", (now, [d.id for d in due])).rowcount if due else 0
        due = conn.execute("UPDATE downlinks SET next_at = NULL, retries = 0 WHERE "
                           "device_id = %s AND mqtt_sent_at IS NULL AND next_at IS NOT NULL",
                           (device_id,)).rowcount
        if again or due:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "%d" % device_id))
        return again

    def _superseded(self, d):
        """The wearable has confirmed a downlink of the same alarm made after `d`: it is
        past it (downlinks.superseded)."""
        return self.store._conn.execute(
            "SELECT 1 FROM downlinks WHERE device_id = %s AND ref = %s AND id > %s AND "
            "confirmed_at IS NOT NULL LIMIT 1", (d.device_id, d.ref, d.id)).fetchone() is not None

    def _sign_again(self, d, counter, key, protocol):
        """In the ingest batch: `d` signed afresh with `counter` (the batch's, from the
        device's locked row), its old counter kept as one that names it."""
        frame = signed_afresh(d, counter, key, protocol, "offered again")
        conn = self.store._conn
        conn.execute("INSERT INTO downlink_old_counters (device_id, counter, downlink_id) "
                     "VALUES (%s, %s, %s)", (d.device_id, d.counter, d.id))
        conn.execute("UPDATE downlinks SET counter = %s, frame = %s WHERE id = %s",
                     (counter, frame, d.id))

    # -- the pump's (each its own transaction, on the pump's own connection) --
    def claim(self, lease_s, limit=200):
        """Lease up to `limit` unsent, unconfirmed downlinks that are due, oldest first."""
        lease = self.lease
        try:
            with self.store.conn.transaction():
                rows = self.store._conn.execute(
                    "WITH c AS (SELECT id FROM downlinks WHERE mqtt_sent_at IS NULL AND "
                    "confirmed_at IS NULL AND (next_at IS NULL OR next_at <= clock_timestamp()) "
                    "AND (lease_until IS NULL OR lease_until < clock_timestamp()) ORDER BY id "
                    "LIMIT %%s FOR UPDATE SKIP LOCKED) UPDATE downlinks d SET lease = %%s, "
                    "lease_until = clock_timestamp() + make_interval(secs => %%s) FROM c "
                    "WHERE d.id = c.id RETURNING %s" % ", ".join("d." + c.strip() for c in
                                                                 _COLUMNS.split(",")),
                    (limit, lease, lease_s)).fetchall()
        except psycopg.Error as exc:
            raise StoreError("cannot claim downlinks: %s" % _first_line(exc)) from None
        return sorted((Claimed(*(tuple(r) + (lease,))) for r in rows), key=lambda d: d.id)

    def sent(self, item, at):
        """The broker's PUBACK took it: True if this claim still held it (and it is marked)."""
        return self._while_leased("mqtt_sent_at = %s, retries = 0", (at,), item)

    def not_taken(self, item):
        """The broker did not take it: due again after the next wait. True if still held."""
        return self._while_leased(
            "next_at = clock_timestamp() + make_interval(secs => least(%s * power(2, retries), "
            "%s)), retries = retries + 1", (RETRY_S[0], RETRY_S[1]), item)

    def _while_leased(self, change, args, item):
        try:
            with self.store.conn.transaction():
                return self.store._conn.execute(
                    "UPDATE downlinks SET %s, lease = NULL, lease_until = NULL WHERE id = %%s "
                    "AND lease = %%s AND lease_until >= clock_timestamp()" % change,
                    args + (item.id, item.lease)).rowcount == 1
        except psycopg.Error as exc:
            raise StoreError("cannot update downlink %d: %s" % (item.id, _first_line(exc))
                             ) from None

    def prune(self, cutoff):
        """Inside retention's transaction: delete downlinks made before `cutoff` that went
        out (confirmed, or sent): only one still waiting for its wearable stays."""
        return self.store._conn.execute(
            "DELETE FROM downlinks WHERE created_at < %s AND (confirmed_at IS NOT NULL OR "
            "mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL)", (cutoff,)).rowcount

    def release(self):
        """Give back the downlinks this pump still holds (it is stopping): any pump's at once.
        Commits; returns how many."""
        try:
            with self.store.conn.transaction():
                return self.store._conn.execute(
                    "UPDATE downlinks SET lease = NULL, lease_until = NULL WHERE lease = %s",
                    (self.lease,)).rowcount
        except psycopg.Error as exc:
            raise StoreError("cannot release downlinks: %s" % _first_line(exc)) from None

    def all(self, device_id=None):
        sql, args = "SELECT %s FROM downlinks" % _COLUMNS, ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = %s", (device_id,)
        rows = self.store.conn.execute(sql + " ORDER BY id", args).fetchall()
        self.store._conn.rollback()
        return [Downlink(*row) for row in rows]


class Listener:
    """LISTEN on CHANNEL, on a connection of its own (autocommit): wait() returns True when a
    downlink was made or re-offered since, or when the connection was lost and made again
    (what was notified meanwhile is lost: the pump looks anyway)."""

    def __init__(self, url, reconnect_s=1.0):
        self.url = url
        self.reconnect_s = reconnect_s
        self._conn = None

    def wait(self, timeout):
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._connect()
                return True
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                return True
            return False
        except psycopg.Error:
            self.close()
            time.sleep(self.reconnect_s)
            return True

    def _connect(self):
        self.close()
        self._conn = psycopg.connect(self.url, autocommit=True)
        self._conn.execute("LISTEN %s" % CHANNEL)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
