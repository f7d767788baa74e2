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

RAISED = "raised"              # on flash, not yet handed to a link
SENT = "sent"                  # handed to a link at least once
RECEIVED = "received"          # the gateway has it on disk
DELIVERED = "delivered"        # a responder backend has it
ACKNOWLEDGED = "acknowledged"  # a responder has taken it
PROMPTED = "prompted"          # the responder asks: tap twice if you need help
CONFIRMED = "confirmed"        # the wearer tapped twice
HELP_DISPATCHED = "help_dispatched"
CLOSED = "closed"

# Events: what happened to an alarm.
EV_SENT = "sent"
EV_RECEIVED = "ack RECEIVED"
EV_DELIVERED = "ack DELIVERED"
EV_ACKNOWLEDGED = "action ACKNOWLEDGED"
EV_PROMPT = "action PROMPT_DOUBLE_TAP"
EV_HELP = "action HELP_DISPATCHED"
EV_RESOLVED = "action RESOLVED"
EV_DOUBLE_TAP = "double tap"

# (state, event): (next state, feedback pattern or None)
TRANSITIONS = {
    (RAISED, EV_SENT): (SENT, None),
    (RAISED, EV_RECEIVED): (RECEIVED, "received"),
    (SENT, EV_RECEIVED): (RECEIVED, "received"),
    (RAISED, EV_DELIVERED): (DELIVERED, "delivered"),
    (SENT, EV_DELIVERED): (DELIVERED, "delivered"),
    (RECEIVED, EV_DELIVERED): (DELIVERED, "delivered"),
    (RAISED, EV_ACKNOWLEDGED): (ACKNOWLEDGED, "acknowledged"),
    (SENT, EV_ACKNOWLEDGED): (ACKNOWLEDGED, "acknowledged"),
    (RECEIVED, EV_ACKNOWLEDGED): (ACKNOWLEDGED, "acknowledged"),
    (DELIVERED, EV_ACKNOWLEDGED): (ACKNOWLEDGED, "acknowledged"),
    (RAISED, EV_PROMPT): (PROMPTED, "prompt"),
    (SENT, EV_PROMPT): (PROMPTED, "prompt"),
    (RECEIVED, EV_PROMPT): (PROMPTED, "prompt"),
    (DELIVERED, EV_PROMPT): (PROMPTED, "prompt"),
    (ACKNOWLEDGED, EV_PROMPT): (PROMPTED, "prompt"),
    (HELP_DISPATCHED, EV_PROMPT): (PROMPTED, "prompt"),
    (PROMPTED, EV_DOUBLE_TAP): (CONFIRMED, "confirmed"),
    (RAISED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (SENT, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (RECEIVED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (DELIVERED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (ACKNOWLEDGED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (PROMPTED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (CONFIRMED, EV_HELP): (HELP_DISPATCHED, "help_dispatched"),
    (RAISED, EV_RESOLVED): (CLOSED, "resolved"),
    (SENT, EV_RESOLVED): (CLOSED, "resolved"),
    (RECEIVED, EV_RESOLVED): (CLOSED, "resolved"),
    (DELIVERED, EV_RESOLVED): (CLOSED, "resolved"),
    (ACKNOWLEDGED, EV_RESOLVED): (CLOSED, "resolved"),
    (PROMPTED, EV_RESOLVED): (CLOSED, "resolved"),
    (CONFIRMED, EV_RESOLVED): (CLOSED, "resolved"),
    (HELP_DISPATCHED, EV_RESOLVED): (CLOSED, "resolved"),
}

STATES = (RAISED, SENT, RECEIVED, DELIVERED, ACKNOWLEDGED, PROMPTED, CONFIRMED,
          HELP_DISPATCHED, CLOSED)
FILE = "alarms"
_RECORD = ">IBB"  # counter, kind, state index


class Alarm:
    def __init__(self, counter, kind, state=RAISED):
        self.counter = counter
        self.kind = kind
        self.state = state

    def __repr__(self):
        return "<alarm %d kind %d %s>" % (self.counter, self.kind, self.state)


class Alarms:
    """The open alarms, their states, and what the wearer may be shown."""

    def __init__(self, flash):
        self.flash = flash
        self.open = {}
        data = read_sealed(flash, FILE)
        if data:
            for i in range(0, len(data), 6):
                counter, kind, state = struct.unpack_from(_RECORD, data, i)
                self.open[counter] = Alarm(counter, kind, STATES[state])

    def _save(self):
        data = b"".join(struct.pack(_RECORD, a.counter, a.kind, STATES.index(a.state))
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
        step = TRANSITIONS.get((alarm.state, event))
        if step is None:
            return None
        alarm.state, pattern = step
        if alarm.state == CLOSED:
            del self.open[counter]
        self._save()
        return None if alarm.kind == DURESS else pattern
