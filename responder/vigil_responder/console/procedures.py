# The responder's procedure per kind, as data; the console refuses a step out of order.
#
# Rules:
#   SOS, FALL, NO_MOTION  call the wearer first; then, if they answer and say nothing, prompt a
#                         double tap; if they are at risk, help dispatched; resolve needs the
#                         call to have been made
#   DURESS                the wearer is NOT contacted: no step here calls or cues them (the
#                         page has no such control, and a crafted request for one is refused);
#                         police first (the console shows what to read out), then the
#                         escalation contacts, then resolve
#   LOST_CONTACT, LOW_BATTERY  their own lane: acknowledge, then resolve
#   every step once, by the responder who holds the incident; a resolution needs a reason
#   (REASONS; "other" with its text)
from collections import namedtuple

Step = namedtuple("Step", "name label needs action")  # action: the gateway's, or None

ALARM = "alarm"
DURESS = "duress"
FAULT = "fault"
LANES = {"SOS": ALARM, "FALL": ALARM, "NO_MOTION": ALARM, "DURESS": DURESS,
         "LOST_CONTACT": FAULT, "LOW_BATTERY": FAULT}

CHECKLISTS = {
    ALARM: (
        Step("contact_wearer", "Wearer called", (), "acknowledge"),
        Step("prompt_double_tap", "Asked to tap twice (answered, silent)", ("contact_wearer",),
             "prompt_double_tap"),
        Step("help_dispatched", "Help dispatched: emergency services and escalation contacts "
             "called", ("contact_wearer",), "help_dispatched"),
        Step("resolve", "Resolved", ("contact_wearer",), "resolve"),
    ),
    DURESS: (
        # The gateway audits help_dispatched on duress and sends the wearable nothing.
        Step("police", "Police called, the script read out", (), "help_dispatched"),
        Step("inform_contacts", "Escalation contacts informed", ("police",), None),
        Step("resolve", "Resolved", ("police", "inform_contacts"), "resolve"),
    ),
    FAULT: (
        Step("acknowledge", "Acknowledged", (), "acknowledge"),
        Step("resolve", "Resolved", ("acknowledge",), "resolve"),
    ),
}

REASONS = {"genuine": "genuine alarm", "false_alarm": "false alarm", "test": "test",
           "other": "other"}


class StepRefused(Exception):
    """A step the procedure does not allow now; the message says why."""


def lane(kind):
    return LANES.get(kind, ALARM)


def checklist(kind):
    return CHECKLISTS[lane(kind)]


def check(kind, done, name, reason=None, text=""):
    """The Step to take, or StepRefused. done: names of the steps already done."""
    steps = {s.name: s for s in checklist(kind)}
    step = steps.get(name)
    if step is None:
        raise StepRefused("%s is not a step of the %s procedure" % (name, kind))
    if name in done:
        raise StepRefused("%s was done already" % step.label.lower())
    missing = [steps[n].label.lower() for n in step.needs if n not in done]
    if missing:
        raise StepRefused("first: %s" % "; ".join(missing))
    if name == "resolve":
        resolution(reason, text)
    return step


def resolution(reason, text=""):
    """The resolution's words, or StepRefused when the reason is missing."""
    if reason not in REASONS:
        raise StepRefused("a resolution needs a reason: genuine, false alarm, test or other")
    text = (text or "").strip()
    if reason == "other" and not text:
        raise StepRefused("say what the other reason is")
    return REASONS[reason] + (": " + text if text else "")
