"""`vigil bench falls`: the fall and no-motion detectors (vigil_fw.falls) scored on the
synthetic traces of traces.py (their models are written there), beside the double-tap detector.

  recall: each fall kind (forward, backward, side, onto the knees), one trace per seed; a fall
    counts when the fall detector reports it exactly once; latency is from the impact's first
    sample to the report.
  short activities that resemble a fall (a stumble that recovers, sitting down hard, a jump, a
    fall the wearer gets up from at once, a double tap), one trace per seed: the share the fall
    detector takes for a fall. A slump in a chair (no free fall, no impact) is scored on its
    own: the fall detector does not see it, the no-motion time does (seconds from the start
    of the trace, which the slump ends 4-5 s into). The wearable dropped on a table is shown on its own: it is
    reported as a fall unless it lands the way up it was worn.
  edges: recall with the impacts scaled down (the part above 1 g) or the free falls made
    shallower, and the share of harder sittings down (deeper, 2-3 g) taken for falls.
  confusion: the share of falls the double-tap detector takes for a double tap, and of double
    taps the fall detector takes for a fall.
  ordinary activity: hours of walking, running, stairs and desk work with knocks, each alone,
    then a shift (8 hours unless told) mixing them with the short activities above (not the
    fall the wearer gets up from) every 2-4 minutes, and the wearable dropped on a table once
    a shift (mid-shift), left there 5-20 s and picked up: fall and no-motion (default 120 s)
    pre-alarms per hour and per shift, and alarms. An alarm is a pre-alarm after which the trace shows no
    movement for the whole cancel window (30 s): a wearer moving about feels the pre-alarm and
    cancels it; the one who does not move is the wearer it is for.
  device cost: on the MicroPython unix port, heap bytes allocated and microseconds per sample
    for each detector, against the double-tap detector in the same run.
"""
import statistics
import sys

from . import ToolError, firmware_build, micropython

CANCEL_S = 30
SHIFT_H = 8


def _detectors():
    sys.path.insert(0, str(firmware_build.FIRMWARE))  # the detectors are device code
    from vigil_fw.falls import FallDetector, NoMotionDetector
    from vigil_fw.taps import DoubleTapDetector
    return FallDetector, NoMotionDetector, DoubleTapDetector


def _count(detector, samples):
    n = 0
    for x, y, z in samples:
        if detector.feed(x, y, z):
            n += 1
    return n


def _shift_stream(hours, seed, traces):
    """Ordinary activity: 2-4 minute blocks of walking, desk work, stairs or running, each
    followed by one short activity that resembles a fall; and once in every SHIFT_H hours the
    wearable dropped on a table, left there DROP_LEFT_S and picked up (the next block)."""
    rand = traces.Rand(seed)
    drops_every = SHIFT_H * 3600 * traces.ODR_HZ
    next_drop = drops_every // 2  # mid-shift
    played = 0
    blocks = (lambda s, k: traces.walking(s, seed=k), lambda s, k: traces.bumps(s, seed=k),
              lambda s, k: traces.stairs(s, seed=k), lambda s, k: traces.running(s, seed=k))
    events = (traces.stumble, traces.sit_down_hard, traces.jump, traces.wrist_double_tap)
    left = int(hours * 3600 * traces.ODR_HZ)
    k = 0
    while left > 0:
        k += 1
        seconds = int(rand.uniform(120, 240))
        block = blocks[rand.next() % len(blocks)] if k % 3 else blocks[1]  # desk work often
        for sample in block(seconds, seed * 1000 + k):
            yield sample
        event = events[rand.next() % len(events)](seed=seed * 1000 + k)
        played += seconds * traces.ODR_HZ + len(event)
        if played >= next_drop:
            next_drop += drops_every
            event = event + _dropped_and_left(traces, seed * 1000 + k, rand)
        for sample in event:
            yield sample
        left -= seconds * traces.ODR_HZ + len(event)


DROP_LEFT_S = (5, 20)  # how long a dropped wearable lies before it is picked up


def _dropped_and_left(traces, seed, rand):
    """The drop trace (it ends 8 s after the strike) with the wearable left still on the
    table for 5-20 s in all: the next block's movement is the wearer picking it up."""
    trace = traces.dropped_on_table(seed=seed)
    extra = int(rand.uniform(*DROP_LEFT_S) * traces.ODR_HZ) - 800
    if extra > 0:
        trace = trace + [trace[-1]] * extra
    return trace


def _ordinary(samples, FallDetector, NoMotionDetector, odr):
    """(fall pre-alarms, no-motion pre-alarms, alarms, hours) over one stream."""
    fall, still, watch = FallDetector(), NoMotionDetector(), NoMotionDetector(0)
    pre_fall = pre_still = alarms = n = 0
    pending = -1  # sample index where a pre-alarm's cancel window ends
    window = CANCEL_S * odr
    for x, y, z in samples:
        if fall.feed(x, y, z):
            pre_fall += 1
            pending = n + window
        if still.feed(x, y, z):
            pre_still += 1
            pending = n + window
        watch.feed(x, y, z)  # only its count of samples since the last movement
        if pending >= 0 and n >= pending:
            if watch.still >= window:
                alarms += 1
            pending = -1
        n += 1
    return pre_fall, pre_still, alarms, n / odr / 3600


_MPY_COST = """
import gc, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import traces
from vigil_fw.falls import FallDetector, NoMotionDetector
from vigil_fw.taps import DoubleTapDetector
trace = traces.forward_fall(seed=1) + traces.jump(seed=1) + traces.wrist_double_tap(seed=1)
ROUNDS = 20  # about 45,000 samples a detector
out = []
for name, make in (("taps", DoubleTapDetector), ("fall", FallDetector),
                   ("no_motion", NoMotionDetector)):
    d = make()
    for s in trace:  # warm: the first samples set things up
        d.feed(s[0], s[1], s[2])
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for s in trace:
        d.feed(s[0], s[1], s[2])
    used = gc.mem_alloc() - before
    gc.enable()
    t = time.ticks_us()  # with the collector on: a detector that allocates pays for it here
    for _ in range(ROUNDS):
        for s in trace:
            d.feed(s[0], s[1], s[2])
    us = time.ticks_diff(time.ticks_us(), t)
    out.append("mpy_%s_heap_bytes_per_sample=%.3f mpy_%s_us_per_sample=%.2f"
               % (name, used / len(trace), name, us / (ROUNDS * len(trace))))
print(" ".join(out))
"""


def _mpy_cost():
    from . import traces
    import pathlib
    out = micropython.run(_MPY_COST, args=(firmware_build.FIRMWARE,
                                           pathlib.Path(traces.__file__).parent))
    figures = {}
    for pair in out.split():
        key, value = pair.split("=")
        figures[key] = float(value)
    for name in ("fall", "no_motion"):
        figures["mpy_%s_cost_vs_taps" % name] = (figures["mpy_%s_us_per_sample" % name]
                                                 / figures["mpy_taps_us_per_sample"])
    return figures


def falls(seeds=50, hours=1.0, shift_hours=SHIFT_H):
    FallDetector, NoMotionDetector, DoubleTapDetector = _detectors()
    from . import traces

    odr = FallDetector.ODR_HZ
    ms = 1000 // odr
    f = {}
    detected = total = 0
    latencies = []
    for kind in traces.FALL_KINDS:
        hit = 0
        for seed in range(seeds):
            d = FallDetector()
            reports = []
            for i, (x, y, z) in enumerate(traces.fall_kind(kind, seed=seed)):
                if d.feed(x, y, z):
                    reports.append(i)
            if len(reports) == 1:
                hit += 1
                latencies.append((reports[0] + 1 - d.impact_at) * ms)
        f["recall_%s" % kind] = hit / seeds
        detected += hit
        total += seeds
    f["fall_recall"] = detected / total
    f["latency_ms_median"] = statistics.median(latencies) if latencies else -1
    f["latency_ms_max"] = max(latencies) if latencies else -1

    # the edges: softer impacts, shallower free falls, harder sitting down
    for label, impact, freefall in (("impact_50pct", 0.5, 1.0), ("impact_35pct", 0.35, 1.0),
                                    ("freefall_130pct", 1.0, 1.3),
                                    ("freefall_160pct", 1.0, 1.6)):
        hit = 0
        for kind in traces.FALL_KINDS:
            for seed in range(seeds):
                hit += _count(FallDetector(), traces.fall_kind(
                    kind, seed=seed, impact_scale=impact, freefall_scale=freefall)) == 1
        f["recall_%s" % label] = hit / total
    for severity in (1.25, 1.5, 1.75):
        f["fall_false_sit_down_hard_%dpct" % (severity * 100)] = sum(
            _count(FallDetector(), traces.sit_down_hard(seed=s, severity=severity))
            for s in range(seeds)) / seeds
    for name in ("stumble", "sit_down_hard", "jump", "fall_then_get_up", "wrist_double_tap"):
        make = getattr(traces, name)
        f["fall_false_%s" % name] = sum(
            _count(FallDetector(), make(seed=s)) for s in range(seeds)) / seeds
    slump_latency = []
    slump_falls = 0
    for seed in range(seeds):
        d, n = FallDetector(), NoMotionDetector()
        for i, (x, y, z) in enumerate(traces.slump_from_chair(seed=seed)):
            if d.feed(x, y, z):
                slump_falls += 1
            if n.feed(x, y, z):
                slump_latency.append(i / odr)
                break
    f["slump_taken_for_fall"] = slump_falls / seeds
    f["slump_recall_by_no_motion"] = len(slump_latency) / seeds
    f["slump_no_motion_s_max"] = max(slump_latency) if slump_latency else -1
    f["drop_reported_as_fall"] = sum(
        _count(FallDetector(), traces.dropped_on_table(seed=s)) for s in range(seeds)) / seeds
    f["falls_taken_for_double_tap"] = sum(
        _count(DoubleTapDetector(), traces.fall_kind(k, seed=s))
        for k in traces.FALL_KINDS for s in range(seeds)) / total
    f["double_taps_detected"] = sum(
        _count(DoubleTapDetector(), traces.wrist_double_tap(seed=s)) for s in range(seeds)) / seeds

    seconds = int(hours * 3600)
    for name, stream in (("walking", traces.walking(seconds, seed=21)),
                         ("running", traces.running(seconds, seed=22)),
                         ("stairs", traces.stairs(seconds, seed=23)),
                         ("desk_knocks", traces.bumps(seconds, seed=24))):
        pre_fall, pre_still, alarms, h = _ordinary(stream, FallDetector, NoMotionDetector, odr)
        f["%s_fall_prealarms_per_hour" % name] = pre_fall / h
        f["%s_no_motion_prealarms_per_hour" % name] = pre_still / h
        f["%s_alarms_per_hour" % name] = alarms / h
    pre_fall, pre_still, alarms, h = _ordinary(_shift_stream(shift_hours, 31, traces),
                                               FallDetector, NoMotionDetector, odr)
    f["shift_hours"] = h
    f["false_fall_prealarms_per_shift"] = pre_fall / h * SHIFT_H
    f["false_no_motion_prealarms_per_shift"] = pre_still / h * SHIFT_H
    f["false_prealarms_per_shift"] = (pre_fall + pre_still) / h * SHIFT_H
    f["false_alarms_per_shift"] = alarms / h * SHIFT_H
    return f


def falls_command(args):
    f = falls(args.seeds, args.hours, args.shift_hours)
    try:
        f.update(_mpy_cost())
    except ToolError as e:
        print("MicroPython unix port not run: %s" % e)
    print("Fall and no-motion detectors on synthetic traces (100 Hz, %d seeds a kind)" % args.seeds)
    for key, value in f.items():
        print("  %-42s %.3f" % (key, value))
    print(" ".join("%s=%.3f" % kv for kv in f.items()))
    return 0


def register_bench(bench_sub):
    fp = bench_sub.add_parser("falls", help="score the fall and no-motion detectors")
    fp.add_argument("--seeds", type=int, default=50, help="traces per fall kind and activity")
    fp.add_argument("--hours", type=float, default=1.0,
                    help="hours of each ordinary activity on its own")
    fp.add_argument("--shift-hours", type=float, default=SHIFT_H,
                    help="hours of mixed ordinary activity to replay (scaled to an 8-hour "
                         "shift)")
    fp.set_defaults(func=falls_command)
