# The alarm lifecycle on the wearable, as a table.
#
# Rules:
#   states only move forward through the table; an event the table does not list for the
#     alarm's state changes nothing and shows nothing (a late RECEIVED after DELIVERED, say)
#   a RECEIVED ack means "the gateway has it", never "help is coming": each pattern claims
#     only what its event proves
#   DURESS: no pattern, ever, for any event; and DURESS alarms are never prompted (the
#     responder must not contact the wearer, so there is nothing to answer)
#   a double tap counts only for an alarm in PROMPTED; it moves the alarm to CONFIRMED and the
#     caller sends DOUBLE_TAP naming the alarm's counter. At any other time it does nothing.
#   RESOLVED closes the alarm; closed alarms are forgotten
#   open alarms are persisted (sealed, atomic) after every change, so a reboot keeps the state
import struct

from vigil_protocol._compat import const
from vigil_protocol.frames import DOUBLE_TAP, DURESS

from .flash import read_sealed, write_atomic

# States and events are small ints (no heap objects on the device); names are for logs.
RAISED = const(0)           # on flash, not yet handed to a link
SENT = const(1)             # handed to a link at least once
RECEIVED = const(2)         # the gateway has it on disk
DELIVERED = const(3)        # a responder backend has it
ACKNOWLEDGED = const(4)     # a responder has taken it
PROMPTED = const(5)         # the responder asks: tap twice if you need help
CONFIRMED = const(6)        # the wearer tapped twice
HELP_DISPATCHED = const(7)
CLOSED = const(8)
STATES = ("raised", "sent", "received", "delivered", "acknowledged", "prompted", "confirmed",
          "help_dispatched", "closed")

# The ack stages and the responder actions follow in the protocol's own order (RECEIVED,
# DELIVERED; ACKNOWLEDGED .. RESOLVED), so a downlink's event is its code plus an offset.
EV_SENT = const(0)
EV_RECEIVED = const(1)       # ack RECEIVED
EV_DELIVERED = const(2)      # ack DELIVERED
EV_ACKNOWLEDGED = const(3)   # action ACKNOWLEDGED
EV_PROMPT = const(4)         # action PROMPT_DOUBLE_TAP
EV_HELP = const(5)           # action HELP_DISPATCHED
EV_RESOLVED = const(6)       # action RESOLVED
EV_DOUBLE_TAP = const(7)     # the wearer tapped twice
_EVENTS = const(8)

# TRANSITIONS[state * 8 + event]: the state the event moves an alarm to, as a digit
# (the numbers above); "-": the event changes nothing and shows nothing. A bytes table, so it
# stays in flash with the code rather than taking heap as a dict would.
#          event: SENT RECEIVED DELIVERED ACKNOWLEDGED PROMPT HELP RESOLVED DOUBLE_TAP
TRANSITIONS = (
    b"1234578-"  # RAISED
    b"-234578-"  # SENT
    b"--34578-"  # RECEIVED
    b"---4578-"  # DELIVERED
    b"----578-"  # ACKNOWLEDGED
    b"-----786"  # PROMPTED
    b"-----78-"  # CONFIRMED
    b"----5-8-"  # HELP_DISPATCHED
    b"--------"  # CLOSED
)
_DIGIT_0 = const(48)  # ord("0")
_NO_CHANGE = const(45)  # ord("-")

# The feedback pattern (names in feedback.PATTERNS) shown on entering each state: each claims
# only what the event that leads there proves. None = show nothing.
PATTERN_NAMES = (None, None, "received", "delivered", "acknowledged", "prompt", "confirmed",
                 "help_dispatched", "resolved")

FILE = "alarms"
_RECORD = ">IBB"  # counter, kind, state


# An open alarm is one small int, kind << 8 | state: MicroPython keeps small ints out of the
# heap, so an open alarm costs its dict slot only (an object each took ~100 bytes, and the
# firmware must hold every alarm raised while out of reach inside its 64 KiB heap).


_ROOM = const(40)  # open alarms the table holds before it ever has to grow


def _presized(n):
    # An empty dict whose table already has room for n keys: deleting keys keeps the table,
    # so alarms raised while out of reach never make it grow into a larger block than a
    # fragmented 64 KiB heap may have just then.
    table = {}
    for i in range(n):
        table[i] = 0
    for i in range(n):
        del table[i]
    return table


class Alarms:
    """The open alarms, their states, and what the wearer may be shown."""

    def __init__(self, flash):
        self.flash = flash
        self.open = _presized(_ROOM)  # counter -> kind << 8 | state
        data = read_sealed(flash, FILE)
        if data:
            for i in range(0, len(data), 6):
                counter, kind, state = struct.unpack_from(_RECORD, data, i)
                self.open[counter] = kind << 8 | state

    def _save(self):
        data = bytearray()
        for counter, alarm in self.open.items():
            data += struct.pack(_RECORD, counter, alarm >> 8, alarm & 0xFF)
        write_atomic(self.flash, FILE, bytes(data))

    def state(self, counter):
        """The state of open alarm `counter`; None once it is closed (or was never open)."""
        alarm = self.open.get(counter)
        return None if alarm is None else alarm & 0xFF

    def listing(self):
        """(counter, kind, state) of every open alarm, oldest first."""
        out = []
        for counter in sorted(self.open):
            out.append((counter, self.open[counter] >> 8, self.open[counter] & 0xFF))
        return out

    def add(self, counter, kind):
        """Open alarm `counter` in RAISED; False for a DOUBLE_TAP, which is an answer, not an
        alarm with a lifecycle of its own."""
        if kind == DOUBLE_TAP:
            return False
        self.open[counter] = kind << 8 | RAISED
        self._save()
        return True

    def any_of_kind(self, kind):
        for alarm in self.open.values():
            if alarm >> 8 == kind:
                return True
        return False

    def pending_kind(self, kind):
        """The counter of an open alarm of `kind` that the gateway has not yet received, or
        None."""
        for counter, alarm in self.open.items():
            if alarm >> 8 == kind and alarm & 0xFF in (RAISED, SENT):
                return counter
        return None

    def prompted(self):
        """The counter of the most recent alarm awaiting the wearer's double tap, or None."""
        best = None
        for counter, alarm in self.open.items():
            if alarm & 0xFF == PROMPTED and (best is None or counter > best):
                best = counter
        return best

    def apply(self, counter, event):
        """Apply `event` to alarm `counter`. Returns the pattern to show, or None."""
        alarm = self.open.get(counter)
        if alarm is None:
            return None
        kind = alarm >> 8
        if kind == DURESS and event in (EV_PROMPT, EV_DOUBLE_TAP):
            return None
        step = TRANSITIONS[(alarm & 0xFF) * _EVENTS + event]
        if step == _NO_CHANGE:
            return None
        state = step - _DIGIT_0
        if state == CLOSED:
            del self.open[counter]
        else:
            self.open[counter] = kind << 8 | state
        self._save()
        return None if kind == DURESS else PATTERN_NAMES[state]
