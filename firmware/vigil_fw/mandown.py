# Man-down: the fall and no-motion detectors (falls.py) over the accelerometer's samples, and
# the pre-alarm the wearer can cancel, as a table. Sans-I/O: the app feeds it samples, the SOS
# button's presses and the time; it answers what to show and what to raise.
#
# Rules:
#   a detector's report starts a pre-alarm only while WATCHING: one pre-alarm at a time (and
#     the app starts none while a FALL or NO_MOTION alarm is open: the responder already
#     knows the wearer is down)
#   the pre-alarm is felt: its pattern when it starts and every REPEAT_MS until it ends
#   an SOS press within cancel_s cancels it: nothing is sent, both detectors start afresh
#   no press for cancel_s raises FALL or NO_MOTION, which from then on goes as an SOS goes
#     (staged feedback, prompt, double tap)
#   never silent, but feedback obeys the duress silence rule (feedback.py): while a duress
#     alarm is open the pre-alarm runs unfelt and its alarm is raised unshown
#
#   state     + event  -> state     output
#   WATCHING  + FALL   -> PRE_FALL  CUE        the fall detector reported
#   WATCHING  + STILL  -> PRE_STILL CUE        no movement for no_motion_s
#   PRE_*     + CANCEL -> WATCHING  CANCELLED  an SOS press
#   PRE_*     + REPEAT -> PRE_*     CUE        REPEAT_MS since the last cue, the window open
#   PRE_FALL  + EXPIRE -> WATCHING  RAISE_FALL cancel_s passed with no press
#   PRE_STILL + EXPIRE -> WATCHING  RAISE_NO_MOTION
#   anything else      -> no change, no output
from vigil_protocol._compat import const

from .clock import ticks_add, ticks_diff, ticks_ms
from .falls import FallDetector, NoMotionDetector

# States, events and outputs are private consts, so no module attribute holds them (app.py
# writes the ones it uses as its own, tests the numbers): states and events are small ints,
# outputs the table's letters.
_WATCHING = const(0)
_PRE_FALL = const(1)
_PRE_STILL = const(2)

_FALL = const(0)    # the fall detector reported
_STILL = const(1)   # no movement for the no-motion time
_CANCEL = const(2)  # an SOS press
_REPEAT = const(3)  # REPEAT_MS since the last cue
_EXPIRE = const(4)  # the cancel window is over
_EVENTS = const(5)

_NONE = const(45)             # "-": nothing happens
_CUE = const(99)              # "c": play the pre-alarm pattern
_CANCELLED = const(120)       # "x"
_RAISE_FALL = const(102)      # "f"
_RAISE_NO_MOTION = const(110)  # "n"

# _TABLE[(state * _EVENTS + event) * 2]: the next state as a digit, then the output; "--": no
# change. Bytes, so the table stays in flash with the code.
#          event: FALL STILL CANCEL REPEAT EXPIRE
_TABLE = (
    b"1c" b"2c" b"--" b"--" b"--"  # WATCHING
    b"--" b"--" b"0x" b"1c" b"0f"  # PRE_FALL
    b"--" b"--" b"0x" b"2c" b"0n"  # PRE_STILL
)
_DIGIT_0 = const(48)


class ManDown:
    REPEAT_MS = 4000  # the pre-alarm pattern again, this long after it last started
    # Still this long with no fall under way: the sampler sleeps until the part itself sees
    # movement (hal_*.Accel), the no-motion time running on meanwhile. One batch (250 ms):
    # a still wrist costs no more wake-ups than that.
    REST_MS = 250

    def __init__(self, fall=True, no_motion_s=120, cancel_s=30):
        self.fall = FallDetector() if fall else None
        self.still = NoMotionDetector(no_motion_s)  # 0: off (it then only says when to rest)
        self.cancel_ms = cancel_s * 1000
        self.state = _WATCHING
        self.started = ticks_ms()  # when the pre-alarm started (meaningful once it has)
        self.cued = self.started   # when its pattern last started
        self._rest = self.REST_MS * NoMotionDetector.ODR_HZ // 1000

    def feed(self, x, y, z):
        """One sample (mg); FALL or STILL when a detector reports, else -1."""
        event = -1
        if self.fall is not None and self.fall.feed(x, y, z):
            event = _FALL
        if self.still.feed(x, y, z) and event < 0:
            event = _STILL
        return event

    def skip(self, n):
        """n samples the part took, unread, with no movement (the sampler slept): STILL if
        that ran the no-motion time out, else -1."""
        if self.fall is not None:
            self.fall.skip(n)
        return _STILL if self.still.skip(n) else -1

    def resting(self):
        """Still for REST_MS and no fall under way: nothing to gain from reading samples."""
        return self.still.still >= self._rest and (self.fall is None or not self.fall.pending())

    def still_left_ms(self):
        """How long until no motion is reported if nothing moves; None when it will not be."""
        left = self.still.left()
        return None if left < 0 else left * 1000 // NoMotionDetector.ODR_HZ

    def step(self, event, t):
        """Apply one event at ticks_ms t; returns the output (NONE when nothing changes)."""
        i = (self.state * _EVENTS + event) * 2
        if _TABLE[i] == _NONE:
            return _NONE
        self.state = _TABLE[i] - _DIGIT_0
        out = _TABLE[i + 1]
        if event == _FALL or event == _STILL:
            self.started = t
        if out == _CUE:
            self.cued = t
        elif out == _CANCELLED:
            self.reset()
        return out

    def reset(self):
        """The detectors start afresh (a cancelled pre-alarm: the wearer is fine)."""
        if self.fall is not None:
            self.fall.reset()
        self.still.reset()

    def due_at(self):
        """When REPEAT or EXPIRE applies next (ticks_ms); None while WATCHING."""
        if self.state == _WATCHING:
            return None
        expire = ticks_add(self.started, self.cancel_ms)
        repeat = ticks_add(self.cued, self.REPEAT_MS)
        return repeat if ticks_diff(repeat, expire) < 0 else expire

    def tick(self, t):
        """The time at ticks_ms t: EXPIRE or REPEAT if due; the output."""
        if self.state == _WATCHING:
            return _NONE
        if ticks_diff(t, ticks_add(self.started, self.cancel_ms)) >= 0:
            return self.step(_EXPIRE, t)
        if ticks_diff(t, ticks_add(self.cued, self.REPEAT_MS)) >= 0:
            return self.step(_REPEAT, t)
        return _NONE
