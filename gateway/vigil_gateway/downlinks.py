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
from collections import namedtuple

import vigil_protocol as p

ACK = "ack"
ACTION = "action"
BLE_FOR_S = 24 * 3600
REOFFER_S = (10.0, 3600.0)

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
        """A receipt names this downlink: the wearable has it. Returns the Downlink if that
        was news, else None."""
        row = self.conn.execute("SELECT %s FROM downlinks WHERE device_id = ? AND counter = ? "
                                "AND confirmed_at IS NULL" % _COLUMNS,
                                (device_id, counter)).fetchone()
        if row is None:
            return None
        self.conn.execute("UPDATE downlinks SET confirmed_at = ? WHERE id = ?", (at, row[0]))
        return Downlink(*row)._replace(confirmed_at=at)

    def reoffer(self, device_id, now):
        """The device was heard from: its downlinks sent but not confirmed whose wait is over
        are to be sent again (their sent marks cleared). Returns how many."""
        return self.conn.execute(
            "UPDATE downlinks SET mqtt_sent_at = NULL, ble_sent_at = NULL, offered_at = ?, "
            "offers = offers + 1 WHERE device_id = ? AND confirmed_at IS NULL AND "
            "(mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL) AND "
            "? - coalesce(offered_at, min(coalesce(mqtt_sent_at, ble_sent_at), "
            "coalesce(ble_sent_at, mqtt_sent_at))) >= min(? * (1 << min(offers, 20)), ?)",
            (now, device_id, now, REOFFER_S[0], REOFFER_S[1])).rowcount

    def prune(self, cutoff):
        """Delete downlinks made before `cutoff` that went out (confirmed, or sent on a path):
        only one still waiting for its wearable stays."""
        return self.conn.execute(
            "DELETE FROM downlinks WHERE created_at < ? AND (confirmed_at IS NOT NULL OR "
            "mqtt_sent_at IS NOT NULL OR ble_sent_at IS NOT NULL)", (cutoff,)).rowcount

    def all(self, device_id=None):
        sql, args = "SELECT %s FROM downlinks" % _COLUMNS, []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args.append(device_id)
        return [Downlink(*r) for r in self.conn.execute(sql + " ORDER BY id", args)]
