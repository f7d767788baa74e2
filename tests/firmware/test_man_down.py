# Man-down wired into the wearable, on the real MicroPython unix port with a simulated board
# (its accelerometer stand-in plays a trace through a FIFO and INT1 as the LIS3DH does) and a
# real Mosquitto; the test plays the gateway and checks every frame's MAC. The cancel window
# and the no-motion time are shortened to seconds (scenarios.py), the rules are the same.
import time

import vigil_protocol as p

MAN_DOWN = {"fall": True, "no_motion_s": 120, "cancel_s": 30}
SHORT = {"cancel_ms": 2000, "repeat_ms": 700}


def alarm_kinds(gw, count=0, wait=1.0):
    frames = gw.wait_frames("alarm", count) if count else gw.frames("alarm")
    if not count:
        time.sleep(wait)  # time for a frame the wearable might wrongly have sent to arrive
        frames = gw.frames("alarm")
    return [(f.kind, f.ref) for f in frames]


def test_a_fall_starts_a_pre_alarm_and_an_sos_press_cancels_it_with_nothing_sent(
        scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("fall_cancelled", man_down=MAN_DOWN, **SHORT)
    assert report["started"] is True
    assert report["stats"]["prealarms"] == 1 and report["stats"]["prealarms_cancelled"] == 1
    assert report["stats"]["raised"] == 0 and report["outbox"] == 0 and report["open"] == []
    assert alarm_kinds(gw) == []
    # Felt (the pre-alarm's own pattern), then the cancel; no alarm pattern.
    assert report["feedback"][0] == "prealarm" and report["feedback"][-1] == "sos_cancelled"
    assert set(report["feedback"]) == {"prealarm", "sos_cancelled"}
    assert report["state"] == 0  # watching again
    assert report["lines"] == ["vigil: man-down pre-alarm (fall)",
                               "vigil: man-down pre-alarm cancelled"]


def prompting(kind):
    """A gateway policy: every alarm acked RECEIVED, and one of `kind` prompted."""
    def policy(gw, frame):
        if frame.NAME != "alarm":
            return
        gw.ack(frame, p.RECEIVED)
        if frame.kind == kind:
            gw.action(frame, p.PROMPT_DOUBLE_TAP)
    return policy


def test_a_fall_not_cancelled_raises_fall_which_is_prompted_and_answered_by_a_double_tap(
        scenario, fake_gateway):
    gw = fake_gateway(prompting(p.FALL))
    report = scenario("fall_alarm", man_down=MAN_DOWN, **SHORT)
    assert report["started"] and report["raised"] and report["prompted"]
    assert report["confirmed"] and report["answered"]
    assert alarm_kinds(gw, 2) == [(p.FALL, 0), (p.DOUBLE_TAP, report["counter"])]
    feedback = report["feedback"]
    # The pre-alarm repeated through its window, then the alarm's stages as for an SOS.
    assert feedback.count("prealarm") >= 2
    assert feedback[feedback.count("prealarm"):] == ["sos_raised", "received", "prompt",
                                                     "confirmed"]
    assert report["stats"]["prealarms"] == 1  # lying still afterwards starts no other


def test_no_motion_for_its_time_raises_no_motion_after_the_pre_alarm(scenario, fake_gateway):
    gw = fake_gateway(prompting(p.NO_MOTION))
    report = scenario("no_motion", man_down=MAN_DOWN, no_motion_test_s=4, **SHORT)
    assert report["started"] and report["raised"] and report["acked"]
    # NO_MOTION then goes as an SOS goes: prompted, and answered by a double tap.
    assert report["prompted"] and report["confirmed"]
    assert alarm_kinds(gw, 2) == [(p.NO_MOTION, 0), (p.DOUBLE_TAP, report["counter"])]
    feedback = report["feedback"]
    assert feedback[feedback.count("prealarm"):] == ["sos_raised", "received", "prompt",
                                                     "confirmed"], feedback
    # 4 s after the last step, and up to one supervisor round (2 s) later: while still, the
    # supervisor keeps the no-motion time (give or take a 250 ms batch and the test's 20 ms)
    assert 3700 <= report["pre_ms"] <= 6500, report["pre_ms"]
    # Still, the sampler sleeps until the part sees movement or the time is up: from half a
    # second after the last step to the pre-alarm (3.5 s), the read at the deadline and
    # perhaps one more, not four a second.
    assert report["reads"] <= 2, report["reads"]
    assert report["feedback"][0] == "prealarm"
    assert report["lines"][0] == "vigil: man-down pre-alarm (no motion)"
    assert report["stats"]["prealarms"] == 1  # still afterwards, and tapping: no other


def test_while_a_duress_alarm_is_open_a_fall_pre_alarm_cues_nothing(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("duress_then_fall", man_down=MAN_DOWN, **SHORT)
    assert report["started"] and report["raised"] and report["acked"]
    # It ran, and its alarm went out (the responder learns of the fall) ...
    assert report["stats"]["prealarms"] == 1
    assert [k for k, _ in alarm_kinds(gw, 2)] == [p.DURESS, p.FALL]
    # ... with no motor, LED or pattern of any kind, ever.
    assert report["played"] == 0 and report["board_played"] == []
    assert report["feedback"] == []


def test_double_taps_start_no_pre_alarm_and_still_answer_a_prompt(scenario, fake_gateway):
    gw = fake_gateway(prompting(p.SOS))
    report = scenario("double_taps_with_man_down", man_down=MAN_DOWN, **SHORT)
    assert report["before_prompt"] == 0 and report["stats"]["prealarms"] == 0
    assert report["stats"]["taps_ignored"] == 0  # no prompt: the tap detector is not even fed
    assert report["prompted"] and report["answered"]
    assert alarm_kinds(gw, 2) == [(p.SOS, 0), (p.DOUBLE_TAP, report["counter"])]
    assert "prealarm" not in report["feedback"]


def test_the_accelerometer_is_read_in_batches_while_moving_and_not_while_still(scenario):
    report = scenario("accel_wakeups", man_down=MAN_DOWN)
    print("motion task reads per second: walking %.1f, still %.1f, desk work %.1f"
          % (report["walking_per_s"], report["still_per_s"], report["desk_per_s"]))
    assert 3 <= report["walking_per_s"] <= 5  # a batch of 25 at 100 Hz: 4 a second
    assert report["still_per_s"] == 0
    # A knock every few seconds: woken by it, a batch or two, asleep again.
    assert report["desk_per_s"] < 2


def test_man_down_units_pass_on_micropython_unix_port(root, micropython):
    import importlib
    import re
    import subprocess
    import unittest

    cmd, env = micropython
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py"),
                                 "test_man_down_units"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    match = re.search(r"VIGIL-MPY implementation=micropython \S+ ran=(\d+) failures=(\d+)",
                      proc.stdout)
    assert match, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (int(match.group(2)), proc.returncode) == (0, 0), proc.stdout[-5000:]
    expected = unittest.TestLoader().loadTestsFromModule(
        importlib.import_module("test_man_down_units")).countTestCases()
    assert int(match.group(1)) == expected
