# The wearable's firmware on the real MicroPython unix port, on a simulated board, talking to
# a real Mosquitto broker. The test plays the gateway and checks every frame's MAC.
import time

import vigil_protocol as p

DEVICE = 0x00C0FFEE


def test_duress_gesture_sends_a_signed_duress_alarm_and_shows_nothing(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("duress")
    alarms = gw.wait_frames("alarm", 1)
    assert [(f.device_id, f.kind) for f in alarms] == [(DEVICE, p.DURESS)]
    assert report["acked"] is True
    assert report["played"] == [] and report["feedback"] == []  # no motor, no LED, ever


def test_three_duress_presses_are_not_the_gesture(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("duress_three_presses")
    assert report["stats"]["raised"] == 0 and report["outbox"] == 0
    time.sleep(0.5)  # time for a frame the wearable might wrongly have sent to arrive
    assert gw.frames("alarm") == []


def test_matching_ack_stops_retransmission(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("retransmit")
    assert report["acked"] is True
    assert report["sent_after"] == report["sent_at_ack"]
    sos = gw.wait_frames("alarm", 1)
    assert [f.kind for f in sos] == [p.SOS]
    assert report["feedback"] == ["sos_armed", "sos_raised", "received"]
    assert report["open"] == [[sos[0].counter, p.SOS, "received"]]


def test_forged_or_mismatched_acks_do_not_stop_retransmission(scenario, fake_gateway):
    forged_key = p.DeviceKey(bytes(32))

    def policy(gw, frame):
        if frame.NAME != "alarm":
            return
        copies = sum(1 for f in gw.frames("alarm") if f.counter == frame.counter)
        if copies == 1:
            gw.ack(frame, p.RECEIVED, key=forged_key)  # wrong key
            wrong = p.Alarm(frame.device_id, frame.counter + 1000, p.SOS)
            gw.ack(wrong, p.RECEIVED)  # right key, another counter
            reflected = p.encode(p.Alarm(frame.device_id, frame.counter, p.SOS), gw.key)
            gw.send(frame.device_id, reflected)  # its own uplink, reflected
        elif copies == 3:
            gw.ack(frame, p.RECEIVED)

    gw = fake_gateway(policy)
    report = scenario("retransmit", wait_ms=10000)
    copies = gw.wait_frames("alarm", 3)
    assert len(copies) >= 3 and len({f.tag for f in copies}) == 1  # byte-identical resends
    assert report["acked"] is True
    assert report["rejected"] == {"bad_mac": 1, "wrong_direction": 1}
    assert report["sent_after"] == report["sent_at_ack"]
    assert report["feedback"] == ["sos_armed", "sos_raised", "received"]


def test_prompt_then_double_tap_answers_that_alarm(scenario, fake_gateway):
    def policy(gw, frame):
        if frame.NAME == "alarm" and frame.kind == p.SOS:
            gw.ack(frame, p.RECEIVED)
            gw.action(frame, p.PROMPT_DOUBLE_TAP)
        elif frame.NAME == "alarm":
            gw.ack(frame, p.RECEIVED)

    gw = fake_gateway(policy)
    report = scenario("prompt_and_double_tap")
    # With no prompt open the software detector does not read the accelerometer at all (it
    # samples only while a prompt waits for the answer): the taps are not even seen.
    assert report["ignored_without_prompt"] == 0 and report["raised_before_sos"] == 0
    assert report["prompted"] and report["confirmed"] and report["answered"]
    kinds = [(f.kind, f.ref) for f in gw.wait_frames("alarm", 2)]
    assert kinds == [(p.SOS, 0), (p.DOUBLE_TAP, report["sos_counter"])]
    assert report["feedback"] == ["sos_armed", "sos_raised", "received", "prompt", "confirmed"]


def test_power_cut_at_every_flash_step_loses_no_alarm_and_reuses_no_counter(
        scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("power_cuts", timeout=300)
    cases = report["cases"]
    assert len(cases) >= 4 * 6  # every operation of the raise, for four kinds of cut
    by_device = {}
    for device, raw, frame in gw.uplinks:
        assert not isinstance(frame, str), frame
        by_device.setdefault(int(device, 16), []).append(frame)
    for case in cases:
        device = int(case["device"], 16)
        frames = by_device.get(device, [])
        label = "%s cut at %d (%s)" % (case["keep"] + (" fat" if case["fat"] else ""),
                                       case["cut_at"], case["ops"][-1] if case["cut"] else "-")
        done = case["ops"][:-1] if case["cut"] else case["ops"]
        a_removed = any(op.startswith("remove ob/%08x" % case["a"]) for op in done)
        kinds = [f.kind for f in frames if f.NAME == "alarm"]
        # A was raised before the cut: it is delivered unless its ack had cleared it.
        assert (p.SOS in kinds) == (not a_removed), label
        # B is delivered exactly when its outbox entry reached flash whole.
        b_written = any(op.startswith("write ob/") for op in done) or (
            case["cut"] and case["ops"][-1].startswith("write ob/") and case["keep"] == "all")
        assert (p.DURESS in kinds) == b_written, label
        # The alarm raised after the reboot always goes out, with a counter never used before.
        assert p.FALL in kinds, label
        assert case["left"] == 0, label
        counters = [f.counter for f in frames]
        assert len(counters) == len(set(counters)), label
        fall = [f for f in frames if f.NAME == "alarm" and f.kind == p.FALL][0]
        assert fall.counter > max(c for c in counters if c != fall.counter), label


def test_hardware_tap_engine_answers_a_prompt_and_nothing_else(scenario, fake_gateway):
    def policy(gw, frame):
        gw.ack(frame, p.RECEIVED)
        if frame.NAME == "alarm" and frame.kind == p.SOS:
            gw.action(frame, p.PROMPT_DOUBLE_TAP)

    gw = fake_gateway(policy)
    report = scenario("hardware_tap", hardware_taps=True)
    assert report["ignored"] == 1 and report["prompted"] and report["answered"]
    alarms = gw.wait_frames("alarm", 2)
    assert [(f.kind, f.ref) for f in alarms] == [(p.SOS, 0), (p.DOUBLE_TAP, alarms[0].counter)]


def test_checkins_carry_battery_and_low_battery_raises_one_alarm(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("battery", checkin_interval_s=10)
    assert report["stats"]["checkins"] >= 2
    checkins = gw.wait_frames("checkin", report["stats"]["checkins"])
    assert checkins[0].battery == 64 and not checkins[0].flags & p.FLAG_LOW_BATTERY
    assert checkins[-1].battery == 9 and checkins[-1].flags & p.FLAG_LOW_BATTERY
    assert checkins[-1].interval == 10
    assert [f.kind for f in gw.wait_frames("alarm", 1)] == [p.LOW_BATTERY]
    assert report["raised"] == 1 and "low_battery" in report["feedback"]


def test_watchdog_is_fed_only_while_no_task_is_stuck_mid_work(scenario):
    report = scenario("watchdog")
    assert report["timeout"] == 30000 and report["healthy"] >= 5
    # Fed at first (the stall is not yet STALL_MS old), then never again.
    assert 1 <= report["fed_soon_after"] == report["fed_later"] < report["healthy"]


def test_boot_messages_name_the_problem(mosquitto, micropython, tmp_path):
    import json
    import subprocess
    from fw_harness import KEY, ROOT
    cmd, env = micropython
    (tmp_path / "fs").mkdir()
    proc = subprocess.run(cmd + [str(ROOT / "tests" / "firmware" / "scenarios.py")],
                          input=json.dumps({"scenario": "boot_config", "port": mosquitto.port,
                                            "fs": str(tmp_path / "fs"), "device": "00c0ffee",
                                            "key": KEY.hex()}),
                          env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert "vigil: cannot start: config: vigil.json is missing: provision this device" in out
    assert "vigil: cannot start: config: mqtt.port must be an integer from 1 to 65535" in out
    assert "vigil: cannot start: config: man_down.no_motion_s must be 0 (off) or from 30 to " \
           "1800\nman_down: False" in out, out
    assert "vigil: cannot start: config: wifi_scan.every must be from 1 to 1000 (check-ins)\n" \
           "wifi_scan: False" in out, out
    assert KEY.hex() not in out


def test_tls_to_the_broker_with_per_device_credentials(scenario, mosquitto_factory, tmp_path):
    from fw_harness import FakeGateway
    from tls_ca import make_ca

    tls = make_ca(tmp_path / "pki")
    broker = mosquitto_factory(passwords={"00c0ffee": "dev-secret", "gw": "gw-secret"},
                               acl="user gw\ntopic read vigil/up/#\ntopic write vigil/down/#\n\n"
                                   "pattern write vigil/up/%u\npattern write vigil/status/%u\n"
                                   "pattern read vigil/down/%u\n", tls=tls)
    gw = FakeGateway(broker.tls_port, tls_ca=tls["cafile"], user="gw", password="gw-secret")
    try:
        report = scenario("duress", port=broker.tls_port, ca_file=tls["cafile"],
                          password="dev-secret")
        assert report["acked"] is True
        assert [f.kind for f in gw.wait_frames("alarm", 1)] == [p.DURESS]
    finally:
        gw.close()


def test_tls_refuses_a_broker_signed_by_another_ca(scenario, mosquitto_factory, tmp_path):
    from tls_ca import make_ca

    tls = make_ca(tmp_path / "pki")
    other = make_ca(tmp_path / "other")
    broker = mosquitto_factory(tls=tls)
    report = scenario("duress", port=broker.tls_port, ca_file=other["cafile"])
    assert report["acked"] is False and report["stats"]["sent"] == 0


def test_an_alarm_that_waited_for_a_link_goes_out_sealed_with_its_age(scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("waited")
    assert report["acked"] is True and report["fresh_before"] == 1
    [raised] = [p.decode(bytes.fromhex(f), gw.key, p.UP) for f in report["raised"]]
    [alarm] = gw.wait_frames("alarm", 1)
    # The same alarm (counter, kind), sealed again once before it first went out, with the
    # seconds it waited (2.5 s, rounded down); every copy sent is those bytes.
    assert (alarm.counter, alarm.kind) == (raised.counter, p.DURESS)
    assert raised.age == 0 and alarm.age == 2
    assert set(report["tx"]) == {p.encode(alarm, gw.key, 2).hex()} == {
        raw.hex() for _, raw, frame in gw.uplinks if getattr(frame, "NAME", "") == "alarm"}
    assert report["played"] == []  # duress: still nothing shown
