# GNSS wired into the wearable, on the real MicroPython unix port: a simulated board whose UART
# stand-in is fed what a receiver sends (a burst of GGA, GSA, GSV and RMC a second, in chunks,
# as a UART's interrupt hands them over), the firmware's real MQTT link and a real Mosquitto;
# the test plays the gateway and decodes every frame with vigil_protocol.
import vigil_protocol as p
from fw_harness import KEY

KEY_HEX = KEY.hex()

GNSS = {"uart": 1, "rx": 12, "tx": 13, "baud": 9600}
LAT, LON, ACC = 515007800, -1275700, 5  # 5130.0468 N, 00007.6542 W, HDOP 0.9


def uplinks(gw, name=None):
    """(size, decoded frame) of every uplink that verified."""
    with gw.lock:
        return [(len(raw), f) for _, raw, f in gw.uplinks
                if not isinstance(f, str) and (name is None or f.NAME == name)]


def age_bounds(sealed_ms, fix_ms):
    """The fix age a frame sealed at about `sealed_ms` (the log's time, a few ms after the
    sealing) must carry: the whole seconds since the fix's epoch, rounded up."""
    return (max(0, sealed_ms - 20 - fix_ms) + 999) // 1000, (sealed_ms - fix_ms + 999) // 1000


def test_an_sos_carries_the_fix_and_its_age_and_a_lost_fix_is_sent_with_its_true_age(
        scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("gnss_fix", gnss=GNSS)
    assert report["got"] and report["back"] and report["acked"], report
    sos_at, low_at = [t for t, _ in report["raised"]]
    (_, sos_fix_ms), (_, low_fix_ms), (_, stale_fix_ms, stale_at), (_, fresh_fix_ms, fresh_at) \
        = report["fixes"]
    alarms = [f for _, f in uplinks(gw.wait_frames("alarm", 2) and gw, "alarm")]
    assert [f.kind for f in alarms] == [p.SOS, p.LOW_BATTERY]
    sos, low = alarms
    # The SOS: the receiver's position and accuracy, and the age of its fix when sealed.
    assert sos.location[:3] == (LAT, LON, ACC)
    lo, hi = age_bounds(sos_at, sos_fix_ms)
    assert lo <= sos.location[3] <= hi and sos.location[3] <= 2, (sos.location, lo, hi)
    # The fix lost for 3.5 s (the receiver still talking, without one): the same position,
    # sent with its true age, never as current. The gateway shows it as stale past 60 s.
    assert low_fix_ms == stale_fix_ms  # no sentence since renewed it
    assert low.location[:3] == (LAT, LON, ACC)
    lo, hi = age_bounds(low_at, low_fix_ms)
    assert lo <= low.location[3] <= hi and low.location[3] >= 4, (low.location, lo, hi)
    checkins = [f for _, f in uplinks(gw, "checkin")]
    stale, fresh = checkins[-2:]
    assert stale.location[3] >= low.location[3]
    assert stale.location[3] >= (stale_at - stale_fix_ms) // 1000
    # The fix back: a check-in with a fresh one.
    assert fresh.location[:3] == (LAT, LON, ACC) and fresh.location[3] <= 1
    assert fresh_fix_ms != stale_fix_ms
    # Every alarm and check-in at one size, fix or none.
    assert {size for size, _ in uplinks(gw)} == {48}
    counters = report["counters"]
    assert counters["bad_checksum"] == counters["bad_sentence"] == counters["overflow"] == 0
    assert counters["ignored"] > 0  # GSA and GSV: read past, counted


def test_garbage_on_the_uart_loses_nothing_and_is_counted(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("gnss_garbage", gnss=GNSS)
    assert report["raised_ok"] and report["got"] and report["raised2"] and report["acked"]
    assert report["stats"]["restarts"] == 0  # the task never died of it
    counters = report["counters"]
    # Each kind of fault dropped its sentence alone, every burst, and was counted.
    assert counters["bad_checksum"] >= 3 and counters["bad_sentence"] >= 3, counters
    assert counters["overflow"] >= 3, counters
    assert counters["sentences"] >= 8, counters  # GGA and RMC of each burst still read
    alarms = [f for _, f in uplinks(gw.wait_frames("alarm", 2) and gw, "alarm")]
    assert [f.kind for f in alarms] == [p.SOS, p.DURESS]
    # Before any fix: the SOS goes, with no location (the noise made none up) ...
    assert report["no_fix"] is None and alarms[0].location is None
    # ... and once a fix got through the noise, the next alarm carries it.
    assert alarms[1].location[:3] == (LAT, LON, ACC) and alarms[1].location[3] <= 2
    # Without a fix and with one: the same size.
    sizes = [size for size, _ in uplinks(gw)]
    assert set(sizes) == {48}, sizes


def test_an_alarm_that_waited_for_a_link_goes_with_its_fix_as_old_as_it_is_then(
        scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("gnss_waited", gnss=GNSS)
    assert report["acked"]
    (raised_at, raised), (tx_at, tx) = report["raised"][0], report["tx"][0]
    key = p.DeviceKey(bytes.fromhex(KEY_HEX))
    first = p.decode(bytes.fromhex(raised), key, p.UP)
    sent = p.decode(bytes.fromhex(tx), key, p.UP)
    assert first.counter == sent.counter and len(bytes.fromhex(tx)) == 48
    assert first.location[:3] == sent.location[:3] == (LAT, LON, ACC)
    assert sent.age >= 3
    # Its fix: as old as it was when raised, plus the wait (never less than the truth).
    assert sent.location[3] >= first.location[3] + sent.age
    assert sent.location[3] >= (tx_at - report["fix_ms"]) // 1000
    assert sent.location[3] <= (tx_at - report["fix_ms"] + 999) // 1000 + 1


def test_with_gnss_and_no_fix_ever_frames_are_the_size_of_frames_with_one(
        scenario, fake_gateway):
    # The module's UART never speaks: the duress alarm and the check-ins carry no location,
    # sealed at the size they would have with one (the garbage test above has both in one run).
    gw = fake_gateway()
    report = scenario("duress_and_checkin", gnss=GNSS)
    assert report["acked"] and report["sent"] and report["location"] is None
    frames = uplinks(gw.wait_frames("checkin", 1) and gw)
    assert {f.NAME for _, f in frames} == {"alarm", "checkin"}
    assert {size for size, _ in frames} == {48}
    assert all(f.location is None for _, f in frames)


def test_a_module_whose_uart_did_not_open_changes_no_frame_size(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("duress_and_checkin", gnss=GNSS, uart_fails=True)
    assert report["acked"] and report["sent"] and report["location"] is None
    assert report["lines"] == ["vigil: gnss off: the module's UART did not open (None)"]
    assert "gnss" not in report["tasks"]
    frames = uplinks(gw.wait_frames("checkin", 1) and gw)
    assert {size for size, _ in frames} == {48}


def test_without_gnss_frames_keep_their_size(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("duress_and_checkin")
    assert report["acked"] and report["sent"]
    frames = uplinks(gw.wait_frames("checkin", 1) and gw)
    assert {f.NAME for _, f in frames} == {"alarm", "checkin"}
    assert {size for size, _ in frames} == {20}  # the core frame, no location ever added


def test_gnss_never_cues_the_wearer_in_duress(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("gnss_duress", gnss=GNSS)
    assert report["raised_ok"] and report["acked"]
    # No motor, LED or pattern of any kind: not for the alarm, not for a fix found or lost.
    assert report["played"] == [] and report["feedback"] == []
    alarm = [f for _, f in uplinks(gw.wait_frames("alarm", 1) and gw, "alarm")][0]
    assert alarm.kind == p.DURESS and alarm.location[:3] == (LAT, LON, ACC)
    assert {size for size, _ in uplinks(gw)} == {48}


def test_a_failing_uart_read_restarts_the_gnss_task(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("gnss_restart", gnss=GNSS)
    assert report["restarted"] and report["got"] and report["acked"], report
    assert report["died"] == ["vigil: task gnss died (OSError(5,)): restarting"] or \
        report["died"] == ["vigil: task gnss died (OSError(5)): restarting"], report["died"]
    assert report["stats"]["restarts"] == 1
    alarm = [f for _, f in uplinks(gw.wait_frames("alarm", 1) and gw, "alarm")][0]
    assert alarm.location[:3] == (LAT, LON, ACC)


def test_an_idle_unit_with_gnss_and_a_silent_module_never_wakes_its_gnss_task(scenario):
    report = scenario("idle", gnss=GNSS, idle_ms=5000)
    assert report["up"]
    assert "read_uart" not in report["wakes"], report["wakes"]
    # The same, the module sending its burst once a second in four pieces: the task wakes
    # only when bytes have come, at most once a piece (pieces already waiting are read
    # without a wait), and the name above is the task's.
    talking = scenario("idle", gnss=GNSS, idle_ms=5000, gnss_talks=64)
    wakes = talking["wakes"].get("read_uart", 0)
    print("gnss task wake-ups a second, a module sending 1 Hz bursts in 64-byte pieces: %.1f"
          % (wakes / 5))
    assert 5 <= wakes <= 6 * 4, talking["wakes"]


def test_a_bad_gnss_setting_stops_the_start_in_one_line(micropython, tmp_path):
    import json
    import subprocess

    from fw_harness import KEY, ROOT
    cmd, env = micropython
    (tmp_path / "fs").mkdir()
    proc = subprocess.run(cmd + [str(ROOT / "tests" / "firmware" / "scenarios.py")],
                          input=json.dumps({"scenario": "boot_gnss", "port": 1,
                                            "fs": str(tmp_path / "fs"), "device": "00c0ffee",
                                            "key": KEY.hex(), "gnss": dict(GNSS, rx=4)}),
                          env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("vigil:")]
    assert lines == ["vigil: cannot start: config: gnss.rx must be a free GPIO (0-48, not one "
                     "the board uses or the chip needs: see firmware/vigil_fw/board.py)"], \
        proc.stdout + proc.stderr
