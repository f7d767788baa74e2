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

from vigil_protocol import DURESS, DOUBLE_TAP

from .flash import read_sealed, write_atomic

# States and events are small ints (no heap objects on the device); names are for logs.
RAISED = 0           # on flash, not yet handed to a link
SENT = 1             # handed to a link at least once
RECEIVED = 2         # the gateway has it on disk
DELIVERED = 3        # a responder backend has it
ACKNOWLEDGED = 4     # a responder has taken it
PROMPTED = 5         # the responder asks: tap twice if you need help
CONFIRMED = 6        # the wearer tapped twice
HELP_DISPATCHED = 7
CLOSED = 8
STATES = ("raised", "sent", "received", "delivered", "acknowledged", "prompted", "confirmed",
          "help_dispatched", "closed")

EV_SENT = 0
EV_RECEIVED = 1       # ack RECEIVED
EV_DELIVERED = 2      # ack DELIVERED
EV_ACKNOWLEDGED = 3   # action ACKNOWLEDGED
EV_PROMPT = 4         # action PROMPT_DOUBLE_TAP
EV_HELP = 5           # action HELP_DISPATCHED
EV_RESOLVED = 6       # action RESOLVED
EV_DOUBLE_TAP = 7     # the wearer tapped twice

# Feedback patterns (names in feedback.PATTERNS); 0 = show nothing.
NOTHING = 0
PATTERN_NAMES = (None, "received", "delivered", "acknowledged", "prompt", "confirmed",
                 "help_dispatched", "resolved")


def _step(state, event):
    return state << 4 | event


# _step(state, event): next state << 4 | pattern index
TRANSITIONS = {
    _step(RAISED, EV_SENT): SENT << 4 | 0,
    _step(RAISED, EV_RECEIVED): RECEIVED << 4 | 1,
    _step(SENT, EV_RECEIVED): RECEIVED << 4 | 1,
    _step(RAISED, EV_DELIVERED): DELIVERED << 4 | 2,
    _step(SENT, EV_DELIVERED): DELIVERED << 4 | 2,
    _step(RECEIVED, EV_DELIVERED): DELIVERED << 4 | 2,
    _step(RAISED, EV_ACKNOWLEDGED): ACKNOWLEDGED << 4 | 3,
    _step(SENT, EV_ACKNOWLEDGED): ACKNOWLEDGED << 4 | 3,
    _step(RECEIVED, EV_ACKNOWLEDGED): ACKNOWLEDGED << 4 | 3,
    _step(DELIVERED, EV_ACKNOWLEDGED): ACKNOWLEDGED << 4 | 3,
    _step(RAISED, EV_PROMPT): PROMPTED << 4 | 4,
    _step(SENT, EV_PROMPT): PROMPTED << 4 | 4,
    _step(RECEIVED, EV_PROMPT): PROMPTED << 4 | 4,
    _step(DELIVERED, EV_PROMPT): PROMPTED << 4 | 4,
    _step(ACKNOWLEDGED, EV_PROMPT): PROMPTED << 4 | 4,
    _step(HELP_DISPATCHED, EV_PROMPT): PROMPTED << 4 | 4,
    _step(PROMPTED, EV_DOUBLE_TAP): CONFIRMED << 4 | 5,
    _step(RAISED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(SENT, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(RECEIVED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(DELIVERED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(ACKNOWLEDGED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(PROMPTED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(CONFIRMED, EV_HELP): HELP_DISPATCHED << 4 | 6,
    _step(RAISED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(SENT, EV_RESOLVED): CLOSED << 4 | 7,
    _step(RECEIVED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(DELIVERED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(ACKNOWLEDGED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(PROMPTED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(CONFIRMED, EV_RESOLVED): CLOSED << 4 | 7,
    _step(HELP_DISPATCHED, EV_RESOLVED): CLOSED << 4 | 7,
}

FILE = "alarms"
_RECORD = ">IBB"  # counter, kind, state


class Alarm:
    def __init__(self, counter, kind, state=RAISED):
        self.counter = counter
        self.kind = kind
        self.state = state

    def __repr__(self):
        return "<alarm %d kind %d %s>" % (self.counter, self.kind, STATES[self.state])


class Alarms:
    """The open alarms, their states, and what the wearer may be shown."""

    def __init__(self, flash):
        self.flash = flash
        self.open = {}
        data = read_sealed(flash, FILE)
        if data:
            for i in range(0, len(data), 6):
                counter, kind, state = struct.unpack_from(_RECORD, data, i)
                self.open[counter] = Alarm(counter, kind, state)

    def _save(self):
        data = b"".join(struct.pack(_RECORD, a.counter, a.kind, a.state)
                        for a in self.open.values())
        write_atomic(self.flash, FILE, data)

    def add(self, counter, kind):
        if kind == DOUBLE_TAP:
            return None  # an answer, not an alarm with a lifecycle of its own
        alarm = Alarm(counter, kind)
        self.open[counter] = alarm
        self._save()
        return alarm

    def pending_kind(self, kind):
        """An open alarm of `kind` that the gateway has not yet received, if any."""
        for alarm in self.open.values():
            if alarm.kind == kind and alarm.state in (RAISED, SENT):
                return alarm
        return None

    def prompted(self):
        """The most recent alarm awaiting the wearer's double tap, or None."""
        best = None
        for alarm in self.open.values():
            if alarm.state == PROMPTED and (best is None or alarm.counter > best.counter):
                best = alarm
        return best

    def apply(self, counter, event):
        """Apply `event` to alarm `counter`. Returns the pattern to show, or None."""
        alarm = self.open.get(counter)
        if alarm is None:
            return None
        if alarm.kind == DURESS and event in (EV_PROMPT, EV_DOUBLE_TAP):
            return None
        step = TRANSITIONS.get(_step(alarm.state, event))
        if step is None:
            return None
        alarm.state = step >> 4
        pattern = PATTERN_NAMES[step & 0xF]
        if alarm.state == CLOSED:
            del self.open[counter]
        self._save()
        return None if alarm.kind == DURESS else pattern
