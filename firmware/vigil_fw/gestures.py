# Button gestures, fed with timestamped events by the input tasks (sans-I/O: no pins here).
#
# DURESS (hidden button): DuressGesture.PRESSES presses within WINDOW_MS. Hard to do by
#   accident, easy to do by feel. No cue of any kind, and nothing on the device cancels it.
#
# SOS (main button), as a table:
#   IDLE    + down            -> HOLDING  (remember when)
#   HOLDING + up              -> IDLE     (a short press does nothing)
#   HOLDING + held HOLD_MS    -> ARMED    emits "armed"      (one long buzz: release now)
#   ARMED   + down            -> IDLE     emits "cancelled"  (press again to cancel)
#   ARMED   + CANCEL_MS passed-> IDLE     emits "raise"      (the SOS alarm is raised)
#   anything else             -> no change
from .clock import ticks_add, ticks_diff, ticks_ms

IDLE = "idle"
HOLDING = "holding"
ARMED = "armed"

DOWN = "down"
UP = "up"
TICK = "tick"


class DuressGesture:
    PRESSES = 4
    WINDOW_MS = 3000

    def __init__(self):
        self._presses = []

    def press(self, t_ms):
        """Feed one press; True when it completes the gesture."""
        recent = []
        for p in self._presses:
            if ticks_diff(t_ms, p) < self.WINDOW_MS:
                recent.append(p)
        recent.append(t_ms)
        self._presses = recent
        if len(self._presses) >= self.PRESSES:
            self._presses = []
            return True
        return False


class SosButton:
    HOLD_MS = 2000
    CANCEL_MS = 3000

    # (state, input): (next state, output); TICK rows apply only once their time has come
    TABLE = {
        (IDLE, DOWN): (HOLDING, None),
        (HOLDING, UP): (IDLE, None),
        (HOLDING, TICK): (ARMED, "armed"),
        (ARMED, DOWN): (IDLE, "cancelled"),
        (ARMED, TICK): (IDLE, "raise"),
    }

    def __init__(self):
        self.state = IDLE
        self.since = ticks_ms()  # meaningful once a press starts

    def due_at(self):
        """When a TICK would next change something (ticks_ms), or None while idle: the input
        task sleeps until then, or until the next edge."""
        if self.state == HOLDING:
            return ticks_add(self.since, self.HOLD_MS)
        if self.state == ARMED:
            return ticks_add(self.since, self.CANCEL_MS)
        return None

    def _due(self, t_ms):
        return ticks_diff(t_ms, self.due_at()) >= 0

    def feed(self, what, t_ms):
        """Feed DOWN, UP or TICK at time t_ms. Returns "armed", "cancelled", "raise" or None."""
        if what == TICK and not (self.state in (HOLDING, ARMED) and self._due(t_ms)):
            return None
        step = self.TABLE.get((self.state, what))
        if step is None:
            return None
        self.state, output = step
        self.since = t_ms
        return output
