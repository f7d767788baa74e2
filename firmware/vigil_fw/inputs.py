# The wearable's inputs as timestamped edges: the board's IRQs record what happened and when
# in a ring allocated at boot, and wake the one input task, which judges the gestures on
# the times the edges happened, not on when it got round to them.
#
# Rules:
#   push() runs in a (hard) IRQ: it allocates nothing, stores the code and ticks_ms(), and
#     sets the flag
#   the ring holds SIZE edges; when full the oldest is overwritten and counted in `lost`
#     (only if the input task has been stopped for SIZE edges)
#   pop() gives the oldest edge's code (its time in `.time`), -1 when empty
from vigil_protocol._compat import const

from .clock import Flag, ticks_ms

SOS_DOWN = const(0)
SOS_UP = const(1)
DURESS_DOWN = const(2)
DURESS_UP = const(3)
TAP = const(4)       # the accelerometer's tap engine reported a double tap

_SIZE = const(32)    # a power of two
_MASK = const(31)


class EdgeRing:
    def __init__(self):
        self.codes = bytearray(_SIZE)
        self.times = [0] * _SIZE  # type: list  # ticks_ms values are small ints: storing one allocates nothing
        self.head = 0   # next slot to write
        self.count = 0
        self.lost = 0
        self.time = 0   # when the edge pop() returned happened
        self.flag = Flag()

    def push(self, code):
        i = self.head
        self.codes[i] = code
        self.times[i] = ticks_ms()
        self.head = (i + 1) & _MASK
        if self.count == _SIZE:
            self.lost += 1
        else:
            self.count += 1
        self.flag.set()

    def pop(self):
        if self.count == 0:
            return -1
        i = (self.head - self.count) & _MASK
        self.count -= 1
        self.time = self.times[i]
        return self.codes[i]
