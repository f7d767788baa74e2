# The persistent outbox: every raised alarm is on flash before it is first sent, and stays
# there, retransmitted with backoff, until a signed acknowledgement of its counter arrives.
#
# Rules:
#   one entry = one file "ob/<counter, 8 hex digits>" holding the alarm's kind (one byte) and
#     its encoded frame, sealed and written atomically (flash.write_atomic); every send reads
#     those exact frame bytes back. The kind is stored because a v2 frame carries it encrypted;
#     a file written by older firmware holds a v1 frame alone (its first byte is >= 0x10),
#     whose kind is read from the frame
#   at boot: intact entries are loaded (an intact .tmp twin counts: its rename was cut short);
#     torn ones are deleted
#   retransmit after RETRY_FIRST_MS, doubling to RETRY_MAX_MS, +-25% jitter; a link coming up
#     makes every entry due and starts the doubling again
#   an entry leaves only on a verified ack naming its counter
#   fresh[i]: raised since boot and not yet offered to any link (raised_at[i] says when); only
#     such an entry may be sealed again (replace()), since nobody can have seen its frame
#   bounded at CAPACITY entries; when full, a new alarm may replace the oldest entry of an
#     EVICTABLE kind; SOS, DURESS, FALL and DOUBLE_TAP are never evicted. Check-ins never
#     enter the outbox.
#   memory is decided at boot: an entry is a slot in fixed tables (no object per alarm), and
#     frames are read back into one buffer, so a full outbox needs no new block of heap
import random

from vigil_protocol.frames import HEADER_LEN, LOW_BATTERY, MAX_FRAME, NO_MOTION, peek

from .clock import ticks_add, ticks_diff, ticks_ms
from .flash import TMP, crc_ok, write_atomic

EVICTABLE = (LOW_BATTERY, NO_MOTION)


def _path(counter):
    return "ob/%08x" % counter


def _frame_of(record):
    # A kind byte is < 0x10; every frame starts with its version in the high nibble (>= 1).
    return record[1:] if record[0] < 0x10 else record

class Outbox:
    CAPACITY = 24
    RETRY_FIRST_MS = 2000
    RETRY_MAX_MS = 60000

    def __init__(self, flash):
        self.flash = flash
        flash.mkdir("ob")
        n = self.CAPACITY
        # Slot i holds one entry while used[i]. Allocated once, here: tables that grew while
        # alarms pile up (out of reach) would need a larger block each time, which a
        # fragmented heap may not have just when the wearer needs it.
        self.used = bytearray(n)
        self._size = 0
        self.counters = [0] * n  # type: list
        self.kinds = bytearray(n)
        self.attempts = bytearray(n)
        self.next_try = [0] * n  # type: list
        self.fresh = bytearray(n)
        self.raised_at = [0] * n  # type: list
        self._buf = bytearray(1 + MAX_FRAME + 4)  # one sealed record read back from flash
        names = flash.listdir("ob")
        for name in names:
            base = name[:-len(TMP)] if name.endswith(TMP) else name
            if base != name and base in names:
                continue  # handled under the main file's name
            path = "ob/" + base
            record = self._read(path)
            if record is None:  # torn before it was whole: it was never sent
                flash.remove(path)
                flash.remove(path + TMP)
                continue
            # A .tmp twin left behind (the only intact copy, or a rename cut short): finish
            # the write so the entry is one file again.
            if flash.exists(path + TMP):
                write_atomic(flash, path, bytes(record))  # finish what a power cut interrupted
            # More entries than slots only if a firmware with a larger CAPACITY wrote them:
            # the rest stay on flash and load at a later boot, once these are acknowledged.
            if len(self) < n:
                frame = _frame_of(record)
                kind = record[0] if len(frame) < len(record) else frame[HEADER_LEN]
                self._take(peek(frame).counter, kind)

    # -- slots --------------------------------------------------------------------------------

    def __len__(self):
        return self._size

    def _take(self, counter, kind):
        i = 0
        while self.used[i]:
            i += 1
        self.used[i] = 1
        self._size += 1
        self.counters[i] = counter
        self.kinds[i] = kind
        self.attempts[i] = 0
        self.next_try[i] = ticks_ms()  # due at once
        self.fresh[i] = 0
        return i

    def _find(self, counter):
        for i in range(self.CAPACITY):
            if self.used[i] and self.counters[i] == counter:
                return i
        return None

    def has(self, counter):
        return self._find(counter) is not None

    def oldest_first(self):
        """Slot numbers of the entries in counter order (read counters[i], kinds[i]). Walks
        the fixed tables: no list of entries is built while the heap is at its fullest."""
        last = -1
        while True:
            best = -1
            for i in range(self.CAPACITY):
                if self.used[i] and self.counters[i] > last and (
                        best < 0 or self.counters[i] < self.counters[best]):
                    best = i
            if best < 0:
                return
            last = self.counters[best]
            yield best

    # -- flash --------------------------------------------------------------------------------

    def _read(self, path):
        """The payload of the newest intact copy of `path` (a view of the read buffer, valid
        until the next read), or None."""
        for name in (path, path + TMP):
            n = self.flash.read_into(name, self._buf)
            if n >= 4 and crc_ok(self._buf, n):
                return memoryview(self._buf)[:n - 4]
        return None

    def add(self, counter, kind, frame):
        """Put an encoded alarm on flash: True once it is durable, False when the outbox is
        full and nothing may be evicted for it."""
        if len(self) >= self.CAPACITY:
            victim = None
            for i in self.oldest_first():
                if self.kinds[i] in EVICTABLE:
                    victim = self.counters[i]
                    break
            if victim is None or kind in EVICTABLE:
                return False
            self.remove(victim)
        write_atomic(self.flash, _path(counter), bytes((kind,)) + frame)
        i = self._take(counter, kind)
        self.fresh[i] = 1
        self.raised_at[i] = self.next_try[i]
        return True

    def replace(self, i, frame):
        """Seal slot `i`'s alarm again (with its age) before it is first sent: the new bytes
        are on flash, atomically, before any link sees them."""
        write_atomic(self.flash, _path(self.counters[i]), bytes((self.kinds[i],)) + frame)

    def frame(self, i):
        """The exact bytes stored for slot `i` (None if flash no longer reads back intact)."""
        record = self._read(_path(self.counters[i]))
        return None if record is None else bytes(_frame_of(record))

    def remove(self, counter):
        """The gateway acknowledged `counter`: stop retransmitting it."""
        i = self._find(counter)
        if i is None:
            return False
        self.used[i] = 0
        self._size -= 1
        name = _path(counter)
        self.flash.remove(name)
        self.flash.remove(name + TMP)
        return True

    # -- retransmission -----------------------------------------------------------------------

    def due(self, now=None):
        now = ticks_ms() if now is None else now
        for i in self.oldest_first():
            if ticks_diff(now, self.next_try[i]) >= 0:
                yield i

    def wait_ms(self, now=None):
        """How long until the next entry is due (0 if one is), or None when empty."""
        now = ticks_ms() if now is None else now
        soonest = None
        for i in range(self.CAPACITY):
            if self.used[i]:
                left = ticks_diff(self.next_try[i], now)
                if soonest is None or left < soonest:
                    soonest = left
        return None if soonest is None else max(0, soonest)

    def all_due(self, now=None):
        """A link has just come up: every entry may go out at once, and its backoff starts
        again from RETRY_FIRST_MS (a copy sent in the first moments of a BLE connection,
        before the central has subscribed, is lost; the next try must not wait a minute)."""
        now = ticks_ms() if now is None else now
        for i in range(self.CAPACITY):
            self.next_try[i] = now
            self.attempts[i] = 0

    def sent(self, i, now=None):
        """Slot `i` went out on a link: schedule its retransmission."""
        now = ticks_ms() if now is None else now
        attempts = min(self.attempts[i] + 1, 255)
        self.attempts[i] = attempts
        delay = min(self.RETRY_FIRST_MS << min(attempts - 1, 16), self.RETRY_MAX_MS)
        delay += (random.getrandbits(16) * (delay // 2)) // 65536 - delay // 4
        self.next_try[i] = ticks_add(now, delay)
