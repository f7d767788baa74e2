# Uplink counters that never repeat, across any number of reboots and power cuts.
# The protocol's CounterReservation decides what to persist; this file does the persisting.
import struct

from vigil_protocol.counters import CounterReservation

from .flash import read_sealed, write_atomic

FILE = "counter"
_FORMAT = ">Q"  # the limit may be 2**32


def _limit(payload):
    return struct.unpack(_FORMAT, payload)[0]


class CounterStore:
    BLOCK = 32  # counters reserved per flash write: a reboot skips at most this many

    def __init__(self, flash, floor=0):
        """`floor`: no counter below it is used, whatever the flash says (config.counter_floor)."""
        self.flash = flash
        saved = read_sealed(flash, FILE, newest=_limit)
        start = 0 if saved is None else _limit(saved)
        self.reservation = CounterReservation(max(start, floor), self.BLOCK)

    def _persist(self, limit):
        write_atomic(self.flash, FILE, struct.pack(_FORMAT, limit))

    def next(self):
        return self.reservation.take_with(self._persist)
