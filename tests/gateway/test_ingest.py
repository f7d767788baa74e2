# The gateway end to end through a real Mosquitto: happy path, every rejection reason, floods
# of garbage, and what its logs may never contain.
import os
import random
import struct

import pytest

import vigil_protocol as p
from gateway_harness import key_for, sign_raw, wait_for

DEV = 0x00C0FFEE
OTHER = 0x00BADA55


@pytest.fixture
def running(mosquitto_factory, gateway_factory, devices):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port)
    gw.add_device(DEV, key_for(DEV), interval=60)
    gw.add_device(OTHER, key_for(OTHER))
    gw.start()
    device = devices(broker.port, DEV, key_for(DEV))
    return broker, gw, device


def test_alarm_is_persisted_then_acknowledged_with_a_signed_received_ack(running):
    broker, gw, device = running
    data = device.alarm(p.SOS, location=(515072000, -1275000, 12), battery=77)
    device.publish(data)
    ack = device.downlinks.get(timeout=10)
    assert isinstance(ack, p.Ack)
    assert (ack.device_id, ack.ref, ack.stage) == (DEV, 1, p.RECEIVED)
    assert device.bad_downlinks == []
    [incident] = gw.incidents()
    assert (incident["device"], incident["counter"], incident["kind"], incident["state"]) == \
        ("00c0ffee", 1, "SOS", "open")
    assert "51.5072000,-0.1275000" in incident["audit"][0]["detail"]
    assert gw.frames("new") == 1
    metrics = gw.metrics()
    assert metrics['vigil_gateway_acks_total{stage="RECEIVED"}'] == 1
    assert metrics["vigil_gateway_ack_latency_seconds_count"] == 1
    assert metrics['vigil_gateway_queue_depth{queue="inbound"}'] == 0
    assert 'vigil_gateway_queue_depth{queue="downlink_unconfirmed"}' in metrics
    assert metrics['vigil_gateway_devices{state="active"}'] == 2
    assert metrics['vigil_gateway_incidents{state="open"}'] == 1
    assert metrics["vigil_gateway_mqtt_connected"] == 1


def test_double_tap_attaches_to_the_alarm_it_names(running):
    broker, gw, device = running
    device.publish(device.alarm(p.DURESS))
    device.publish(device.checkin(interval=60))
    device.publish(device.alarm(p.DOUBLE_TAP, ref=1))
    device.wait_acked([1, 2, 3])
    [incident] = gw.incidents()
    assert (incident["kind"], incident["state"]) == ("DURESS", "needs_help")
    events = [(a["event"], a["detail"]) for a in incident["audit"]]
    assert events[1][0] == "wearer_confirms"
    assert events[1][1].startswith("wearer confirms they need help")
    text = gw.cli("incidents", "--audit").stdout
    assert "wearer confirms they need help" in text


def test_a_double_tap_before_its_alarm_is_kept_then_raised_if_the_alarm_never_comes(
        mosquitto_factory, gateway_factory, devices):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port, incidents={"double_tap_wait_s": 1.0},
                         supervision={"check_every_s": 0.1})
    gw.add_device(DEV, key_for(DEV))
    gw.start()
    device = devices(broker.port, DEV, key_for(DEV))
    # 3 answers alarm 2, which comes after it: one incident, confirmed
    device.counter = 2
    device.publish(device.alarm(p.DOUBLE_TAP, ref=2))
    device.publish(p.encode(p.Alarm(DEV, 2, p.SOS), device.key))
    # 5 answers alarm 4, which never comes: an incident of its own
    device.counter = 4
    device.publish(device.alarm(p.DOUBLE_TAP, ref=4))
    device.wait_acked([2, 3, 5])
    wait_for(lambda: len(gw.incidents()) == 2, 10, "the tap's own incident")
    assert sorted((i["counter"], i["kind"], i["state"], [a["event"] for a in i["audit"]])
                  for i in gw.incidents()) == [
        (2, "SOS", "needs_help", ["raised", "wearer_confirms"]),
        (4, "SOS", "needs_help", ["raised", "wearer_confirms"])]
    metrics = gw.metrics()
    assert metrics['vigil_gateway_early_double_taps_total{outcome="kept"}'] == 2
    assert metrics['vigil_gateway_early_double_taps_total{outcome="raised"}'] == 1
    assert [e["ref"] for e in gw.log_events() if e["event"] == "double_tap_raised"] == [4]


def test_a_retransmission_is_acknowledged_again_and_creates_nothing(running):
    broker, gw, device = running
    data = device.alarm(p.FALL)
    device.publish(data)
    device.wait_acked([1])
    device.publish(data)
    wait_for(lambda: device.acked.get(1) == 2, what="second ack")
    assert len(gw.incidents()) == 1
    assert gw.frames("retransmission") == 1


def _frames_for_every_reason(key):
    """(reason, topic device, payload) for every rejection the gateway counts."""
    def raw(ver_type=0x11, device=DEV, counter=500, body=b"\x01\x00\x00", ext=b""):
        return struct.pack(">BII", ver_type, device, counter) + body + ext

    good = sign_raw(key, raw())
    ack = p.encode(p.Ack(DEV, 7, 1, p.RECEIVED), key)
    yield "oversized", DEV, bytes(65)
    yield "truncated", DEV, good[:12]
    yield "unsupported_version", DEV, b"\x21" + good[1:]
    yield "unknown_type", DEV, b"\x13" + good[1:]
    yield "wrong_direction", DEV, ack
    yield "bad_mac", DEV, good[:-1] + bytes([good[-1] ^ 1])
    yield "unknown_kind", DEV, sign_raw(key, raw(counter=501, body=b"\x09\x00\x00"))
    yield "bad_field", DEV, sign_raw(key, raw(counter=502, body=b"\x01\x00\x05"))
    yield "bad_extension", DEV, sign_raw(key, raw(counter=503, ext=b"\x02\x03abc"))
    yield "new", DEV, good  # counter 500 accepted: the window top moves to 500
    yield "stale_counter", DEV, p.encode(p.Alarm(DEV, 400, p.SOS), key)
    yield "counter_reuse", DEV, p.encode(p.Alarm(DEV, 500, p.FALL), key)
    yield "device_mismatch", OTHER, good
    yield "unknown_device", 0x0BADBEEF, p.encode(p.Alarm(0x0BADBEEF, 1, p.SOS), key)


def test_every_rejection_reason_is_rejected_and_counted(running):
    broker, gw, device = running
    key = key_for(DEV)
    expected = []
    for reason, topic_device, payload in _frames_for_every_reason(key):
        device.publish(payload, topic="vigil/up/%08x" % topic_device)
        expected.append(reason)
    device.publish(b"\x11", topic="vigil/up/C0FFEE")  # upper case: not the layout
    expected.append("malformed_topic")
    gw.cli("device", "revoke", "%08x" % OTHER)
    device.publish(p.encode(p.Alarm(OTHER, 1, p.SOS), key_for(OTHER)),
                   topic="vigil/up/%08x" % OTHER)
    expected.append("revoked_device")
    reasons = [r for r in expected if r != "new"]
    wait_for(lambda: all(gw.rejections(r) >= 1 for r in reasons), what="every reason counted")
    for reason in reasons:
        assert gw.rejections(reason) == 1, reason
    assert gw.frames("rejected") == len(reasons)
    # Only frame 500 was accepted, and only it was acknowledged.
    device.wait_acked([500])
    assert set(device.acked) == {500}
    logged = {e.get("reason") for e in gw.log_events() if e["event"] == "frame_rejected"}
    assert set(reasons) <= logged


def test_a_key_file_others_can_read_is_refused(running):
    broker, gw, device = running
    key_file = gw.dir / "data" / "keys" / ("%08x.v1.key" % DEV)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert os.stat(key_file.parent).st_mode & 0o777 == 0o700
    os.chmod(key_file, 0o644)
    # The gateway may have cached the key already: a fresh gateway must refuse the file.
    gw.stop()
    gw.start()
    device.publish(device.alarm())
    wait_for(lambda: gw.rejections("key_unavailable") == 1, what="key_unavailable")
    assert device.acked == {}


def test_a_flood_of_garbage_does_not_crash_it(running):
    broker, gw, device = running
    rng = random.Random(4)
    topics = ["vigil/up/%08x" % DEV, "vigil/up/zzzzzzzz", "vigil/up/00000000",
              "vigil/status/%08x" % DEV, "vigil/up/%08x" % OTHER, "vigil/up/1"]
    sent = 0
    for i in range(2000):
        n = rng.choice([0, 1, 9, 17, 20, 21, 22, 30, 64, 65, 300])
        payload = bytes(rng.getrandbits(8) for _ in range(n))
        if i % 3 == 0 and n >= 20:  # a well-formed header, so the MAC check is reached
            payload = struct.pack(">BII", 0x11, DEV, i + 1) + payload[9:]
        device.publish(payload, topic=rng.choice(topics), wait=False)
        sent += 1
    device.publish(b"", wait=True)
    wait_for(lambda: sum(gw.frames(r) for r in ("new", "retransmission", "rejected", "status"))
             >= sent + 1, timeout=60, what="flood processed")
    assert gw.proc.poll() is None
    assert gw.get("/healthz")[0] == 200
    device.counter = 99999
    device.publish(device.alarm())
    device.wait_acked([100000])


def test_logs_and_cli_output_never_contain_key_material(running, tmp_path):
    broker, gw, device = running
    device.publish(device.alarm(p.SOS))
    device.publish(sign_raw(key_for(DEV), b"\x11" + bytes(11)))  # rejected: bad field
    device.wait_acked([1])
    record = tmp_path / "record.json"
    out = gw.cli("device", "add", "00000077", "--record-out", str(record))
    assert os.stat(record).st_mode & 0o777 == 0o600
    import json
    secret = json.loads(record.read_text())
    rotated = gw.cli("device", "rotate-key", "%08x" % OTHER, "--record-out",
                     str(tmp_path / "rotated.json"))
    listing = gw.cli("device", "list").stdout + gw.cli("incidents", "--json", "--audit").stdout
    everything = gw.log() + out.stdout + out.stderr + rotated.stdout + listing
    for key in (key_for(DEV), key_for(OTHER), bytes.fromhex(secret["key"])):
        assert key.hex() not in everything
        assert key.hex().upper() not in everything
    assert secret["mqtt_password"] not in everything


def test_a_silent_device_raises_lost_contact_and_its_return_is_recorded(
        mosquitto_factory, gateway_factory, devices):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port, supervision={"grace_s": 1, "check_every_s": 0.1})
    gw.add_device(DEV, key_for(DEV))
    gw.start()
    device = devices(broker.port, DEV, key_for(DEV))
    device.publish(device.checkin(interval=1))
    device.wait_acked([1])
    wait_for(lambda: any(i["kind"] == "LOST_CONTACT" for i in gw.incidents()), timeout=20,
             what="LOST_CONTACT")
    assert gw.metrics()['vigil_gateway_devices{state="lost_contact"}'] == 1
    device.publish(device.checkin(interval=600))
    device.wait_acked([2])
    [lost] = [i for i in gw.incidents() if i["kind"] == "LOST_CONTACT"]
    assert lost["state"] == "closed"
    assert [a["event"] for a in lost["audit"]] == ["raised", "contact_restored"]
