# Retention: what the gateway keeps, and for how long ([store] retain_days; 0 keeps all).
#
# Rules:
#   frames older than the retention go, but never a device's WINDOW highest (its replay
#     window is rebuilt from them) and never without raising its history floor past them, so
#     a copy of a deleted frame is refused as stale, not taken for a late new alarm (SPEC §7);
#   incident events delivered before it go from the forwarding outbox, and with them (SQLite)
#     the DC-09 sequence numbers they took: SQLite gives a new outbox row the id of a deleted
#     one when the highest rows went (INTEGER PRIMARY KEY, no AUTOINCREMENT), and a new event
#     must take the next number, never the one a pruned event of that id was sent with
#     (forward_dc09.py; an ARC tells a repeat from a new event by it); downlinks made before
#     it go once they went out (one still waiting for its wearable stays);
#   incidents, their audit trail and the registry are never pruned: they are the record;
#   one transaction a round, at most once an hour (PRUNE_EVERY_S).
import logging

from . import logs

DAY_S = 86400.0
PRUNE_EVERY_S = 3600.0

log = logging.getLogger("vigil_gateway.retention")


class Retention:
    def __init__(self, store, outbox, downlinks, retain_days, window):
        self.store = store
        self.outbox = outbox
        self.downlinks = downlinks
        self.retain_s = retain_days * DAY_S
        self.window = window
        self._last = None

    def due(self, now):
        return self.retain_s > 0 and (self._last is None or now - self._last >= PRUNE_EVERY_S)

    def prune(self, now):
        """Delete what is older than the retention; returns {what: rows deleted}."""
        self._last = now
        cutoff = now - self.retain_s
        with self.store.transaction():
            gone = {"frames": self.store.prune_frames(cutoff, self.window),
                    "events": self.outbox.prune_delivered(cutoff),  # (and their sequences)
                    "downlinks": self.downlinks.prune(cutoff)}
        if any(gone.values()):
            logs.event(log, logging.INFO, "pruned", older_than_days=self.retain_s / DAY_S,
                       **gone)
        return gone
