# How late an alarm is when it reaches the gateway (protocol/SPEC.md section 12). A late alarm
# is delivered like any other - someone may still need help - and marked late, with the time
# it was raised at the latest, for the responder.
#
# Rules (what each basis adds to the delay known for certain; SPEC section 12):
#   age      the alarm waited this long on the wearable before it was sealed (v2 core, v1
#            extension): a lower bound, rounded down by the encoder
#   order    a frame with a higher counter arrived first, at T': the alarm was sealed before
#            it, so it travelled for at least (arrival - T')
#   silence  the alarm is above every counter seen and arrived while the device's LOST_CONTACT
#            was open: it may have been held since the device was last heard - not certain,
#            so it is reported as "possibly held", never added to the delay
#   an alarm is late when its certain delay reaches [incidents] late_after_s; possibly held
#     over that long is reported too
#   raised_at = arrival - certain delay: the alarm was raised then or earlier
from collections import namedtuple

AGE = "age"
ORDER = "order"

Lateness = namedtuple("Lateness", "raised_at late_s basis held_up_to_s")


def judge(arrived, age_s=0, higher_first_at=None, silent_since=None):
    """The Lateness of an alarm that arrived at `arrived` (unix seconds).

    age_s           -- what the frame says it waited on the wearable (0 or None: nothing)
    higher_first_at -- when the first frame with a higher counter from the device arrived
    silent_since    -- when the device was last heard, if its contact was lost and this
                       frame is above every counter seen
    """
    late = 0.0
    basis = []
    if age_s:
        late += age_s
        basis.append(AGE)
    if higher_first_at is not None and higher_first_at < arrived:
        late += arrived - higher_first_at
        basis.append(ORDER)
    held = None
    if silent_since is not None and silent_since < arrived:
        held = arrived - silent_since
    return Lateness(arrived - late, late, ",".join(basis), held)


def is_late(lateness, late_after_s):
    return lateness.late_s >= late_after_s or (
        lateness.held_up_to_s is not None and lateness.held_up_to_s >= late_after_s)


def describe(lateness):
    """The audit trail's words for a late alarm."""
    parts = []
    if lateness.late_s:
        why = []
        for basis in lateness.basis.split(","):
            why.append("it waited on the wearable" if basis == AGE else
                       "a later frame of the device came first")
        parts.append("LATE: raised at least %d s before it arrived (%s)"
                     % (lateness.late_s, "; ".join(why)))
    if lateness.held_up_to_s is not None:
        parts.append("possibly held back up to %d s: it came while contact was lost"
                     % lateness.held_up_to_s)
    return ", ".join(parts)

