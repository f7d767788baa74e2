# Device-side counter reservation: no counter is ever used twice, across any number of reboots.
#
# Rules:
#   flash holds `limit`: every counter below it may have been used.
#   at boot the device starts at `limit` (jumping past any counters lost with the reboot).
#   before using counter c >= the persisted limit, the device persists a new limit c + block.
#   take() refuses to hand out a counter that is not covered by a persisted limit.
# Sans-I/O: the caller reads and writes flash; this object only says what to write and when.
import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

MAX_COUNTER = 0xFFFFFFFF


class CounterReservation:
    def __init__(self, saved_limit=0, block=32):
        if block < 1:
            raise protocol.LocalProtocolError("block must be at least 1")
        if not (0 <= saved_limit <= MAX_COUNTER + 1):
            raise protocol.LocalProtocolError("saved limit out of range")
        self.block = block
        self.next = max(saved_limit, 1)  # counter 0 is reserved
        self.limit = self.next  # nothing is covered until a new limit is persisted

    @property
    def pending_limit(self):
        """The limit to persist before the next take(), or None if the block has room."""
        if self.next < self.limit:
            return None
        if self.next > MAX_COUNTER:
            raise protocol.LocalProtocolError("counters exhausted: provision a new key")
        return min(self.next + self.block, MAX_COUNTER + 1)

    def confirm(self, limit):
        """The caller has persisted `limit` (durably, atomically)."""
        if limit <= self.next:
            raise protocol.LocalProtocolError("persisted limit %d covers no new counter" % limit)
        self.limit = limit

    def take(self):
        if self.next >= self.limit:
            raise protocol.LocalProtocolError("counter %d is not covered by a persisted limit"
                                              % self.next)
        counter = self.next
        self.next += 1
        return counter

    def take_with(self, persist):
        """take(), calling persist(limit) first when a new block must be reserved."""
        limit = self.pending_limit
        if limit is not None:
            persist(limit)
            self.confirm(limit)
        return self.take()
