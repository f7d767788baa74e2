# Software double-tap detector over raw accelerometer samples, for parts with no tap engine.
#
# Rules (per sample, integers only, at ODR_HZ):
#   jerk = |dx| + |dy| + |dz| between consecutive samples, in mg
#   a "spike" is a run of samples with jerk > QUIET_MG
#   a spike is a TAP if its peak jerk >= TAP_MG and it lasts <= TAP_MAX_MS; otherwise MOTION
#   a first tap counts only after PRE_QUIET_MS with no spike and no free fall (|a| below
#     FREEFALL_MG for FREEFALL_MS in a row; a tap's own rebound is shorter)
#   a second tap must start GAP_MIN_MS..GAP_MAX_MS after the first
#   the double tap is reported once POST_QUIET_MS pass with no further spike
#   any MOTION spike, a third tap, or a gap too long forgets what was pending
# Walking and running give periodic, longer impacts (no quiet before or after); a fall gives a
# free fall before its impacts. Tunables are class attributes: set them before construction.


class DoubleTapDetector:
    ODR_HZ = 100
    TAP_MG = 900
    QUIET_MG = 250
    TAP_MAX_MS = 40
    GAP_MIN_MS = 80
    GAP_MAX_MS = 500
    PRE_QUIET_MS = 300
    POST_QUIET_MS = 300
    FREEFALL_MG = 400
    FREEFALL_MS = 80

    def __init__(self):
        ms = 1000 // self.ODR_HZ
        self._tap_max = self.TAP_MAX_MS // ms
        self._gap_min = self.GAP_MIN_MS // ms
        self._gap_max = self.GAP_MAX_MS // ms
        self._pre_quiet = self.PRE_QUIET_MS // ms
        self._post_quiet = self.POST_QUIET_MS // ms
        self._freefall2 = self.FREEFALL_MG * self.FREEFALL_MG
        self._freefall_min = self.FREEFALL_MS // ms
        self._low_run = 0
        self._i = 0
        self._prev = None
        self._spike_start = -1  # index where the current spike began, -1 when quiet
        self._spike_peak = 0
        self._last_spike_end = -(1 << 30)
        self._last_freefall = -(1 << 30)
        self._first_tap = -1  # start index of a pending first tap
        self._done_at = -1  # index where a complete double tap's second tap ended

    def feed(self, x, y, z):
        """Feed one sample in mg; True exactly once per detected double tap."""
        i = self._i
        self._i = i + 1
        if x * x + y * y + z * z < self._freefall2:
            self._low_run += 1
            if self._low_run >= self._freefall_min:
                self._last_freefall = i
        else:
            self._low_run = 0
        prev = self._prev
        self._prev = (x, y, z)
        jerk = 0 if prev is None else abs(x - prev[0]) + abs(y - prev[1]) + abs(z - prev[2])

        if jerk > self.QUIET_MG:
            if self._spike_start < 0:
                self._spike_begins(i)
            if jerk > self._spike_peak:
                self._spike_peak = jerk
            return False
        if self._spike_start >= 0:
            self._spike_ends(i)
        if self._done_at >= 0 and i - self._done_at >= self._post_quiet:
            self._done_at = -1
            return True
        if self._first_tap >= 0 and i - self._first_tap > self._gap_max:
            self._first_tap = -1
        return False

    def _spike_begins(self, i):
        if self._done_at >= 0:  # a third tap or motion right after: not a clean double tap
            self._done_at = -1
            self._first_tap = -1
        self._quiet_before = i - self._last_spike_end
        self._spike_start = i
        self._spike_peak = 0

    def _spike_ends(self, i):
        start = self._spike_start
        is_tap = self._spike_peak >= self.TAP_MG and i - start <= self._tap_max
        self._spike_start = -1
        self._last_spike_end = i
        if not is_tap:
            self._first_tap = -1
            return
        if self._first_tap >= 0 and self._gap_min <= start - self._first_tap <= self._gap_max:
            self._first_tap = -1
            self._done_at = i
        elif self._quiet_before >= self._pre_quiet and start - self._last_freefall > self._pre_quiet:
            self._first_tap = start
        else:
            self._first_tap = -1
