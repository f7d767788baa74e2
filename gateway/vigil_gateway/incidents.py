# Incidents: one per alarm (device, alarm counter), or per lost contact, with a state and a
# timestamped audit trail, all in the store.
#
# Rules (the state machine is the RULES table below; nothing else changes a state):
#   an SOS, DURESS, FALL, NO_MOTION or LOW_BATTERY alarm raises a new incident, state `open`;
#   a DOUBLE_TAP names the alarm it answers (its `ref`): that incident records "wearer confirms
#     they need help" and goes to `needs_help` - even from `closed`, since a wearer asking for
#     help is never ignored;
#   an alarm that arrived late (lateness.py) raises its incident all the same, marked late: its
#     Lateness is stored with it before the raise is forwarded, and the audit says why;
#   a DOUBLE_TAP naming an alarm not here (yet) is kept (early_taps): applied when that alarm
#     arrives; if it has not arrived within the wait (incidents.double_tap_wait_s), the tap
#     raises an incident of its own for that alarm's counter, kind SOS (a wearer is asked to
#     tap twice only in the SOS procedure, never on duress), at once `needs_help`; the alarm
#     arriving later joins that incident (audited `alarm_arrived`), it raises nothing new;
#   supervision raises LOST_CONTACT for a silent device (one open at a time per device); the
#     device's next verified frame records "contact restored" and closes it;
#   the wearable's receipt for a responder's prompt (it verified the prompt, and plays it as
#     it does): `prompt_played`, audited on an open incident, no state change;
#   a frame with a location (a check-in, a double tap) from a device with open alarms: each
#     open alarm incident records `location_updated` when the location is news to it
#     (location.is_news) and keeps it as its location; audited and forwarded, no state change;
#     a LOST_CONTACT incident takes none (the frame closes it);
#   a responder's actions (the actions API): `acknowledged`, `prompt_double_tap` and
#     `help_dispatched` are audited on an open incident and change no state; `resolved` closes it;
#     none applies to a closed incident;
#   an event with no rule for the incident's state is written to the audit trail as ignored;
#   every applied event is handed to the forwarding outbox (when there is one) in the same
#     transaction: the outbox keeps those it forwards (outbox.FORWARDED_EVENTS).
from . import lateness
from .location import from_record, is_news

OPEN = "open"
NEEDS_HELP = "needs_help"
CLOSED = "closed"
STATES = (OPEN, NEEDS_HELP, CLOSED)

RAISED = "raised"
WEARER_CONFIRMS = "wearer_confirms"
CONTACT_RESTORED = "contact_restored"
RESOLVED = "resolved"
ACKNOWLEDGED = "acknowledged"
PROMPT_DOUBLE_TAP = "prompt_double_tap"
HELP_DISPATCHED = "help_dispatched"
PROMPT_PLAYED = "prompt_played"
LOCATION_UPDATED = "location_updated"

LOST_CONTACT = "LOST_CONTACT"
ALARM_ARRIVED = "alarm_arrived"  # audit only: an alarm whose incident its double tap raised
EARLY_TAP_KIND = "SOS"
CONFIRMS_TEXT = "wearer confirms they need help"

# (state, event) -> (next state, what the audit trail says)
RULES = {
    (None, RAISED): (OPEN, "raised"),
    (OPEN, WEARER_CONFIRMS): (NEEDS_HELP, CONFIRMS_TEXT),
    (NEEDS_HELP, WEARER_CONFIRMS): (NEEDS_HELP, CONFIRMS_TEXT),
    (CLOSED, WEARER_CONFIRMS): (NEEDS_HELP, CONFIRMS_TEXT + " (incident reopened)"),
    (OPEN, CONTACT_RESTORED): (CLOSED, "contact restored"),
    (OPEN, RESOLVED): (CLOSED, "resolved"),
    (NEEDS_HELP, RESOLVED): (CLOSED, "resolved"),
    (OPEN, ACKNOWLEDGED): (OPEN, "responder acknowledged"),
    (NEEDS_HELP, ACKNOWLEDGED): (NEEDS_HELP, "responder acknowledged"),
    (OPEN, PROMPT_DOUBLE_TAP): (OPEN, "responder asks the wearer to tap twice"),
    (NEEDS_HELP, PROMPT_DOUBLE_TAP): (NEEDS_HELP, "responder asks the wearer to tap twice"),
    (OPEN, PROMPT_PLAYED): (OPEN, "the wearable played the prompt to tap twice"),
    (NEEDS_HELP, PROMPT_PLAYED): (NEEDS_HELP, "the wearable played the prompt to tap twice"),
    (OPEN, HELP_DISPATCHED): (OPEN, "help dispatched"),
    (NEEDS_HELP, HELP_DISPATCHED): (NEEDS_HELP, "help dispatched"),
    (OPEN, LOCATION_UPDATED): (OPEN, "location updated"),
    (NEEDS_HELP, LOCATION_UPDATED): (NEEDS_HELP, "location updated"),
}


class Incidents:
    """Applies RULES to incidents in the store; call inside the store's transaction."""

    def __init__(self, store, outbox=None):
        self.store = store
        self.outbox = outbox
        self._early = store.early_tap_devices()  # devices with a DOUBLE_TAP kept for its alarm

    def raise_alarm(self, device_id, counter, kind, at, detail="", location=None, late=None):
        """location: where the wearer was (a location.Location), when the alarm said;
        late: its Lateness when it arrived late."""
        state, text = RULES[(None, RAISED)]
        if late is not None:
            detail = _join(lateness.describe(late), detail)
        incident = self.store.create_alarm_incident(device_id, counter, kind, state, at)
        if incident is None:  # its double tap came first and raised it (promote_early_taps)
            incident = self.store.incident_for_alarm(device_id, counter)
            if late is not None:
                self.store.set_lateness(incident.id, late)
            self.store.add_audit(incident.id, at, ALARM_ARRIVED, _join(
                "the %s alarm itself arrived (after its double tap raised this incident)" % kind,
                detail))
            return incident
        self.store.add_audit(incident.id, at, RAISED, _join(text, detail))
        if late is not None:
            self.store.set_lateness(incident.id, late)
        if self.outbox is not None:
            if location is not None:
                self.outbox.set_location(incident.id, location)
            self.outbox.enqueue(self.store, incident, RAISED, at)
        if device_id in self._early:
            for tap in self.store.take_early_taps(device_id, counter):
                incident = self.apply(incident, WEARER_CONFIRMS, at, "double tap, frame %d "
                                      "(it came before its alarm)" % tap.counter)
        return incident

    def early_tap(self, device_id, tap_counter, ref, at):
        """Keep a DOUBLE_TAP naming alarm `ref`, which has no incident (yet): applied when the
        alarm arrives, or raised by promote_early_taps() once it has waited too long."""
        self.store.add_early_tap(device_id, tap_counter, ref, at)
        self._early.add(device_id)

    def early_waiting(self):
        """True while some device has a DOUBLE_TAP kept for its alarm."""
        return bool(self._early)

    def promote_early_taps(self, now, wait_s):
        """Inside a transaction: every alarm named by a DOUBLE_TAP kept for wait_s or longer,
        and still not here, gets an incident raised from that tap (kind EARLY_TAP_KIND, the
        alarm's counter, so responders' actions name the alarm open on the wearable), which
        the tap confirms at once. Returns the incidents raised."""
        raised = []
        due = self.store.early_taps_due(now - wait_s)
        for device_id, ref in due:
            taps = self.store.take_early_taps(device_id, ref)
            incident = self.store.incident_for_alarm(device_id, ref)
            new = incident is None
            if new:
                state, text = RULES[(None, RAISED)]
                incident = self.store.create_incident(device_id, ref, EARLY_TAP_KIND, state, now)
                self.store.add_audit(incident.id, now, RAISED, _join(text, (
                    "from the wearer's double tap (frame %d): the alarm it answers (counter %d) "
                    "has not arrived within %g s" % (taps[0].counter, ref, wait_s))))
                if self.outbox is not None:
                    self.outbox.enqueue(self.store, incident, RAISED, now)
            for tap in taps:
                incident = self.apply(incident, WEARER_CONFIRMS, now, "double tap, frame %d "
                                      "(it came before its alarm)" % tap.counter)
            if new:
                raised.append(incident)
        if due:
            self._early = self.store.early_tap_devices()
        return raised

    def raise_lost_contact(self, device_id, at, detail=""):
        state, text = RULES[(None, RAISED)]
        incident = self.store.create_incident(device_id, None, LOST_CONTACT, state, at)
        self.store.add_audit(incident.id, at, RAISED, _join(text, detail))
        if self.outbox is not None:
            self.outbox.enqueue(self.store, incident, RAISED, at)
        return incident

    def update_location(self, device_id, location, at, detail=""):
        """A later frame's location (location.Location) for the device's open alarms; returns
        the incidents it updated."""
        if location is None or self.outbox is None:
            return []
        updated = []
        for incident in self.store.incidents(device_id, (OPEN, NEEDS_HELP)):
            if incident.kind == LOST_CONTACT or not is_news(
                    from_record(self.outbox.location(incident.id)), location, at):
                continue
            self.outbox.set_location(incident.id, location)
            updated.append(self.apply(incident, LOCATION_UPDATED, at, detail))
        return updated

    @staticmethod
    def allows(incident, event):
        return (incident.state, event) in RULES

    def wearer_confirms(self, device_id, alarm_counter, at, detail=""):
        """Attach a DOUBLE_TAP to the alarm it names; None when no such alarm is known."""
        incident = self.store.incident_for_alarm(device_id, alarm_counter)
        if incident is None:
            return None
        return self.apply(incident, WEARER_CONFIRMS, at, detail)

    def apply(self, incident, event, at, detail=""):
        rule = RULES.get((incident.state, event))
        if rule is None:
            self.store.add_audit(incident.id, at, event,
                                 _join("ignored in state %s" % incident.state, detail))
            return incident
        state, text = rule
        if state != incident.state:
            self.store.set_incident_state(incident.id, state, at)
        self.store.add_audit(incident.id, at, event, _join(text, detail))
        incident = incident._replace(state=state, updated_at=at)
        if self.outbox is not None:
            self.outbox.enqueue(self.store, incident, event, at)
        return incident


def _join(text, detail):
    return "%s; %s" % (text, detail) if detail else text
