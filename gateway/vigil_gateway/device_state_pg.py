# The pipeline's device state on PostgreSQL (device_state.py's interface; store_pg.py's
# family): many workers ingest at once, so every batch reads each device's state under its row
# lock and keeps none of it once the batch is over.
#
# Rules:
#   begin() locks the rows of every device the batch's topics name, in device-id order (two
#   batches naming the same devices cannot deadlock); a worker that waited for a device then
#   reads what the worker before it committed (READ COMMITTED);
#   device(), contact() and the downlink counter come from that row; the registry row with
#   them, so a device revoked a moment ago is refused by the next batch;
#   replay verdicts come from the unique key (device, direction, counter) inside the same
#   transaction: the tag stored for the counter, or none; nothing stored at or below the
#   device's history floor is stale_counter; anything else is new (late or not);
#   the downlink counter is taken from the row and written back to it before the commit, so
#   no two workers sign two downlinks of one device with one counter;
#   finish() writes each row the batch changed once; a device heard from gets its supervision
#   deadline from the database clock (workers' clocks may differ);
#   what is read about a device stays valid only until the batch ends: begin() forgets it.
import psycopg

import vigil_protocol as p

from .device_state import LATE, NEW, RETRANSMISSION, WINDOW_SIZE, first_floor
from .errors import StoreError
from .registry import Device
from .store import Contact

_UP = 0  # store_pg.UP


class PostgresDeviceState:
    errors = (psycopg.Error, StoreError)

    def __init__(self, store):
        self.store = store
        self._begin_batch({})

    def _execute(self, sql, args):
        # the connection the batch began on, never a new one (it would hold none of it)
        return self.store._conn.execute(sql, args)

    def _begin_batch(self, rows):
        self._rows = rows  # device_id -> store_pg.Locked, read under the lock
        self._devices = {}  # device_id -> Device, as this batch changed it (protocol)
        self._contacts = {}  # device_id -> Contact set by this batch
        self._counters = {}  # device_id -> last downlink counter taken in this batch
        self._top = {}  # device_id -> highest counter stored, as of this batch

    def begin(self, device_ids):
        self.store.conn  # (connected again if the last connection was lost)
        self._begin_batch(self.store.lock(device_ids))

    def device(self, device_id):
        device = self._devices.get(device_id)
        if device is None:
            row = self._rows.get(device_id)
            if row is None:
                return None
            device = self._devices[device_id] = Device(*row[:len(Device._fields)])
        return device

    def raise_protocol(self, device, version):
        self.store.raise_protocol(device.device_id, version)
        device = self._devices[device.device_id] = device._replace(protocol=version)
        return device

    def verdict(self, frame):
        device_id = frame.device_id
        stored, top = self._execute(
            "SELECT (SELECT tag FROM frames WHERE device_id = %(d)s AND direction = %(up)s "
            "AND counter = %(c)s), (SELECT max(counter) FROM frames WHERE device_id = %(d)s "
            "AND direction = %(up)s)", {"d": device_id, "up": _UP, "c": frame.counter}
        ).fetchone()
        self._top.setdefault(device_id, top or 0)
        if stored is not None:
            if bytes(stored) == bytes(frame.tag):
                return RETRANSMISSION
            raise p.CounterReuse("counter %d already used by another frame" % frame.counter)
        contact = self.contact(device_id)
        floor = (first_floor(self.device(device_id), frame.counter) if contact is None
                 else contact.history_floor)
        if frame.counter <= floor:
            raise p.StaleCounter("counter %d is at or below the device's history floor (%d)"
                                 % (frame.counter, floor))
        return LATE if frame.counter <= self._top[device_id] - WINDOW_SIZE else NEW

    def top(self, device_id):
        if device_id not in self._top:
            self._top[device_id] = self._execute(
                "SELECT coalesce(max(counter), 0) FROM frames WHERE device_id = %s AND "
                "direction = %s", (device_id, _UP)).fetchone()[0]
        return self._top[device_id]

    def first_arrival_above(self, device_id, counter):
        return self._execute(
            "SELECT min(received_at) FROM frames WHERE device_id = %s AND direction = %s AND "
            "counter > %s", (device_id, _UP, counter)).fetchone()[0]

    def contact(self, device_id):
        contact = self._contacts.get(device_id)
        if contact is None:
            row = self._rows.get(device_id)
            if row is None or row.last_seen is None:
                return None
            contact = Contact(device_id, row.last_seen, row.checkin_interval_s,
                              row.lost_incident, row.history_floor)
        return contact

    def set_contact(self, contact):
        self._contacts[contact.device_id] = contact

    def record(self, frame, payload, now):
        # A plain INSERT: under the device's lock no other transaction stores its frames, so
        # a conflict here would be a bug, and fails the batch.
        self._execute(
            "INSERT INTO frames (device_id, direction, counter, tag, type, kind, ref, payload, "
            "received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (frame.device_id, _UP, frame.counter, frame.tag, frame.NAME,
             getattr(frame, "kind_name", None), getattr(frame, "ref", None) or None, payload,
             now))
        self._top[frame.device_id] = max(self.top(frame.device_id), frame.counter)

    def last_downlink_counter(self, device_id):
        last = self._counters.get(device_id)
        return self._rows[device_id].downlink_counter if last is None else last

    def next_downlink_counter(self, device_id):
        counter = self._counters[device_id] = self.last_downlink_counter(device_id) + 1
        return counter

    def allocate_downlink(self, device_id):
        raise StoreError("on PostgreSQL a stored downlink takes its counter under its "
                         "device's lock (downlinks_pg.make)")

    def finish(self):
        store = self.store
        for device_id in sorted(set(self._counters) | set(self._contacts)):
            row = self._rows[device_id]
            counter = self._counters.get(device_id, row.downlink_counter)
            contact = self._contacts.get(device_id)
            if contact is None:
                self._execute("UPDATE devices SET downlink_counter = %s WHERE "
                                   "device_id = %s", (counter, device_id))
                continue
            self._execute(
                "UPDATE devices SET downlink_counter = %s, history_floor = %s, last_seen = %s, "
                "checkin_interval_s = %s, lost_incident = %s, deadline = clock_timestamp() + "
                "make_interval(secs => coalesce(%s, interval_s, %s) + %s) WHERE device_id = %s",
                (counter, contact.history_floor, contact.last_seen, contact.interval_s,
                 contact.lost_incident, contact.interval_s, store.default_interval_s,
                 store.grace_s, device_id))

    def commit(self):
        self.store.commit()

    def rollback(self):
        self.store.rollback()

    def forget(self):
        self._begin_batch({})
