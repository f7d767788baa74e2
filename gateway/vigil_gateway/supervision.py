# Supervision: a device silent past its check-in interval plus a grace period has lost contact.
#
# Rules:
#   only devices heard from at least once are supervised (a unit on a shelf is not "lost");
#   the interval is the one the device announced in its last check-in, else the registry's
#   per-device interval, else the configured default;
#   revoked devices are not supervised;
#   contacts are written by the pipeline once per batch (it caches them): check() runs between
#   batches, on the same event loop, and makes the pipeline forget its cache when it writes;
#   one LOST_CONTACT incident at a time per device: raised once when overdue, closed by the
#   device's next verified frame (the pipeline records the return).
from .incidents import Incidents
from .registry import ACTIVE


class Supervisor:
    def __init__(self, store, registry, default_interval_s, grace_s, pipeline=None):
        self.store = store
        self.pipeline = pipeline  # its cached contacts are dropped when supervision writes
        self.registry = registry
        self.default_interval_s = default_interval_s
        self.grace_s = grace_s
        # the pipeline's incidents when there is one: they feed the forwarding outbox
        self.incidents = pipeline.incidents if pipeline is not None else Incidents(store)

    def deadline(self, contact, device):
        interval = contact.interval_s or device.interval_s or self.default_interval_s
        return contact.last_seen + interval + self.grace_s

    def overdue(self, now):
        """(contact, device) pairs silent past their deadline, with no open LOST_CONTACT."""
        devices = {d.device_id: d for d in self.registry.devices()}
        found = []
        for contact in self.store.contacts():
            device = devices.get(contact.device_id)
            if device is None or device.state != ACTIVE or contact.lost_incident is not None:
                continue
            if now > self.deadline(contact, device):
                found.append((contact, device))
        return found

    def check(self, now):
        """Raise LOST_CONTACT for every overdue device; return the incidents raised."""
        raised = []
        overdue = self.overdue(now)
        if not overdue:
            return raised
        with self.store.transaction():
            for contact, device in overdue:
                detail = "silent since %.0f (deadline %.0f)" % (contact.last_seen,
                                                                self.deadline(contact, device))
                incident = self.incidents.raise_lost_contact(device.device_id, now, detail)
                self.store.set_lost_incident(device.device_id, incident.id)
                raised.append(incident)
        if self.pipeline is not None:
            self.pipeline.forget()
        return raised
