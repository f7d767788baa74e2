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


# -- man-down traces (falls and the activities they must not be confused with) ----------------
# Models, in the wearer's wrist frame (still() is the wrist upright: 1 g on +z):
#   a fall: 0.3-1 s of walking, a FREE FALL (the magnitude drops to 150-450 mg for 250-450 ms
#   while the wrist turns from upright to its lying posture), an IMPACT on the hands, knees or
#   hip (a half-sine adding 2.4-5 g over 30-50 ms, along the lying posture's vertical, and a
#   bounce at ~40 %), 0.5 s of settling that dies away, then lying still (breathing and
#   tremor, +-8 mg) with the wrist turned 60-120 degrees from upright.
#   Activities: the same bricks with what real ones keep: a stumble dips less deep and ends
#   walking; sitting down hard unloads the wrist to 600-800 mg and strikes it with 1.3-1.8 g
#   (the seat takes the blow, not the arm); a jump is a true free fall and a 2.5-4 g landing
#   but ends upright; a table is struck at the part's full scale and keeps it dead still.
# Every generator here is deterministic per seed and returns a list (a few seconds long) unless
# it says it yields.

FALL_KINDS = ("forward", "backward", "side", "knees")

# kind: (free fall mg, free fall ms, impact mg, lying posture as a unit vector * 1000)
_FALLS = {
    "forward": (300, 380, 4000, (150, 100, -985)),
    "backward": (250, 420, 3200, (940, 150, 300)),
    "side": (350, 330, 3600, (20, 980, 0)),
    "knees": (350, 260, 2600, (0, -700, -700)),
}


def _noise(rand, n):
    return int(rand.uniform(-n, n))


def _rest(n, posture, rand, noise=8):
    gx, gy, gz = posture
    return [(gx + _noise(rand, noise), gy + _noise(rand, noise), gz + _noise(rand, noise))
            for _ in range(n)]


def _tilt(posture, rand, spread):
    """The posture turned by up to `spread` mg on each axis, rescaled to 1 g."""
    x, y, z = (v + _noise(rand, spread) for v in posture)
    norm = math.sqrt(x * x + y * y + z * z) or 1
    return (int(G * x / norm), int(G * y / norm), int(G * z / norm))


def _drop(n, start, end, level_mg, rand, wobble=40):
    """A free fall: the direction turns from `start` to `end` while the magnitude is low."""
    out = []
    for i in range(n):
        f = (i + 0.5) / n
        v = [start[k] + (end[k] - start[k]) * f for k in range(3)]
        norm = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) or 1
        out.append(tuple(int(level_mg * c / norm) + _noise(rand, wobble) for c in v))
    return out


def _strike(trace, at, peak_mg, direction, width, rand):
    """An impact: a half-sine along `direction` (unit * 1000) and a bounce at ~40 %."""
    for start, scale in ((at, 1.0), (at + width + 8, 0.4)):
        for j in range(width):
            if start + j < len(trace):
                amp = peak_mg * scale * math.sin(math.pi * (j + 0.5) / width) / G
                x, y, z = trace[start + j]
                trace[start + j] = (x + int(direction[0] * amp), y + int(direction[1] * amp),
                                    z + int(direction[2] * amp))


def _settling(trace, at, n, mg, rand):
    """Movement that dies away over n samples (limbs coming to rest after an impact)."""
    for j in range(n):
        if at + j < len(trace):
            amp = mg * (1 - j / n)
            x, y, z = trace[at + j]
            trace[at + j] = (x + int(rand.uniform(-amp, amp)), y + int(rand.uniform(-amp, amp)),
                             z + int(rand.uniform(-amp, amp)))


def _walk(seconds, seed):
    return list(walking(seconds, seed=seed))


def fall_kind(kind, seed=1, lie_s=6.0, impact_scale=1.0, freefall_scale=1.0):
    """A fall of one of FALL_KINDS, then lying still for lie_s seconds. The scales make it
    softer (a smaller impact, a shallower free fall) to find the detector's edges."""
    rand = Rand(seed * 7 + len(kind))
    ff_mg, ff_ms, impact_mg, posture = _FALLS[kind]
    impact_mg *= impact_scale
    ff_mg = int(ff_mg * freefall_scale * rand.uniform(0.7, 1.2))
    ff_n = int(ff_ms * rand.uniform(0.85, 1.15)) * ODR_HZ // 1000
    lying = _tilt(posture, rand, 150)
    trace = _walk(rand.uniform(0.3, 1.0), seed)
    trace += _drop(ff_n, (0, 0, G), lying, ff_mg, rand)
    impact = len(trace)
    trace += _rest(int(lie_s * ODR_HZ) + 60, lying, rand)
    width = int(rand.uniform(3, 5.99))
    _strike(trace, impact, impact_mg * rand.uniform(0.9, 1.25), lying, width, rand)
    _settling(trace, impact + 2 * width + 10, 50, 250, rand)
    return trace


def forward_fall(seed=1):
    return fall_kind("forward", seed)


def backward_fall(seed=1):
    return fall_kind("backward", seed)


def side_fall(seed=1):
    """Falling from standing onto the side (the hip and the arm take it)."""
    return fall_kind("side", seed)


def knees_fall(seed=1):
    return fall_kind("knees", seed)


def lying_after_fall(seconds=180, seed=1):
    """A forward fall, then lying still for `seconds` (the no-motion case after a fall).
    A generator, so minutes of it fit in a small heap."""
    trace = fall_kind("forward", seed, lie_s=5)
    for sample in trace:
        yield sample
    rand = Rand(seed + 700)
    lying = trace[-1]
    for _ in range(int((seconds - 5) * ODR_HZ)):
        yield (lying[0] + _noise(rand, 8), lying[1] + _noise(rand, 8), lying[2] + _noise(rand, 8))


def fall_then_get_up(seed=1, lie_ms=700):
    """A side fall, a short pause while still moving, then getting up and walking away."""
    rand = Rand(seed + 500)
    trace = fall_kind("side", seed, lie_s=lie_ms / 1000)
    lying = trace[-1]
    for i in range(150):  # pushing up: large, slow, irregular
        f = min(1.0, i / 150)
        sway = 300 * math.sin(2 * math.pi * 1.3 * i / ODR_HZ)
        trace.append((int(lying[0] * (1 - f)) + int(sway) + _noise(rand, 60),
                      int(lying[1] * (1 - f)) + _noise(rand, 60),
                      int(lying[2] * (1 - f) + G * f) + int(sway) + _noise(rand, 60)))
    return trace + _walk(5, seed + 1)


def stumble(seed=1):
    """A trip that recovers: a short shallow dip, a hard catching step, walking on."""
    rand = Rand(seed + 100)
    trace = _walk(rand.uniform(0.5, 1.5), seed)
    trace += _drop(int(rand.uniform(12, 20)), (0, 0, G), (300, 0, 950),
                   int(rand.uniform(450, 650)), rand)
    at = len(trace)
    trace += _walk(4, seed + 1)
    _strike(trace, at, rand.uniform(1400, 2400), (300, 0, 950), 5, rand)
    return trace


def sit_down_hard(seed=1, severity=1.0):
    """Dropping into a chair: the wrist unloads a little, the seat takes the blow, then the
    wearer sits still with the forearm on the lap (turned about 70 degrees from upright).
    severity > 1 drops deeper and strikes harder (1.5: 400-530 mg, 2-2.7 g)."""
    rand = Rand(seed + 200)
    lap = _tilt((940, 0, 340), rand, 150)
    trace = _walk(rand.uniform(0.5, 1.0), seed)
    trace += _drop(int(rand.uniform(15, 25)), (0, 0, G), lap,
                   int(rand.uniform(600, 800) / severity), rand)
    at = len(trace)
    trace += _rest(800, lap, rand)
    _strike(trace, at, rand.uniform(1300, 1800) * severity, lap, 6, rand)
    _settling(trace, at + 12, 40, 150, rand)
    return trace


def jump(seed=1):
    """A jump on the spot: push-off, 300-450 ms of true free fall, a 2.5-4 g landing, then
    standing still, arms down, upright as before."""
    rand = Rand(seed + 300)
    trace = _rest(int(rand.uniform(50, 150)), (0, 0, G), rand)
    push = int(rand.uniform(15, 25))
    trace += [(_noise(rand, 40), _noise(rand, 40), G + 900 - 40 * abs(i - push // 2))
              for i in range(push)]
    trace += _drop(int(rand.uniform(30, 45)), (0, 0, G), (0, 0, G), int(rand.uniform(30, 150)),
                   rand)
    at = len(trace)
    trace += _rest(600, _tilt((0, 0, G), rand, 100), rand)
    _strike(trace, at, rand.uniform(2500, 4000), (0, 0, G), 6, rand)
    _settling(trace, at + 14, 40, 200, rand)
    return trace


def dropped_on_table(seed=1):
    """The wearable itself dropped from 0.6-1 m onto a table: a true free fall while it
    tumbles, a strike clipped at the part's full scale (+-4 g) with small rebounds, then dead
    still (sensor noise only) in whatever way up it landed."""
    rand = Rand(seed + 400)
    ways_up = ((0, 0, G), (0, 0, -G), (G, 0, 0), (0, -G, 0))
    landed = _tilt(ways_up[rand.next() % len(ways_up)], rand, 60)
    trace = _rest(100, (0, 0, G), rand)
    trace += _drop(int(rand.uniform(35, 45)), (0, 0, G), landed, int(rand.uniform(20, 100)), rand,
                   wobble=30)
    at = len(trace)
    trace += _rest(800, landed, rand, noise=3)
    for off, peak in ((0, 5000), (6, 1500), (11, 700)):  # the strike and two rebounds
        x, y, z = trace[at + off]
        trace[at + off] = (_clip(x + peak * landed[0] // G), _clip(y + peak * landed[1] // G),
                           _clip(z + peak * landed[2] // G))
    return trace


def _clip(mg):
    return max(-4000, min(4000, mg))


def slump_from_chair(seed=1, still_s=150):
    """Losing consciousness in a chair: sitting (forearm on the lap), 1-2 s of sliding
    sideways with no free fall and no impact but the arm dropping (1.2-1.5 g), then hanging
    still. No fall detector of this kind sees it; the no-motion time does. A generator."""
    rand = Rand(seed + 800)
    lap = _tilt((940, 0, 340), rand, 150)
    hang = _tilt((0, -300, 950), rand, 150)
    for sample in _rest(300, lap, rand, noise=30):
        yield sample
    n = int(rand.uniform(100, 200))
    for sample in _drop(n, lap, hang, G, rand, wobble=60):
        yield sample
    drop = _rest(60, hang, rand)
    _strike(drop, 0, rand.uniform(200, 500), hang, 15, rand)
    for sample in drop:
        yield sample
    for _ in range(int(still_s * ODR_HZ)):
        yield (hang[0] + _noise(rand, 8), hang[1] + _noise(rand, 8), hang[2] + _noise(rand, 8))


def stairs(seconds, seed=1):
    """Going down stairs: quicker, harder steps than walking, deeper dips (a generator)."""
    return gait(seconds, 2.2, 380, 1300, 60, seed)


def wrist_double_tap(seed=1):
    """A double tap on the wearable at the wrist (the wearer's answer to a prompt)."""
    rand = Rand(seed + 600)
    return double_tap(int(rand.uniform(1200, 3500)), gap_ms=int(rand.uniform(120, 400)),
                      seed=seed)
