# The receiving side's replay/retransmission window, one per (device, direction).
#
# Rules:
#   counter above every counter seen            -> NEW (the window moves up)
#   counter inside the window, not seen before  -> NEW (links may reorder: BLE and MQTT copies)
#   counter inside the window, seen, same tag   -> RETRANSMISSION (acknowledge again, create nothing)
#   counter inside the window, seen, other tag  -> CounterReuse (rejected)
#   counter at or below top - size             -> StaleCounter (rejected)
# The tag stands for the frame's bytes: the MAC covers every byte, so one counter with one tag
# is one frame.
#
# check() decides without changing anything; record() remembers a frame once the caller has
# made it durable. A gateway persists first, then records, then acknowledges.
import vigil_protocol as protocol  # errors are looked up when raised (see errors.py)

NEW = "new"
RETRANSMISSION = "retransmission"
# A wearable's window for its downlinks (firmware seen.py; SPEC section 7): a downlink whose
# counter is this many or more below the highest it has taken is refused as stale. A gateway
# offering a stored downlink again signs it afresh before its counter can fall so far
# (gateway downlinks.py).
DOWNLINK_WINDOW = 32


class ReplayWindow:
    def __init__(self, size=64, top=0):
        if size < 1:
            raise protocol.LocalProtocolError("window size must be at least 1")
        self.size = size
        self.top = top  # highest counter recorded
        self._tags = {}  # counter -> tag, for counters in (top - size, top]

    def check(self, counter, tag):
        if counter > self.top:
            return NEW
        if counter <= self.top - self.size:
            raise protocol.StaleCounter("counter %d is below the window (%d..%d)"
                                        % (counter, self.top - self.size + 1, self.top))
        seen = self._tags.get(counter)
        if seen is None:
            return NEW
        if seen == tag:
            return RETRANSMISSION
        raise protocol.CounterReuse("counter %d already used by another frame" % counter)

    def record(self, counter, tag):
        if counter > self.top:
            self.top = counter
            floor = counter - self.size
            old = []
            for c in self._tags:
                if c <= floor:
                    old.append(c)
            for c in old:
                del self._tags[c]
        if counter > self.top - self.size:
            self._tags[counter] = bytes(tag)

    def accept(self, counter, tag):
        """check() then record() a NEW frame: for callers with nothing to persist."""
        verdict = self.check(counter, tag)
        if verdict == NEW:
            self.record(counter, tag)
        return verdict

    def seen(self):
        """(counter, tag) pairs held, oldest first: enough to rebuild the window later."""
        return sorted(self._tags.items())
