# The persistent outbox: every raised alarm is on flash before it is first sent, and stays
# there, retransmitted with backoff, until a signed acknowledgement of its counter arrives.
#
# Rules:
#   one entry = one file "ob/<counter, 8 hex digits>" holding the encoded frame, sealed and
#     written atomically (flash.write_atomic); every send reads those exact bytes back
#   at boot: intact entries are loaded (an intact .tmp twin counts: its rename was cut short);
#     torn ones are deleted
#   retransmit after RETRY_FIRST_MS, doubling to RETRY_MAX_MS, +-25% jitter
#   an entry leaves only on a verified ack naming its counter
#   bounded at CAPACITY entries; when full, a new alarm may replace the oldest entry of an
#     EVICTABLE kind; SOS, DURESS, FALL and DOUBLE_TAP are never evicted. Check-ins never
#     enter the outbox.
import random

from vigil_protocol.frames import HEADER_LEN, LOW_BATTERY, NO_MOTION, peek

from .clock import ticks_add, ticks_diff, ticks_ms
from .flash import TMP, read_sealed, unseal, write_atomic

EVICTABLE = (LOW_BATTERY, NO_MOTION)


class Entry:
    # The frame itself stays on flash (Outbox.frame reads it for each send): a full outbox
    # in RAM would otherwise hold ~2.4 KB of frames on a heap that has ~4 KB to spare.
    def __init__(self, counter, kind):
        self.counter = counter
        self.kind = kind
        self.attempts = 0
        self.next_try = ticks_ms()  # due at once


def _path(counter):
    return "ob/%08x" % counter


def _order(entry):
    return -1 if entry is None else entry.counter  # empty slots first


class Outbox:
    CAPACITY = 24
    RETRY_FIRST_MS = 2000
    RETRY_MAX_MS = 60000

    def __init__(self, flash):
        self.flash = flash
        flash.mkdir("ob")
        # Fixed slots, allocated once at boot: a dict that grows while alarms pile up (out of
        # reach) needs a larger contiguous block each time, which a fragmented 64 KiB heap
        # may not have just when the wearer needs it.
        self.slots: list = [None] * self.CAPACITY  # Entry or None
        bases = set()
        for n in flash.listdir("ob"):
            bases.add(n[:-len(TMP)] if n.endswith(TMP) else n)
        for base in sorted(bases):
            name = "ob/" + base
            frame = read_sealed(flash, name)
            if frame is None:  # torn before it was whole: it was never sent
                flash.remove(name)
                flash.remove(name + TMP)
                continue
            if unseal(flash.read(name)) != frame or flash.read(name + TMP) is not None:
                write_atomic(flash, name, frame)  # finish what a power cut interrupted
            # More entries than slots only if a firmware with a larger CAPACITY wrote them:
            # the rest stay on flash and load at a later boot, once these are acknowledged.
            if len(self) < self.CAPACITY:
                counter = peek(frame).counter
                self.slots[self.slots.index(None)] = Entry(counter, frame[HEADER_LEN])

    def __len__(self):
        return self.CAPACITY - self.slots.count(None)

    def has(self, counter):
        return self._find(counter) is not None

    def _find(self, counter):
        for i in range(self.CAPACITY):
            entry = self.slots[i]
            if entry is not None and entry.counter == counter:
                return i
        return None

    def add(self, counter, kind, frame):
        """Put an encoded alarm on flash: True once it is durable, False when the outbox is
        full and nothing may be evicted for it."""
        if len(self) >= self.CAPACITY:
            victim = None
            for entry in self.oldest_first():
                if entry.kind in EVICTABLE:
                    victim = entry
                    break
            if victim is None or kind in EVICTABLE:
                return False
            self.remove(victim.counter)
        write_atomic(self.flash, _path(counter), frame)
        self.slots[self.slots.index(None)] = Entry(counter, kind)
        return True

    def frame(self, entry):
        """The exact bytes stored for `entry` (None if flash no longer reads back intact)."""
        return read_sealed(self.flash, _path(entry.counter))

    def remove(self, counter):
        """The gateway acknowledged `counter`: stop retransmitting it."""
        i = self._find(counter)
        if i is not None:
            self.slots[i] = None
            name = _path(counter)
            self.flash.remove(name)
            self.flash.remove(name + TMP)
            return True
        return False

    def oldest_first(self):
        """The entries in counter order. The slots are sorted in place and walked, so no list
        is built each round (a list of every entry, made while the heap is at its fullest,
        is exactly the block that may not be there)."""
        self.slots.sort(key=_order)
        for entry in self.slots:
            if entry is not None:
                yield entry

    def due(self, now=None):
        now = ticks_ms() if now is None else now
        for entry in self.oldest_first():
            if ticks_diff(now, entry.next_try) >= 0:
                yield entry

    def sent(self, entry, now=None):
        """`entry` went out on a link: schedule its retransmission."""
        now = ticks_ms() if now is None else now
        entry.attempts += 1
        delay = min(self.RETRY_FIRST_MS << min(entry.attempts - 1, 16), self.RETRY_MAX_MS)
        delay += (random.getrandbits(16) * (delay // 2)) // 65536 - delay // 4
        entry.next_try = ticks_add(now, delay)
