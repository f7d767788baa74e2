# The fall and no-motion detectors (vigil_fw.falls), run by pytest on CPython and on the
# MicroPython unix port (test_falls_micropython.py): every fall kind is detected, no ordinary
# activity is, the double-tap detector and the fall detector never take each other's traces,
# the no-motion time, its bounds, and no allocation per sample.
import gc
import unittest

import traces
from vigil_fw.falls import FallDetector, NoMotionDetector
from vigil_fw.taps import DoubleTapDetector

SEEDS = range(10)


def hits(detector, trace):
    """Indexes of the samples at which the detector reported."""
    out = []
    i = 0
    for s in trace:
        if detector.feed(s[0], s[1], s[2]):
            out.append(i)
        i += 1
    return out


def chain(*parts):
    for part in parts:
        for sample in part:
            yield sample


def quiet(n, seed=1):
    """n samples of a still, upright wrist, made as they are used (minutes fit in the heap)."""
    rand = traces.Rand(seed)
    for _ in range(n // 100):
        for sample in traces.still(100, rand=rand):
            yield sample
    for sample in traces.still(n % 100, rand=rand):
        yield sample


def falls(trace):
    return len(hits(FallDetector(), trace))


def double_taps(trace):
    return len(hits(DoubleTapDetector(), trace))


FALLS = (traces.forward_fall, traces.backward_fall, traces.side_fall, traces.knees_fall)
NOT_FALLS = (traces.stumble, traces.sit_down_hard, traces.jump, traces.fall_then_get_up,
             traces.wrist_double_tap)


class Falls(unittest.TestCase):
    def test_each_fall_kind_is_detected_once(self):
        for make in FALLS:
            for seed in SEEDS:
                self.assertEqual(falls(make(seed=seed)), 1, (make.__name__, seed))

    def test_the_fall_is_reported_after_the_impact_and_the_still_time(self):
        d = FallDetector()
        got = hits(d, traces.side_fall(seed=3))
        ms = 1000 // FallDetector.ODR_HZ
        latency = (got[0] + 1 - d.impact_at) * ms  # the sample it reports on is still too
        self.assertTrue(FallDetector.SETTLE_MS + FallDetector.STILL_MS <= latency
                        <= FallDetector.STILL_WITHIN_MS, latency)

    def test_short_activities_that_look_like_falls_are_not(self):
        for make in NOT_FALLS:
            for seed in SEEDS:
                self.assertEqual(falls(make(seed=seed)), 0, (make.__name__, seed))

    def test_walking_running_stairs_and_desk_knocks_are_not(self):
        self.assertEqual(falls(traces.walking(120, seed=3)), 0)
        self.assertEqual(falls(traces.running(60, seed=4)), 0)
        self.assertEqual(falls(traces.stairs(60, seed=5)), 0)
        self.assertEqual(falls(traces.bumps(120, seed=6)), 0)

    def test_the_impact_must_be_hard_and_soon_after_the_free_fall(self):
        def fall(impact_mg, delay_ms):
            upright = [(0, 0, 1000)] * 100
            free = [(0, 0, 100)] * 20  # 200 ms at 0.1 g
            gap = [(0, 0, 1000)] * (delay_ms // 10)
            side = [(1000, 0, 0)]
            hit = [(1000 + impact_mg, 0, 0)] * 3  # along the new vertical: 1 g + the impact
            return upright + free + gap + hit + side * 400
        self.assertEqual(falls(fall(1500, 0)), 1)  # 2.5 g in all
        self.assertEqual(falls(fall(800, 0)), 0)  # 1.8 g: under IMPACT_MG
        self.assertEqual(falls(fall(1500, 300)), 1)
        self.assertEqual(falls(fall(1500, 500)), 0)  # past IMPACT_WINDOW_MS

    def test_a_jump_is_a_fall_but_for_landing_upright(self):
        # what keeps a jump out is the posture check alone
        class NoTilt(FallDetector):
            TILT_COS2_PCT = 100
        self.assertEqual(len(hits(NoTilt(), traces.jump(seed=1))), 1)
        self.assertEqual(falls(traces.jump(seed=1)), 0)

    def test_a_wearer_who_lies_still_before_getting_up_gets_the_pre_alarm(self):
        self.assertEqual(falls(traces.fall_then_get_up(seed=2, lie_ms=4000)), 1)
        self.assertEqual(falls(traces.fall_then_get_up(seed=2)), 0)

    def test_a_dropped_wearable_is_a_fall_unless_it_lands_the_way_it_was_worn(self):
        # the honest hard case: a table strike after a true free fall, then dead still
        detected = upright = 0
        for seed in range(20):
            trace = traces.dropped_on_table(seed=seed)
            if trace[-1][2] > 800:  # landed face up, as the wrist is held upright
                upright += 1
                self.assertEqual(falls(trace), 0, seed)
            else:
                detected += falls(trace)
        self.assertEqual(detected, 20 - upright)
        self.assertTrue(0 < upright < 20)


class NotConfused(unittest.TestCase):
    def test_a_double_tap_is_not_a_fall_and_a_fall_is_not_a_double_tap(self):
        for seed in SEEDS:
            tap = traces.wrist_double_tap(seed=seed)
            self.assertEqual((double_taps(tap), falls(tap)), (1, 0), seed)
            for make in FALLS:
                fall = make(seed=seed)
                self.assertEqual((falls(fall), double_taps(fall)), (1, 0), (make.__name__, seed))

    def test_a_double_tap_while_lying_after_a_fall_is_still_one_double_tap(self):
        # the answer to the responder's prompt, from a wearer on the floor
        fall = traces.side_fall(seed=4)
        tap = traces.double_tap(2500, lead_ms=500, seed=4)
        lying = fall[-1]
        answer = [(x + lying[0], y + lying[1], z + lying[2] - 1000) for x, y, z in tap]
        self.assertEqual(double_taps(fall + answer), 1)
        self.assertEqual(falls(fall + answer), 1)


class NoMotion(unittest.TestCase):
    def test_still_for_the_timeout_reports_once_at_the_timeout(self):
        got = hits(NoMotionDetector(30), quiet(3500))
        self.assertEqual(got, [30 * NoMotionDetector.ODR_HZ - 1])

    def test_the_default_is_two_minutes_after_the_last_movement(self):
        d = NoMotionDetector()
        self.assertEqual(d.timeout_s, 120)
        f = FallDetector()
        got, fell = [], []
        i = 0
        for x, y, z in traces.lying_after_fall(130, seed=2):
            if d.feed(x, y, z):
                got.append(i)
            if f.feed(x, y, z):
                fell.append(i)
            i += 1
        self.assertEqual(len(got), 1)
        self.assertEqual(len(fell), 1)
        # the last movement is the impact's settling, within a second of the impact
        after_impact = got[0] - f.impact_at
        self.assertTrue(120 * 100 <= after_impact <= 121 * 100, after_impact)

    def test_a_slump_in_a_chair_is_no_fall_but_no_motion_reports_it(self):
        # no free fall, no impact: only the no-motion time catches it
        fall, still = FallDetector(), NoMotionDetector()
        fell, got = [], []
        i = 0
        for x, y, z in traces.slump_from_chair(seed=3, still_s=125):
            if fall.feed(x, y, z):
                fell.append(i)
            if still.feed(x, y, z):
                got.append(i)
            i += 1
        self.assertEqual(fell, [])
        self.assertEqual(len(got), 1)
        self.assertTrue(120 * 100 <= got[0] <= 125 * 100, got)

    def test_movement_starts_the_time_again(self):
        trace = chain(quiet(2500), traces.single_tap(3000), quiet(2500))
        self.assertEqual(hits(NoMotionDetector(30), trace), [])
        trace = chain(quiet(2500), traces.walking(2), quiet(3100))
        self.assertEqual(hits(NoMotionDetector(30), trace), [2500 + 200 + 2999])

    def test_a_slow_turn_is_movement(self):
        # the wrist turned 90 degrees over 20 s: no sample jumps, the posture does
        turn = []
        for i in range(2000):
            turn.append((i * 1000 // 2000, 0, 1000 - i * 1000 // 2000))
        self.assertEqual(hits(NoMotionDetector(30), chain(quiet(1500), turn, quiet(1000))), [])

    def test_walking_running_and_desk_work_never_report(self):
        self.assertEqual(hits(NoMotionDetector(30), traces.walking(120, seed=3)), [])
        self.assertEqual(hits(NoMotionDetector(30), traces.running(60, seed=4)), [])
        self.assertEqual(hits(NoMotionDetector(30), traces.bumps(120, seed=6)), [])

    def test_reset_starts_the_time_again(self):
        d = NoMotionDetector(30)
        self.assertEqual(hits(d, quiet(2000)), [])
        d.reset()
        self.assertEqual(hits(d, quiet(2000)), [])

    def test_off_never_reports(self):
        self.assertEqual(hits(NoMotionDetector(0), quiet(4000)), [])

    def test_the_timeout_is_off_or_30_s_to_30_min(self):
        for ok in (0, 30, 120, 1800):
            self.assertEqual(NoMotionDetector(ok).timeout_s, ok)
        for bad in (1, 29, 1801, -30, 30.5, "120", True):
            with self.assertRaises(ValueError):
                NoMotionDetector(bad)


class Allocation(unittest.TestCase):
    def test_feeding_a_sample_allocates_nothing(self):
        if not hasattr(gc, "mem_alloc"):
            self.skipTest("CPython has no gc.mem_alloc (MicroPython only)")
        trace = traces.forward_fall(seed=1) + traces.jump(seed=1)
        fall, still = FallDetector(), NoMotionDetector()
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for s in trace:
            fall.feed(s[0], s[1], s[2])
            still.feed(s[0], s[1], s[2])
        used = gc.mem_alloc() - before
        gc.enable()
        self.assertEqual(used, 0)
