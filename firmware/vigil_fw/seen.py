# The downlinks this wearable has taken, kept on flash, so a downlink captured on the air or at
# the broker is refused as a replay after a reboot too (the window is no longer RAM only).
#
# Rules:
#   one sealed record, written atomically: top (4 bytes) then (counter 4, tag 8) per downlink
#     held in the window
#   a NEW downlink is recorded here right after its effect (outbox entry removed, alarm state
#     saved). A power cut between the two can let that same downlink be taken once more after
#     the reboot, and taking it again is a no-op: removing an outbox entry twice changes
#     nothing, and an event applied to the state it produced changes nothing (alarms.py).
#     Recording first would instead lose the effect for good whenever the cut fell in
#     between, since the gateway re-offers a stored downlink with the same bytes.
#   an unreadable record starts an empty window (reported by the caller); the gateway's
#     downlink counters only grow, so nothing older than what it sends next is ever needed
import struct

from vigil_protocol.frames import TAG_LEN
from vigil_protocol.window import DOWNLINK_WINDOW, ReplayWindow

from .flash import read_sealed, write_atomic

FILE = "seen"
_PAIR = TAG_LEN + 4


class SeenDownlinks:
    SIZE = DOWNLINK_WINDOW  # the protocol's: the gateway re-signs what would fall below it

    def __init__(self, flash):
        self.flash = flash
        data = read_sealed(flash, FILE)
        top = 0
        if data and len(data) >= 4 and (len(data) - 4) % _PAIR == 0:
            top = struct.unpack_from(">I", data, 0)[0]
        self.window = ReplayWindow(size=self.SIZE, top=top)
        if top:
            for i in range(4, len(data), _PAIR):
                self.window.record(struct.unpack_from(">I", data, i)[0], data[i + 4:i + _PAIR])

    def check(self, counter, tag):
        return self.window.check(counter, tag)

    def record(self, counter, tag):
        """Remember a downlink that has taken effect, on flash before this returns."""
        self.window.record(counter, tag)
        data = bytearray(struct.pack(">I", self.window.top))
        for seen_counter, seen_tag in self.window.seen():
            data += struct.pack(">I", seen_counter)
            data += seen_tag
        write_atomic(self.flash, FILE, bytes(data))
