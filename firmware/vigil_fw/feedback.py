# What the wearer feels and sees. Each pattern claims only what its event proves.
#
# Rules:
#   a pattern is an LED colour and (vibrate, pause) pulses, stored as bytes to keep them out
#     of the heap: byte 0 = colour index, then pairs in units of 10 ms
#   "received" (the gateway has it) must never feel like "help is coming"
#   the prompt pattern is distinct from every other one: the wearer must recognise it; so is
#     the man-down pre-alarm's, which the wearer must know to cancel
#   duress: nothing. alarms.py returns no pattern for a DURESS alarm, and Feedback.show()
#     itself refuses to queue while any duress alarm is open (and drops what was queued
#     before one opened)
from .clock import Flag

COLOURS = (None, "red", "amber", "green", "blue")

PATTERNS = {
    "sos_armed": b"\x00\x3c\x00",                 # held long enough: release now
    "sos_cancelled": b"\x00\x08\x0c\x08\x00",
    "sos_raised": b"\x01\x1e\x14\x1e\x00",
    "received": b"\x02\x0f\x00",                  # one short buzz: the gateway has it
    "delivered": b"\x02\x0f\x0f\x0f\x00",         # two: the responders have it
    "acknowledged": b"\x03\x28\x00",              # a responder has taken it
    "prompt": b"\x04\x06\x09\x06\x09\x06\x3c\x06\x09\x06\x09\x06\x00",  # 3 + 3 flutters
    "confirmed": b"\x04\x0f\x0a\x28\x00",         # your double tap was sent
    "help_dispatched": b"\x03\x50\x00",
    "resolved": b"\x00\x0a\x00",
    "low_battery": b"\x02\x05\x0a\x05\x00",
    # man-down: you seem to have fallen, or not moved: press SOS to cancel (three long buzzes,
    # red, again every few seconds until cancelled or raised)
    "prealarm": b"\x01\x2d\x14\x2d\x14\x2d\x00",
}


def pulses(pattern):
    """(vibrate_ms, pause_ms) pairs of a pattern."""
    out = []
    for i in range(1, len(pattern) - 1, 2):
        out.append((pattern[i] * 10, pattern[i + 1] * 10))
    return out


class Feedback:
    """Plays patterns on the board's vibration motor and LED, in its own task: show() only
    queues the pattern, so no input or link waits while the motor runs. Records the last
    PLAYED_KEPT patterns it played (for the console and tests; a record that grew forever
    would leak)."""

    PLAYED_KEPT = 16
    _QUEUED = 4  # patterns waiting to be played; an older one gives way to a newer one

    def __init__(self, board):
        self.board = board
        self.played = []
        self.queued = []
        self.duress_open = False  # kept up to date by the app while any duress alarm is open
        self.ready = Flag()

    def show(self, name):
        if name is None or self.duress_open:
            return
        if len(self.queued) >= self._QUEUED:
            self.queued.pop(0)
        self.queued.append(name)
        self.ready.set()

    async def play_queued(self):
        while self.queued:
            name = self.queued.pop(0)
            if self.duress_open:  # a duress alarm opened since it was queued: nothing at all
                self.queued = []
                return
            if len(self.played) >= self.PLAYED_KEPT:
                self.played.pop(0)
            self.played.append(name)
            pattern = PATTERNS[name]
            await self.board.play(pulses(pattern), COLOURS[pattern[0]])
