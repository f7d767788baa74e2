# The broker the other tests rely on: a real Mosquitto, with ACLs that really filter.
import queue
import time

import paho.mqtt.client as mqtt
import pytest


def connect(broker, user=None, password=None):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if user:
        client.username_pw_set(user, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_publish_subscribe_round_trip(mosquitto):
    got = queue.Queue()
    sub = connect(mosquitto)
    sub.on_message = lambda c, u, m: got.put(m.payload)
    sub.subscribe("t/x", qos=1)
    time.sleep(0.2)
    pub = connect(mosquitto)
    pub.publish("t/x", b"\x00\x01", qos=1).wait_for_publish(5)
    assert got.get(timeout=5) == b"\x00\x01"
    sub.loop_stop()
    pub.loop_stop()


def test_acl_blocks_delivery_outside_a_users_topics(mosquitto_factory):
    broker = mosquitto_factory(passwords={"a": "pa", "gw": "pg"},
                               acl="user gw\ntopic read up/#\n\npattern write up/%u\n")
    got = queue.Queue()
    gw = connect(broker, "gw", "pg")
    gw.on_message = lambda c, u, m: got.put((m.topic, m.payload))
    gw.subscribe("up/#", qos=1)
    time.sleep(0.2)
    dev = connect(broker, "a", "pa")
    dev.publish("up/b", b"spoof", qos=1).wait_for_publish(5)
    dev.publish("up/a", b"mine", qos=1).wait_for_publish(5)
    assert got.get(timeout=5) == ("up/a", b"mine")
    with pytest.raises(queue.Empty):
        got.get(timeout=0.5)
    gw.loop_stop()
    dev.loop_stop()
