# The pipeline's storage interface: each device's state as one ingest batch sees it, with a
# backend per store. This one is SQLite's (store.py and registry.py hold the SQL); PostgreSQL's
# is device_state_pg.py. The pipeline (pipeline.py) is the same on both.
#
# The interface, in the order a batch uses it (one transaction for the whole batch):
#   begin(device_ids)      open the batch's transaction; the devices are those of its topics
#   device(id)             the registry row (registry.Device), None for an unknown device
#   raise_protocol(device, version)   a verified frame of a higher version: the device's
#                          downlinks are sealed in it from now on; returns the row as it is now
#   verdict(frame)         NEW, RETRANSMISSION or LATE (new, from below the replay window,
#                          never stored), or raises p.StaleCounter / p.CounterReuse; a frame
#                          record()ed in the batch counts for the batch's later frames
#   top(id)                the highest counter recorded (0: none)
#   first_arrival_above(id, counter)  when the first frame above `counter` arrived (None)
#   contact(id) / set_contact(contact)   the device's store.Contact (None: never heard)
#   record(frame, payload, now)       the frame stored
#   next_downlink_counter(id) / last_downlink_counter(id)   RECEIVED acks' counters
#   finish()               what the batch changed written, the transaction still open
#   commit() / rollback()  commit() rolls back and raises on failure
#   forget()               after a failed commit, or a change made outside the pipeline
#   errors                 the exceptions that mean the store failed (not a bug)
#
# Rules of this backend: one process owns the database, so it keeps what it read (replay
# windows, contacts, downlink counters, registry rows) between batches and writes contacts
# and counters once per batch; registry rows are dropped whenever another connection (the
# CLI) has committed (PRAGMA data_version).
import sqlite3

import vigil_protocol as p

NEW = p.NEW
RETRANSMISSION = p.RETRANSMISSION
LATE = "late"  # new, though below the replay window
WINDOW_SIZE = 64


def first_floor(device, counter):
    """A device's history floor when its first frame (`counter`) is accepted (SPEC section
    7): where the unit's counters started, when the registry knows it; else that counter less
    the window."""
    if device.counter_floor is None:
        return max(0, counter - WINDOW_SIZE)
    return max(0, device.counter_floor - 1)


class SqliteDeviceState:
    errors = (sqlite3.Error,)

    def __init__(self, store, registry):
        self.store = store
        self.registry = registry
        self._windows = {}  # device_id -> ReplayWindow, rebuilt from the store on first use
        self._devices = {}  # device_id -> registry row, dropped whenever the registry changes
        self._registry_version = None
        self._downlink = {}  # device_id -> last downlink counter used
        self._used = {}  # device_id -> last downlink counter allocated in this batch
        self._contacts = {}  # device_id -> Contact or None
        self._touched = set()  # devices whose contact changed in this batch

    def begin(self, device_ids):
        # data_version moves when another connection (the `vigil gateway device` commands)
        # commits: then the cached registry rows may be stale.
        version = self.store.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._registry_version:
            self._devices.clear()
            self._registry_version = version
        self._used = {}
        self._touched = set()
        self.store.begin()

    def device(self, device_id):
        device = self._devices.get(device_id)
        if device is None:
            device = self.registry.get(device_id)
            if device is not None:
                self._devices[device_id] = device
        return device

    def raise_protocol(self, device, version):
        self.registry.raise_protocol(device.device_id, version)
        device = self._devices[device.device_id] = device._replace(protocol=version)
        return device

    def verdict(self, frame):
        try:
            return self._window(frame.device_id).check(frame.counter, frame.tag)
        except p.StaleCounter:
            # Below the window the store decides: it holds every frame accepted from the floor up.
            stored = self.store.frame_tag(frame.device_id, frame.counter)
            if stored == frame.tag:
                return RETRANSMISSION
            if stored is not None:
                raise p.CounterReuse("counter %d already used by another frame"
                                     % frame.counter) from None
            contact = self.contact(frame.device_id)
            if contact is None or frame.counter <= contact.history_floor:
                raise
            return LATE

    def top(self, device_id):
        return self._window(device_id).top

    def first_arrival_above(self, device_id, counter):
        return self.store.first_arrival_above(device_id, counter)

    def contact(self, device_id):
        if device_id not in self._contacts:
            self._contacts[device_id] = self.store.contact(device_id)
        return self._contacts[device_id]

    def set_contact(self, contact):
        self._contacts[contact.device_id] = contact
        self._touched.add(contact.device_id)

    def record(self, frame, payload, now):
        self.store.insert_frame(frame.device_id, frame.counter, frame.tag, frame.NAME,
                                getattr(frame, "kind_name", None),
                                getattr(frame, "ref", None) or None, payload, now)
        self._window(frame.device_id).record(frame.counter, frame.tag)

    def last_downlink_counter(self, device_id):
        last = self._downlink.get(device_id)
        return self.store.downlink_counter(device_id) if last is None else last

    def next_downlink_counter(self, device_id):
        counter = self.last_downlink_counter(device_id) + 1
        self._downlink[device_id] = self._used[device_id] = counter
        return counter

    def allocate_downlink(self, device_id):
        """A fresh downlink counter outside a batch (DELIVERED acks, responder actions), in
        the caller's transaction: written at once. If that transaction fails, forget()."""
        counter = self.last_downlink_counter(device_id) + 1
        self._downlink[device_id] = counter
        self.store.set_downlink_counter(device_id, counter)
        return counter

    def finish(self):
        for device_id, counter in self._used.items():
            self.store.set_downlink_counter(device_id, counter)
        for device_id in self._touched:
            self.store.write_contact(self._contacts[device_id])

    def commit(self):
        self.store.conn.commit_or_rollback()

    def rollback(self):
        self.store.rollback()

    def forget(self):
        self._windows.clear()
        self._downlink.clear()
        self._contacts.clear()

    def _window(self, device_id):
        window = self._windows.get(device_id)
        if window is None:
            window = p.ReplayWindow(WINDOW_SIZE)
            for counter, tag in reversed(self.store.recent_tags(device_id, WINDOW_SIZE)):
                window.record(counter, tag)
            self._windows[device_id] = window
        return window
