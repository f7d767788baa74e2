# Nothing lost, nothing doubled: the gateway killed mid-burst, and the broker restarted
# mid-stream. Every alarm published is persisted once and acknowledged.
import threading
import time

import vigil_protocol as p
from gateway_harness import key_for, wait_for

DEV = 0x0000A11A


def _publish_in_background(device, count, pause_every=20, pause_s=0.005):
    """Publish `count` alarms from a thread, pacing a little so a burst spans the fault."""
    published = []

    def run():
        for i in range(count):
            data = device.alarm(p.SOS if i % 2 else p.FALL)
            device.publish(data, wait=False)
            published.append(device.counter)
            if i % pause_every == 0:
                time.sleep(pause_s)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, published


def _assert_each_alarm_once(gw, count):
    incidents = gw.incidents()
    counters = [i["counter"] for i in incidents]
    assert len(counters) == len(set(counters)), "an alarm was persisted twice"
    assert sorted(counters) == list(range(1, count + 1))


def test_sigkill_mid_burst_then_restart_loses_nothing_and_doubles_nothing(
        mosquitto_factory, gateway_factory, devices):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port)
    gw.add_device(DEV, key_for(DEV))
    gw.start()
    device = devices(broker.port, DEV, key_for(DEV))
    count = 1500
    thread, published = _publish_in_background(device, count)
    wait_for(lambda: len(device.acked) >= 150, what="the burst to be under way")
    gw.kill()
    acked_before = len(device.acked)
    assert acked_before < count, "the burst ended before the kill: nothing was tested"
    thread.join(30)  # the rest queue at the broker while the gateway is down
    gw.start()
    device.wait_acked(range(1, count + 1), timeout=60)
    _assert_each_alarm_once(gw, count)
    assert device.bad_downlinks == []


def test_broker_restart_mid_stream_recovers_without_loss(mosquitto_factory, gateway_factory,
                                                         devices):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port)
    gw.add_device(DEV, key_for(DEV))
    gw.start()
    device = devices(broker.port, DEV, key_for(DEV))
    count = 1000
    thread, published = _publish_in_background(device, count)
    wait_for(lambda: len(device.acked) >= 100, what="the stream to be under way")
    broker.restart()
    thread.join(30)
    device.wait_acked(range(1, count + 1), timeout=60)
    _assert_each_alarm_once(gw, count)
    gw.wait_healthy()
    assert gw.metrics()["vigil_gateway_mqtt_connects_total"] >= 2
