# Synthetic accelerometer traces (mg, 100 Hz) for the tap tests and `vigil bench taps`.
# Runs on MicroPython (tests import it as `traces`) and CPython. Deterministic per seed.
import math

ODR_HZ = 100
G = 1000


class Rand:
    """A tiny deterministic generator (xorshift32) so traces match on every interpreter."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def uniform(self, lo, hi):
        return lo + (hi - lo) * (self.next() % 100000) / 100000


def still(n, noise=8, rand=None):
    rand = rand or Rand(1)
    return [(int(rand.uniform(-noise, noise)), int(rand.uniform(-noise, noise)),
             G + int(rand.uniform(-noise, noise))) for _ in range(n)]


def _add(trace, at, sample):
    x, y, z = trace[at]
    trace[at] = (x + sample[0], y + sample[1], z + sample[2])


def tap(trace, at, strength_mg, axis=2):
    """A sharp tap: a one-sample spike and a small rebound, on one axis."""
    for offset, scale in ((0, 1.0), (1, -0.35), (2, 0.1)):
        if at + offset < len(trace):
            value = int(strength_mg * scale)
            _add(trace, at + offset, (value if axis == 0 else 0, value if axis == 1 else 0,
                                      value if axis == 2 else 0))


def double_tap(strength_mg, gap_ms=220, lead_ms=500, tail_ms=600, seed=1):
    n = (lead_ms + gap_ms + tail_ms) * ODR_HZ // 1000
    trace = still(n, rand=Rand(seed))
    first = lead_ms * ODR_HZ // 1000
    tap(trace, first, strength_mg)
    tap(trace, first + gap_ms * ODR_HZ // 1000, strength_mg)
    return trace


def single_tap(strength_mg, seed=1):
    trace = still(150, rand=Rand(seed))
    tap(trace, 50, strength_mg)
    return trace


def gait(seconds, step_hz, sway_mg, impact_mg, impact_ms, seed=1):
    """Walking or running: a body sway at the step rate plus a heel-strike impact per step.
    A generator, so an hour of walking fits in a small heap."""
    rand = Rand(seed)
    n = int(seconds * ODR_HZ)
    period = ODR_HZ / step_hz
    width = max(1, impact_ms * ODR_HZ // 1000)
    next_step = period * rand.uniform(0.2, 1.0)
    impact_start, peak = -width, 0
    for i in range(n):
        if i >= next_step:
            impact_start = i
            peak = impact_mg * rand.uniform(0.8, 1.2)
            next_step += period * rand.uniform(0.95, 1.05)
        sway = sway_mg * math.sin(2 * math.pi * step_hz * i / ODR_HZ)
        x = sway * 0.4 + rand.uniform(-15, 15)
        y = sway * 0.2 + rand.uniform(-15, 15)
        z = G + sway + rand.uniform(-15, 15)
        j = i - impact_start
        if j < width:
            shape = math.sin(math.pi * (j + 0.5) / width)
            y += peak * 0.3 * shape
            z += peak * shape
        yield (int(x), int(y), int(z))


def walking(seconds, seed=1):
    return gait(seconds, 1.9, 250, 700, 80, seed)


def running(seconds, seed=1):
    return gait(seconds, 2.8, 600, 1800, 60, seed)


def fall(seed=1):
    """Standing, 350 ms of free fall, a hard impact with a bounce, then lying still."""
    rand = Rand(seed)
    trace = still(100, rand=rand)
    trace += [(int(rand.uniform(-30, 30)), int(rand.uniform(-30, 30)), 150) for _ in range(35)]
    rest = still(200, rand=rand)
    rest = [(x + 20, y + 980, z - 1000) for x, y, z in rest]  # lying on the side
    tap(rest, 0, 4500, axis=1)
    tap(rest, 15, 2200, axis=1)
    return trace + rest


def bumps(seconds, mean_gap_s=3.0, seed=1):
    """Desk work: single knocks of random strength at random moments (a generator)."""
    rand = Rand(seed)
    n = int(seconds * ODR_HZ)
    next_bump = int(rand.uniform(0.2, 2.0) * mean_gap_s * ODR_HZ)
    tail = []
    for i in range(n):
        x, y, z = int(rand.uniform(-10, 10)), int(rand.uniform(-10, 10)), G + int(
            rand.uniform(-10, 10))
        if i == next_bump:
            strength = rand.uniform(800, 2600)
            tail = [strength, -0.35 * strength, 0.1 * strength]
            next_bump = i + 1 + int(rand.uniform(0.05, 2.0) * mean_gap_s * ODR_HZ)
        if tail:
            z += int(tail.pop(0))
        yield (x, y, z)


def overlay(base, extra):
    """Add `extra`'s deviation from rest onto `base`, sample by sample."""
    out = []
    for a, b in zip(base, extra):
        out.append((a[0] + b[0], a[1] + b[1], a[2] + b[2] - G))
    return out
