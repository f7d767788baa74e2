# The durable store: every accepted frame, incidents with their audit trail, the gateway's
# downlink counters and each device's last contact. SQLite in WAL mode (see db.py).
#
# Rules:
#   one row per (device, counter) in `frames`: a frame is stored once, whatever the link
#   delivers twice; its tag stays so a retransmission older than the replay window is still
#   recognised (SPEC §7);
#   a downlink counter is written in the same transaction as the frames whose acks use it, and
#   acks leave only after that transaction commits, so no counter is ever sent twice;
#   callers group many frames into one transaction (group commit): one fsync for the batch.
from collections import namedtuple

from .db import Transaction
from .lateness import Lateness

Incident = namedtuple("Incident", "id device_id counter kind state opened_at updated_at")
AuditEntry = namedtuple("AuditEntry", "incident_id at event detail")
Contact = namedtuple("Contact", "device_id last_seen interval_s lost_incident history_floor")
EarlyTap = namedtuple("EarlyTap", "device_id counter ref received_at")


_INCIDENT_COLUMNS = "id, device_id, counter, kind, state, opened_at, updated_at"


class Store:
    def __init__(self, conn):
        self.conn = conn  # its tables made by migrations.py when the database was opened

    def transaction(self):
        return Transaction(self.conn)

    def begin(self):
        """Open a transaction the caller commits itself (the pipeline's batches)."""
        self.conn.execute("BEGIN IMMEDIATE")

    def rollback(self):
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    # -- frames --
    def insert_frame(self, device_id, counter, tag, type_name, kind, ref, payload, at):
        self.conn.execute("INSERT INTO frames (device_id, counter, tag, type, kind, ref, payload, "
                          "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (device_id, counter, tag, type_name, kind, ref, payload, at))

    def frame_tag(self, device_id, counter):
        row = self.conn.execute("SELECT tag FROM frames WHERE device_id = ? AND counter = ?",
                                (device_id, counter)).fetchone()
        return row[0] if row else None

    def recent_tags(self, device_id, limit):
        """(counter, tag) of the device's `limit` highest counters, highest first."""
        return self.conn.execute("SELECT counter, tag FROM frames WHERE device_id = ? "
                                 "ORDER BY counter DESC LIMIT ?", (device_id, limit)).fetchall()

    def first_arrival_above(self, device_id, counter):
        """When the first frame with a higher counter than `counter` arrived (None: none)."""
        return self.conn.execute("SELECT min(received_at) FROM frames WHERE device_id = ? "
                                 "AND counter > ?", (device_id, counter)).fetchone()[0]

    def prune_frames(self, cutoff, keep):
        """Delete frames received before `cutoff`, except each device's `keep` highest
        counters (the replay window is rebuilt from them), and raise each device's history
        floor past what went: a copy of a deleted frame is then refused as stale, never taken
        for a late new one. Inside a transaction. Returns the number of frames deleted."""
        floors = self.conn.execute(
            "SELECT f.device_id, max(f.counter) FROM frames f JOIN (SELECT device_id, "
            "max(counter) AS top FROM frames GROUP BY device_id) t ON t.device_id = f.device_id "
            "WHERE f.received_at < ? AND f.counter <= t.top - ? GROUP BY f.device_id",
            (cutoff, keep)).fetchall()
        deleted = 0
        for device_id, floor in floors:
            self.conn.execute("UPDATE contact SET history_floor = max(history_floor, ?) "
                              "WHERE device_id = ?", (floor, device_id))
            deleted += self.conn.execute("DELETE FROM frames WHERE device_id = ? AND "
                                         "counter <= ? AND received_at < ?",
                                         (device_id, floor, cutoff)).rowcount
        return deleted

    def frame_count(self, device_id=None):
        if device_id is None:
            return self.conn.execute("SELECT count(*) FROM frames").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM frames WHERE device_id = ?",
                                 (device_id,)).fetchone()[0]

    # -- downlink counters --
    def downlink_counter(self, device_id):
        """The last downlink counter used for the device (0: none yet)."""
        row = self.conn.execute("SELECT last_counter FROM downlink_counters WHERE device_id = ?",
                                (device_id,)).fetchone()
        return row[0] if row else 0

    def set_downlink_counter(self, device_id, counter):
        self.conn.execute(
            "INSERT INTO downlink_counters (device_id, last_counter) VALUES (?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET "
            "last_counter = max(last_counter, excluded.last_counter)", (device_id, counter))

    # -- incidents --
    def create_incident(self, device_id, counter, kind, state, at):
        cur = self.conn.execute("INSERT INTO incidents (device_id, counter, kind, state, "
                                "opened_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                                (device_id, counter, kind, state, at, at))
        return Incident(cur.lastrowid, device_id, counter, kind, state, at, at)

    def create_alarm_incident(self, device_id, counter, kind, state, at):
        """create_incident() for an alarm, or None when that alarm has an incident already."""
        cur = self.conn.execute("INSERT OR IGNORE INTO incidents (device_id, counter, kind, state, "
                                "opened_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                                (device_id, counter, kind, state, at, at))
        if cur.rowcount == 0:
            return None
        return Incident(cur.lastrowid, device_id, counter, kind, state, at, at)

    def set_lateness(self, incident_id, lateness):
        self.conn.execute("INSERT OR REPLACE INTO incident_lateness VALUES (?, ?, ?, ?, ?)",
                          (incident_id,) + tuple(lateness))

    def lateness(self, incident_id):
        """The incident's alarm's Lateness, if it arrived late (lateness.py); else None."""
        row = self.conn.execute("SELECT raised_at, late_s, basis, held_up_to_s FROM "
                                "incident_lateness WHERE incident_id = ?",
                                (incident_id,)).fetchone()
        return Lateness(*row) if row else None

    def incident(self, incident_id):
        row = self.conn.execute("SELECT %s FROM incidents WHERE id = ?" % _INCIDENT_COLUMNS,
                                (incident_id,)).fetchone()
        return Incident(*row) if row else None

    def incident_for_alarm(self, device_id, counter):
        row = self.conn.execute("SELECT %s FROM incidents WHERE device_id = ? AND counter = ?"
                                % _INCIDENT_COLUMNS, (device_id, counter)).fetchone()
        return Incident(*row) if row else None

    def set_incident_state(self, incident_id, state, at):
        self.conn.execute("UPDATE incidents SET state = ?, updated_at = ? WHERE id = ?",
                          (state, at, incident_id))

    def add_audit(self, incident_id, at, event, detail=""):
        self.conn.execute("INSERT INTO audit (incident_id, at, event, detail) VALUES (?, ?, ?, ?)",
                          (incident_id, at, event, detail))

    def incidents(self, device_id=None, states=None):
        sql = "SELECT %s FROM incidents" % _INCIDENT_COLUMNS
        where, args = [], []
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        if states:
            where.append("state IN (%s)" % ",".join("?" * len(states)))
            args.extend(states)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [Incident(*row) for row in self.conn.execute(sql + " ORDER BY id", args)]

    def audit(self, incident_id):
        return [AuditEntry(*row) for row in self.conn.execute(
            "SELECT incident_id, at, event, detail FROM audit WHERE incident_id = ? ORDER BY id",
            (incident_id,))]

    def count_incidents_by_state(self):
        return dict(self.conn.execute("SELECT state, count(*) FROM incidents GROUP BY state"))

    # -- DOUBLE_TAPs that came before the alarm they answer --
    def add_early_tap(self, device_id, counter, ref, at):
        self.conn.execute("INSERT OR IGNORE INTO early_taps (device_id, counter, ref, "
                          "received_at) VALUES (?, ?, ?, ?)", (device_id, counter, ref, at))

    def take_early_taps(self, device_id, ref):
        """The early taps naming alarm `ref` of the device, oldest first, removed."""
        rows = [EarlyTap(*r) for r in self.conn.execute(
            "SELECT device_id, counter, ref, received_at FROM early_taps WHERE device_id = ? "
            "AND ref = ? ORDER BY counter", (device_id, ref))]
        if rows:
            self.conn.execute("DELETE FROM early_taps WHERE device_id = ? AND ref = ?",
                              (device_id, ref))
        return rows

    def early_taps_due(self, received_before):
        """(device_id, ref) of every alarm named by an early tap received before the time."""
        return self.conn.execute("SELECT DISTINCT device_id, ref FROM early_taps WHERE "
                                 "received_at <= ? ORDER BY device_id, ref",
                                 (received_before,)).fetchall()

    def early_tap_devices(self):
        return {r[0] for r in self.conn.execute("SELECT DISTINCT device_id FROM early_taps")}

    # -- contact (supervision) --
    def write_contact(self, contact):
        """Write a device's contact row (the pipeline keeps them and writes once per batch)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO contact (device_id, last_seen, interval_s, lost_incident, "
            "history_floor) VALUES (?, ?, ?, ?, ?)", tuple(contact))

    def contact(self, device_id):
        row = self.conn.execute("SELECT device_id, last_seen, interval_s, lost_incident, "
                                "history_floor FROM contact WHERE device_id = ?", (device_id,)).fetchone()
        return Contact(*row) if row else None

    def contacts(self):
        return [Contact(*row) for row in self.conn.execute(
            "SELECT device_id, last_seen, interval_s, lost_incident, history_floor FROM contact")]

    def set_lost_incident(self, device_id, incident_id):
        self.conn.execute("UPDATE contact SET lost_incident = ? WHERE device_id = ?",
                          (incident_id, device_id))
