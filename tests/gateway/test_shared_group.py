# Two gateways in one MQTT 5 shared subscription group (`mqtt.shared_group`), each with its own
# database: the broker hands each uplink to one of them. What that gives, and what it does not
# (gateway/README.md, "Several gateways: a shared group").
import vigil_protocol as p
from gateway_harness import key_for

# Topic prefixes, groups, client ids and device ids of their own, per test: the session broker
# is shared with other suites, and keeps every persistent session (and its subscriptions).
DEVICES = (0x5A000001, 0x5A000002, 0x5A000003)


def _gateways(mosquitto, gateway_factory, name):
    made = []
    for side in ("a", "b"):
        gw = gateway_factory(mosquitto.port, mqtt={
            "prefix": "vigil-%s" % name, "shared_group": "vigil-%s" % name,
            "client_id": "gw-%s-%s" % (name, side)})
        for device_id in DEVICES:
            gw.add_device(device_id, key_for(device_id))
        made.append(gw.start())
    return made


def _devices(mosquitto, devices, name):
    return [devices(mosquitto.port, d, key_for(d), prefix="vigil-%s" % name,
                    client_id="dev-%s-%08x" % (name, d)) for d in DEVICES]


def _alarms(gw):
    return {(int(i["device"], 16), i["counter"]) for i in gw.incidents()}


def test_two_gateways_in_a_group_share_a_stream_and_each_alarm_is_kept_and_acked_once(
        mosquitto, gateway_factory, devices):
    gw_a, gw_b = _gateways(mosquitto, gateway_factory, "shared-stream")
    wearables = _devices(mosquitto, devices, "shared-stream")
    per_device = 30
    for _ in range(per_device):
        for device in wearables:
            device.publish(device.alarm())
    for device in wearables:
        device.wait_acked(range(1, per_device + 1))

    at_a, at_b = _alarms(gw_a), _alarms(gw_b)
    assert at_a and at_b, "one gateway got the whole stream"
    assert not at_a & at_b, "an alarm was persisted by both gateways"
    assert at_a | at_b == {(d, c) for d in DEVICES for c in range(1, per_device + 1)}
    assert gw_a.frames("new") + gw_b.frames("new") == len(DEVICES) * per_device
    for device in wearables:
        assert device.acked == {c: 1 for c in range(1, per_device + 1)}
        assert device.bad_downlinks == []


def test_gateways_in_a_group_share_no_state(mosquitto, gateway_factory, devices):
    """The limits the README states: each gateway judges retransmissions by its own history
    and counts its own downlink counters."""
    gw_a, gw_b = _gateways(mosquitto, gateway_factory, "shared-nostate")
    device = _devices(mosquitto, devices, "shared-nostate")[0]
    first, second = device.alarm(), device.alarm()
    device.publish(first)  # the broker hands these out in turn: one gateway,
    device.publish(second)  # the other,
    device.publish(second)  # the first again: a retransmission new to it
    device.wait_acked([1, 2])

    # Alarm 2 is new to both gateways: an incident at each.
    assert sorted([gw_a.frames("new"), gw_b.frames("new")]) == [1, 2]
    assert _alarms(gw_a) & _alarms(gw_b) == {(DEVICES[0], 2)}

    # Each signs its acks with downlink counters of its own, from 1: the two first acks share
    # counter 1, and a wearable's downlink window (the firmware's, 32 counters) drops the one
    # that comes second as a reused counter.
    acks = [device.downlinks.get(timeout=10) for _ in range(3)]
    assert sorted((a.counter, a.ref) for a in acks) == [(1, 1), (1, 2), (2, 2)]
    window, dropped = p.ReplayWindow(32), []
    for ack in acks:
        try:
            window.accept(ack.counter, ack.tag)
        except p.CounterReuse:
            dropped.append(ack.counter)
    assert dropped == [1]
