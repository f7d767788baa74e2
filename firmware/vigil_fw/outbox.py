# The persistent outbox: every raised alarm is on flash before it is first sent, and stays
# there, retransmitted with backoff, until a signed acknowledgement of its counter arrives.
#
# Rules:
#   one entry = one file "ob/<counter, 8 hex digits>" holding the encoded frame, sealed and
#     written atomically (flash.write_atomic); a retransmission resends those exact bytes
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
    def __init__(self, counter, frame):
        self.counter = counter
        self.frame = frame
        self.attempts = 0
        self.next_try = ticks_ms()  # due at once

    @property
    def kind(self):
        # Read from the frame rather than stored: with four attributes an entry's attribute
        # table is 32 bytes smaller, for every queued alarm.
        return self.frame[HEADER_LEN]  # the kind byte


class Outbox:
    CAPACITY = 24
    RETRY_FIRST_MS = 2000
    RETRY_MAX_MS = 60000

    def __init__(self, flash):
        self.flash = flash
        flash.mkdir("ob")
        self.entries = {}
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
            counter = peek(frame).counter
            self.entries[counter] = Entry(counter, frame)

    def __len__(self):
        return len(self.entries)

    def add(self, counter, kind, frame):
        """Put an encoded alarm on flash: True once it is durable, False when the outbox is
        full and nothing may be evicted for it."""
        if len(self.entries) >= self.CAPACITY:
            victim = None
            for entry in self.oldest_first():
                if entry.kind in EVICTABLE:
                    victim = entry
                    break
            if victim is None or kind in EVICTABLE:
                return False
            self.remove(victim.counter)
        write_atomic(self.flash, "ob/%08x" % counter, frame)
        self.entries[counter] = Entry(counter, frame)
        return True

    def remove(self, counter):
        """The gateway acknowledged `counter`: stop retransmitting it."""
        if self.entries.pop(counter, None) is not None:
            name = "ob/%08x" % counter
            self.flash.remove(name)
            self.flash.remove(name + TMP)
            return True
        return False

    def oldest_first(self):
        entries = []
        for counter in sorted(self.entries):
            entries.append(self.entries[counter])
        return entries

    def due(self, now=None):
        now = ticks_ms() if now is None else now
        due = []
        for entry in self.oldest_first():
            if ticks_diff(now, entry.next_try) >= 0:
                due.append(entry)
        return due

    def sent(self, entry, now=None):
        """`entry` went out on a link: schedule its retransmission."""
        now = ticks_ms() if now is None else now
        entry.attempts += 1
        delay = min(self.RETRY_FIRST_MS << min(entry.attempts - 1, 16), self.RETRY_MAX_MS)
        delay += (random.getrandbits(16) * (delay // 2)) // 65536 - delay // 4
        entry.next_try = ticks_add(now, delay)
