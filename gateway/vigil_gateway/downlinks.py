# Durable downlinks beyond the RECEIVED ack: DELIVERED acks and responder actions.
#
# Rules:
#   a downlink is made (signed, with a fresh counter from the device's downlink counter) and
#   stored in the same transaction as the change that causes it, so its counter is on disk
#   before it is sent and never reused;
#   one downlink per (device, alarm counter, stage or action): asking twice makes nothing new;
#   it waits until the wearable is reachable: published to MQTT (QoS 1 to the device's down
#   topic; the broker keeps it in the wearable's persistent session) once the gateway is
#   connected, and written over BLE whenever the wearable is connected by BLE and has not had it
#   that way yet; a BLE copy is offered for BLE_FOR_S after it was made;
#   `mqtt_sent_at` is set when the broker's PUBACK took it, `ble_sent_at` when the wearable
#   answered the write (service.py): what has neither is sent again, the same stored bytes;
#   the wearable's replay window makes a second copy (MQTT and BLE) harmless;
#   a v2 wearable answers each stored downlink with a receipt (SPEC section 3): `confirmed_at`.
#     One sent and not confirmed is offered again - its sent marks cleared, so the same bytes
#     go out on MQTT and BLE - when the device is next heard from at least REOFFER_S[0] after
#     it was last offered, the wait doubling to REOFFER_S[1]: a power cut of the broker and
#     the gateway together (the broker's memory lost) loses nothing.
#   the wearable takes a downlink only if its counter is new and above its window (the
#     DOWNLINK_WINDOW counters below the highest it has taken, SPEC section 7), so a stored
#     downlink offered again with its first counter would be refused for good once the device
#     has been sent that many newer ones (a wearable back with a full outbox gets an ack for
#     every alarm; a restored gateway's counters jump by backup.DOWNLINK_MARGIN). One offered
#     again when its counter is RESIGN_BELOW or more below the device's latest counter is
#     signed afresh instead: a new counter taken as every counter is (from the device's
#     downlink counter, in the same transaction, never reused), the same ack or action. Half
#     the window is kept in reserve for the downlinks that may reach the wearable before it;
#     should more than that go ahead of it, the next offer signs it afresh again;
#   the counters a downlink had before (downlink_old_counters) still name it: a receipt for
#     one of them (sent before the new signature reached the wearable) confirms it too;
#   taking the same ack or action twice is a no-op on the wearable: an event its alarm's
#     state is already at or past changes nothing and shows nothing (firmware alarms.py,
#     TRANSITIONS: RECEIVED, DELIVERED, ACKNOWLEDGED, PROMPT_DOUBLE_TAP and HELP_DISPATCHED
#     each leave their own state unchanged, and a closed alarm is forgotten), with one
#     exception: a PROMPT_DOUBLE_TAP taken in HELP_DISPATCHED prompts again. So a downlink of
#     an alarm a later-made downlink of which the wearable has confirmed is not signed
#     afresh: the wearable is past it (and a prompt would take it back); such a one keeps its
#     bytes, and is refused as stale or taken as a repeat, as before;
#   after a restore (restored()), every stored downlink the restored gateway will send again -
#     a v2 device's unconfirmed ones, any device's never sent - is signed afresh above the
#     moved counter, in the restore's transaction, and a v2 device's go out at once.
import logging
from collections import namedtuple

import vigil_protocol as p

from . import logs
from .registry import REVOKED, device_hex

ACK = "ack"
ACTION = "action"
BLE_FOR_S = 24 * 3600
REOFFER_S = (10.0, 3600.0)
RESIGN_BELOW = p.DOWNLINK_WINDOW // 2

log = logging.getLogger("vigil_gateway.downlinks")

Downlink = namedtuple("Downlink", "id device_id counter ref kind code frame created_at "
                                  "mqtt_sent_at ble_sent_at confirmed_at offers")

_COLUMNS = ("id, device_id, counter, ref, kind, code, frame, created_at, mqtt_sent_at, "
            "ble_sent_at, confirmed_at, offers")


class Downlinks:
    def __init__(self, conn, registry, pipeline):
        self.conn = conn
        self.registry = registry
        self.pipeline = pipeline  # owns the downlink counters (allocate_downlink)
        pipeline.downlinks = self  # receipts confirm, and contact re-offers, in its batches

    def make(self, device_id, ref, kind, code, at):
        """Inside a transaction: the signed downlink, stored; None if it exists already."""
        if self.find(device_id, ref, kind, code) is not None:
            return None
        device = self.registry.get(device_id)
        key = self.registry.key(device)
        counter = self.pipeline.allocate_downlink(device_id)
        cls = p.Ack if kind == ACK else p.Action
        frame = p.encode(cls(device_id, counter, ref, code), key, device.protocol)
        cur = self.conn.execute(
            "INSERT INTO downlinks (device_id, counter, ref, kind, code, frame, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (device_id, counter, ref, kind, code, frame, at))
        return Downlink(cur.lastrowid, device_id, counter, ref, kind, code, frame, at, None, None,
                        None, 0)

    def find(self, device_id, ref, kind, code):
        row = self.conn.execute("SELECT %s FROM downlinks WHERE device_id = ? AND ref = ? AND "
                                "kind = ? AND code = ?" % _COLUMNS,
                                (device_id, ref, kind, code)).fetchone()
        return Downlink(*row) if row else None

    def unsent_mqtt(self, limit=200, after=0):
        """Downlinks no PUBACK has confirmed yet, oldest first, from id `after` on."""
        return [Downlink(*r) for r in self.conn.execute(
            "SELECT %s FROM downlinks WHERE mqtt_sent_at IS NULL AND id > ? ORDER BY id "
            "LIMIT ?" % _COLUMNS, (after, limit))]

    def unsent_ble(self, device_ids, now):
        if not device_ids:
            return []
        ids = sorted(device_ids)
        return [Downlink(*r) for r in self.conn.execute(
            "SELECT %s FROM downlinks WHERE ble_sent_at IS NULL AND created_at > ? AND "
            "device_id IN (%s) ORDER BY id" % (_COLUMNS, ",".join("?" * len(ids))),
            [now - BLE_FOR_S] + ids)]

    def mark(self, downlink_id, path, at):
        column = "mqtt_sent_at" if path == "mqtt" else "ble_sent_at"
        self.conn.execute("UPDATE downlinks SET %s = ? WHERE id = ?" % column, (at, downlink_id))

    def confirm(self, device_id, counter, at):
        """A receipt names this downlink (by its counter, or one it had before it was signed
        again): the wearable has it. Returns the Downlink if that was news, else None."""
        row = self.conn.execute("SELECT %s FROM downlinks WHERE device_id = ? AND counter = ? "
                                "AND confirmed_at IS NULL" % _COLUMNS,
                                (device_id, counter)).fetchone()
        if row is None:
            row = self.conn.execute(
                "SELECT %s FROM downlinks WHERE confirmed_at IS NULL AND id = (SELECT "
                "downlink_id FROM downlink_old_counters WHERE device_id = ? AND counter = ?)"
                % _COLUMNS, (device_id, counter)).fetchone()
        if row is None:
            return None
        self.conn.execute("UPDATE downlinks SET confirmed_at = ? WHERE id = ?", (at, row[0]))
        return Downlink(*row)._replace(confirmed_at=at)

    def reoffer(self, device_id, now):
        """Inside the pipeline's batch: the device was heard from. Its downlinks sent but not
        confirmed whose wait is over are to be sent again (their sent marks cleared), each
        signed afresh first if its counter may have fallen below the wearable's window (with
        the batch's next counters). Returns how many."""
        due = [Downlink(*r) for r in self.conn.execute(
            "SELECT %s FROM downlinks WHERE device_id = ? AND confirmed_at IS NULL AND "
            "(mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL) AND "
            "? - coalesce(offered_at, min(coalesce(mqtt_sent_at, ble_sent_at), "
            "coalesce(ble_sent_at, mqtt_sent_at))) >= min(? * (1 << min(offers, 20)), ?) "
            "ORDER BY id" % _COLUMNS, (device_id, now, REOFFER_S[0], REOFFER_S[1]))]
        if not due:
            return 0
        state = self.pipeline.state
        stale = to_sign_again(due, state.last_downlink_counter(device_id),
                              lambda d: superseded(self.conn, d))
        if stale:
            device = state.device(device_id)
            key = self.registry.key(device)
            for d in stale:
                sign_again(self.conn, d, state.next_downlink_counter(device_id), key,
                           device.protocol, "offered again")
        self.conn.executemany(
            "UPDATE downlinks SET mqtt_sent_at = NULL, ble_sent_at = NULL, offered_at = ?, "
            "offers = offers + 1 WHERE id = ?", [(now, d.id) for d in due])
        return len(due)

    def prune(self, cutoff):
        """Delete downlinks made before `cutoff` that went out (confirmed, or sent on a path):
        only one still waiting for its wearable stays; the counters they had before go with
        them."""
        count = self.conn.execute(
            "DELETE FROM downlinks WHERE created_at < ? AND (confirmed_at IS NOT NULL OR "
            "mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL)", (cutoff,)).rowcount
        if count:
            self.conn.execute("DELETE FROM downlink_old_counters WHERE downlink_id NOT IN "
                              "(SELECT id FROM downlinks)")
        return count

    def all(self, device_id=None):
        sql, args = "SELECT %s FROM downlinks" % _COLUMNS, []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args.append(device_id)
        return [Downlink(*r) for r in self.conn.execute(sql + " ORDER BY id", args)]


def to_sign_again(due, latest, is_superseded):
    """Those of `due` (stored downlinks to offer again, in the order they were made) to sign
    afresh: RESIGN_BELOW or more below the device's latest counter - `latest`, and one more
    for each signed afresh before (each takes a counter) - unless is_superseded(d)."""
    stale = []
    for d in due:
        if latest + len(stale) - d.counter >= RESIGN_BELOW and not is_superseded(d):
            stale.append(d)
    return stale


def superseded(conn, d):
    """Whether the wearable has confirmed a downlink of the same alarm made after `d`: its
    alarm is then at or past what `d` would do (see the rules)."""
    return conn.execute("SELECT 1 FROM downlinks WHERE device_id = ? AND ref = ? AND id > ? "
                        "AND confirmed_at IS NOT NULL LIMIT 1",
                        (d.device_id, d.ref, d.id)).fetchone() is not None


def signed_afresh(d, counter, key, protocol, why, logger=log):
    """The frame of downlink `d` (its device_id, kind, ref, code and old counter) signed
    afresh with `counter`, logged as downlink_signed_again; the caller stores it, and keeps
    d.counter as one that names it (both backends, and a restore on PostgreSQL)."""
    cls = p.Ack if d.kind == ACK else p.Action
    frame = p.encode(cls(d.device_id, counter, d.ref, d.code), key, protocol)
    logs.event(logger, logging.INFO, "downlink_signed_again", device=device_hex(d.device_id),
               what="DELIVERED" if d.kind == ACK else p.ACTIONS.get(d.code, str(d.code)),
               ref=d.ref, old_counter=d.counter, counter=counter, why=why)
    return frame


def sign_again(conn, d, counter, key, protocol, why):
    """Inside the caller's transaction: `d` signed afresh with `counter` (a fresh one the
    caller took from the device's downlink counter), its old counter kept as one that names
    it. Returns the Downlink as it is now."""
    frame = signed_afresh(d, counter, key, protocol, why)
    conn.execute("INSERT INTO downlink_old_counters (device_id, counter, downlink_id) "
                 "VALUES (?, ?, ?)", (d.device_id, d.counter, d.id))
    conn.execute("UPDATE downlinks SET counter = ?, frame = ? WHERE id = ?",
                 (counter, frame, d.id))
    return d._replace(counter=counter, frame=frame)


def restored(conn, registry):
    """Inside restore's transaction, after every device's downlink counter was moved past
    the backup's: what the restored gateway will send again is signed afresh above it - a v2
    device's unconfirmed downlinks (their sent marks cleared: they go out at once, and are
    offered again from then on) and any device's never sent - in the order they were made.
    The counters are taken and written here. Returns how many."""
    rows = [Downlink(*r) for r in conn.execute(
        "SELECT %s FROM downlinks d WHERE confirmed_at IS NULL AND ((SELECT protocol FROM "
        "devices WHERE device_id = d.device_id) >= 2 OR (mqtt_sent_at IS NULL AND "
        "ble_sent_at IS NULL)) ORDER BY id" % ", ".join("d." + c.strip() for c in
                                                       _COLUMNS.split(",")))]
    counters = dict(conn.execute("SELECT device_id, last_counter FROM downlink_counters"))
    count = 0
    for d in rows:
        device = registry.get(d.device_id)
        if device is None or device.state == REVOKED or superseded(conn, d):
            continue
        counter = counters[d.device_id] = counters.get(d.device_id, 0) + 1
        conn.execute("INSERT INTO downlink_counters (device_id, last_counter) VALUES (?, ?) "
                     "ON CONFLICT (device_id) DO UPDATE SET last_counter = excluded.last_counter",
                     (d.device_id, counter))
        sign_again(conn, d, counter, registry.key(device), device.protocol, "restored")
        if device.protocol >= 2:
            conn.execute("UPDATE downlinks SET mqtt_sent_at = NULL, ble_sent_at = NULL, "
                         "offered_at = NULL WHERE id = ?", (d.id,))
        count += 1
    return count
