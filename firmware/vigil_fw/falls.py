# Fall and no-motion detectors over raw accelerometer samples (mg, x/y/z, at ODR_HZ), fed one
# sample at a time like the double-tap detector. Integers only, nothing allocated per sample.
#
# Fall rules (a2 = x*x + y*y + z*z, compared with squared thresholds):
#   posture: a slow average of the samples (1/2**POSTURE_SHIFT per sample), taken while the
#     wearer is not falling
#   FREE FALL: a2 below FREEFALL_MG**2 for FREEFALL_MS in a row (a knock or a tap never takes
#     the weight off the wrist; running and sitting down hard dip less deep or less long)
#   IMPACT: a2 above IMPACT_MG**2 within IMPACT_WINDOW_MS of the free fall's end
#   then SETTLE_MS for the bounces, then STILL: every sample within STILL_MG of 1 g and of the
#     one before, for STILL_MS in a row, starting within STILL_WITHIN_MS of the impact
#   LYING: the still posture is turned from the posture before the free fall by at least the
#     angle whose cos**2 is TILT_COS2_PCT % (a jump lands on the feet, upright as it took off)
#   the fall is reported once, at the end of the still stretch; any miss forgets the candidate
# No-motion rules:
#   movement: a sample off the slow average by more than SHAKE_MG (sum of the axes), or the
#     slow average drifting more than DRIFT_MG from where it was SETTLE_MS after the last
#     movement (the average needs that long to catch up with a new posture)
#   reported once when timeout_s pass without movement; movement starts the time again
# Samples the part took while the sampler slept (skip(n): the part's own movement interrupt
# stayed quiet, so they were still) move both detectors' time on without being read.
# Tunables are class attributes: set them before construction.

_NEVER = -(1 << 30)


class FallDetector:
    ODR_HZ = 100
    FREEFALL_MG = 500
    FREEFALL_MS = 120
    IMPACT_MG = 2000
    IMPACT_WINDOW_MS = 400
    SETTLE_MS = 1000
    STILL_MG = 120
    STILL_MS = 2000
    STILL_WITHIN_MS = 6000
    TILT_COS2_PCT = 50  # cos**2 of 45 degrees
    POSTURE_SHIFT = 5  # average over ~32 samples (0.3 s)

    def __init__(self):
        ms = 1000 // self.ODR_HZ
        self._ff2 = self.FREEFALL_MG * self.FREEFALL_MG
        self._ff_min = self.FREEFALL_MS // ms
        self._impact2 = self.IMPACT_MG * self.IMPACT_MG
        self._impact_window = self.IMPACT_WINDOW_MS // ms
        self._settle = self.SETTLE_MS // ms
        self._still_min = self.STILL_MS // ms
        self._still_within = self.STILL_WITHIN_MS // ms
        # 1 g +- STILL_MG, squared
        self._still_lo2 = (1000 - self.STILL_MG) * (1000 - self.STILL_MG)
        self._still_hi2 = (1000 + self.STILL_MG) * (1000 + self.STILL_MG)
        self.impact_at = -1  # sample index of the impact of the last fall reported
        self.reset()

    def reset(self):
        """Forget any candidate fall and the posture (e.g. after the accelerometer restarts)."""
        self._i = 0
        self._started = False
        self._px = self._py = self._pz = 0  # last sample
        self._ax = self._ay = self._az = 0  # posture average << POSTURE_SHIFT
        self._bx = self._by = self._bz = 0  # posture before the free fall, in mg
        self._low_run = 0
        self._ff_end = _NEVER  # index of the last sample of the latest qualifying free fall
        self._impact = -1  # index of the candidate's impact, -1 when none
        self._still_run = 0
        self._sx = self._sy = self._sz = 0  # sum of the still stretch's samples

    def feed(self, x, y, z):
        """Feed one sample in mg; True exactly once per detected fall."""
        i = self._i
        self._i = i + 1
        shift = self.POSTURE_SHIFT
        if not self._started:
            self._started = True
            self._px, self._py, self._pz = x, y, z
            self._ax, self._ay, self._az = x << shift, y << shift, z << shift
        a2 = x * x + y * y + z * z
        jerk = abs(x - self._px) + abs(y - self._py) + abs(z - self._pz)
        self._px, self._py, self._pz = x, y, z

        if a2 < self._ff2:
            self._low_run += 1
            if self._low_run == self._ff_min:  # qualifies now: the posture is from before it
                self._bx = self._ax >> shift
                self._by = self._ay >> shift
                self._bz = self._az >> shift
            if self._low_run >= self._ff_min:
                self._ff_end = i
                self._impact = -1
        else:
            # the posture follows the wearer, but stands still through any dip
            self._low_run = 0
            self._ax += x - (self._ax >> shift)
            self._ay += y - (self._ay >> shift)
            self._az += z - (self._az >> shift)

        if self._impact < 0:
            if a2 > self._impact2 and i - self._ff_end <= self._impact_window:
                self._impact = i
                self._still_run = 0
            return False
        since = i - self._impact
        if since < self._settle:
            return False
        if self._still_lo2 <= a2 <= self._still_hi2 and jerk <= self.STILL_MG:
            if self._still_run == 0:
                self._sx = self._sy = self._sz = 0
            self._still_run += 1
            self._sx += x
            self._sy += y
            self._sz += z
        else:
            self._still_run = 0
        if self._still_run >= self._still_min:
            impact = self._impact
            self._impact = -1
            self._ff_end = _NEVER
            if self._turned(self._sx // self._still_run, self._sy // self._still_run,
                            self._sz // self._still_run):
                self.impact_at = impact
                return True
            return False
        if self._still_run == 0 and since > self._still_within:
            self._impact = -1  # moving again: the wearer got up (or it was no fall)
        return False

    def pending(self):
        """A fall may be under way (a free fall, its impact window, or an impact waiting for
        its still time): the samples must keep coming."""
        return (self._impact >= 0 or self._low_run > 0
                or self._i - 1 - self._ff_end <= self._impact_window)

    def skip(self, n):
        """n samples went by unread while the part saw no movement: time moves on, the
        posture stays."""
        self._i += n
        self._low_run = 0

    def _turned(self, x, y, z):
        # In 1/32 g (the still posture is within 1.12 g), the posture before scaled down to
        # match, so every product stays a small int on a 32-bit port (< 2**30).
        bx, by, bz = self._bx >> 5, self._by >> 5, self._bz >> 5
        while abs(bx) + abs(by) + abs(bz) > 64:  # a posture averaged over vigorous movement
            bx, by, bz = bx >> 1, by >> 1, bz >> 1
        x, y, z = x >> 5, y >> 5, z >> 5
        dot = bx * x + by * y + bz * z
        if dot <= 0:
            return True
        return dot * dot * 100 <= self.TILT_COS2_PCT * (bx * bx + by * by + bz * bz) * (
            x * x + y * y + z * z)


class NoMotionDetector:
    ODR_HZ = 100
    DEFAULT_S = 120
    MIN_S = 30
    MAX_S = 1800
    SHAKE_MG = 150
    DRIFT_MG = 150
    SETTLE_MS = 1000
    AVERAGE_SHIFT = 4  # average over ~16 samples

    def __init__(self, timeout_s=None):
        """timeout_s: seconds without movement before it reports (None: DEFAULT_S); 0: off."""
        if timeout_s is None:
            timeout_s = self.DEFAULT_S
        if not isinstance(timeout_s, int) or isinstance(timeout_s, bool) or timeout_s != 0 and (
                timeout_s < self.MIN_S or timeout_s > self.MAX_S):
            raise ValueError("no-motion timeout must be 0 (off) or %d to %d seconds"
                             % (self.MIN_S, self.MAX_S))
        self.timeout_s = timeout_s
        self._limit = timeout_s * self.ODR_HZ
        self._settle = self.SETTLE_MS * self.ODR_HZ // 1000
        self.reset()

    def reset(self):
        """Start the still time again (e.g. when a pre-alarm is cancelled)."""
        self._started = False
        self._ax = self._ay = self._az = 0  # average << AVERAGE_SHIFT
        self._ox = self._oy = self._oz = 0  # the average SETTLE_MS into the still stretch
        self.still = 0  # samples since the last movement
        self._reported = False

    def feed(self, x, y, z):
        """Feed one sample in mg; True once when timeout_s pass without movement."""
        shift = self.AVERAGE_SHIFT
        if not self._started:
            self._started = True
            self._ax, self._ay, self._az = x << shift, y << shift, z << shift
            self._ox, self._oy, self._oz = x, y, z
        ax, ay, az = self._ax >> shift, self._ay >> shift, self._az >> shift
        if self.still == self._settle:
            self._ox, self._oy, self._oz = ax, ay, az
        moved = abs(x - ax) + abs(y - ay) + abs(z - az) > self.SHAKE_MG or (
            self.still > self._settle
            and abs(ax - self._ox) + abs(ay - self._oy) + abs(az - self._oz) > self.DRIFT_MG)
        self._ax += x - ax
        self._ay += y - ay
        self._az += z - az
        if moved:
            self.still = 0
            self._reported = False
            return False
        self.still += 1
        return self._due()

    def _due(self):
        if self._limit and not self._reported and self.still >= self._limit:
            self._reported = True
            return True
        return False

    def skip(self, n):
        """n samples went by unread with no movement (the part's movement interrupt stayed
        quiet): they count as still. True if that ran the time out."""
        if not self._started:
            return False
        if self.still < self._settle <= self.still + n:  # the drift's origin, as feed() sets it
            shift = self.AVERAGE_SHIFT
            self._ox, self._oy, self._oz = self._ax >> shift, self._ay >> shift, self._az >> shift
        self.still += n
        return self._due()

    def left(self):
        """Samples until it reports if nothing moves; -1 when off or already reported."""
        if not self._limit or self._reported:
            return -1
        return max(0, self._limit - self.still)
