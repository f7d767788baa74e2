# Incidents: one per alarm (device, alarm counter), or per lost contact, with a state and a
# timestamped audit trail, all in the store.
#
# Rules (the state machine is the RULES table below; nothing else changes a state):
#   an SOS, DURESS, FALL, NO_MOTION or LOW_BATTERY alarm raises a new incident, state `open`;
#   a DOUBLE_TAP names the alarm it answers (its `ref`): that incident records "wearer confirms
#     they need help" and goes to `needs_help` - even from `closed`, since a wearer asking for
#     help is never ignored; a DOUBLE_TAP naming no known alarm is kept as a frame and logged;
#   supervision raises LOST_CONTACT for a silent device (one open at a time per device); the
#     device's next verified frame records "contact restored" and closes it;
#   `resolved` (a responder's action, arriving with the forwarding work) closes any incident;
#   an event with no rule for the incident's state is written to the audit trail as ignored.
OPEN = "open"
NEEDS_HELP = "needs_help"
CLOSED = "closed"
STATES = (OPEN, NEEDS_HELP, CLOSED)

RAISED = "raised"
WEARER_CONFIRMS = "wearer_confirms"
CONTACT_RESTORED = "contact_restored"
RESOLVED = "resolved"

LOST_CONTACT = "LOST_CONTACT"
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
}


class Incidents:
    """Applies RULES to incidents in the store; call inside the store's transaction."""

    def __init__(self, store):
        self.store = store

    def raise_alarm(self, device_id, counter, kind, at, detail=""):
        state, text = RULES[(None, RAISED)]
        incident = self.store.create_incident(device_id, counter, kind, state, at)
        self.store.add_audit(incident.id, at, RAISED, _join(text, detail))
        return incident

    def raise_lost_contact(self, device_id, at, detail=""):
        state, text = RULES[(None, RAISED)]
        incident = self.store.create_incident(device_id, None, LOST_CONTACT, state, at)
        self.store.add_audit(incident.id, at, RAISED, _join(text, detail))
        return incident

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
        return incident._replace(state=state, updated_at=at)


def _join(text, detail):
    return "%s; %s" % (text, detail) if detail else text
