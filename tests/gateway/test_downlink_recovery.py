# A stored downlink (a DELIVERED ack, a responder action) is sent only once the broker has
# acknowledged it: the gateway SIGKILLed after handing one to paho, before its PUBACK, publishes
# it again after the restart, the same bytes, and the wearable's persistent session gets it.
# A proxy between the gateway and the broker stops the chosen PUBLISH where the test wants it:
# kept back (it never left the gateway's socket, as far as the broker knows), or passed on with
# the broker's PUBACK held back. No loss across five kills; nor across a cut connection.
import pytest

import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from mqtt_proxy import PUBACK, PUBLISH, MqttProxy
from vigil_responder import ActionsClient, ResponderBackend

DEV = 0x00D0D0D0
KEY = key_for(DEV)
SECRET = b"downlink-recovery-secret-0123456789"
TOKEN = "downlink-recovery-token-0123456789"


def _is(ref, action=None):
    """match(topic, payload) for the proxy: the DELIVERED ack (action None) or the action
    downlink naming alarm `ref`."""
    def match(topic, payload):
        try:
            frame = p.decode(payload, p.DeviceKey(KEY), p.DOWN)
        except p.RemoteProtocolError:
            return False
        if action is None:
            return isinstance(frame, p.Ack) and frame.stage == p.DELIVERED and frame.ref == ref
        return isinstance(frame, p.Action) and frame.action == action and frame.ref == ref
    return match


@pytest.fixture
def backend():
    b = ResponderBackend(SECRET).start()
    yield b
    b.stop()


@pytest.fixture
def make_site(mosquitto_factory, gateway_factory, devices, backend, tmp_path):
    """make(wearable=True) -> (gateway, proxy, wearable or None, actions client, broker)."""
    proxies = []

    def make(wearable=True):
        broker = mosquitto_factory()
        proxy = MqttProxy(broker.port).start()
        proxies.append(proxy)
        write_secret(tmp_path / "secret", SECRET)
        write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
        gw = gateway_factory(proxy.port, forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
                             **{"forward.webhook": {"url": backend.url,
                                                    "secret_file": str(tmp_path / "secret")},
                                "actions": {"tokens_file": str(tmp_path / "tokens")}})
        gw.add_device(DEV, KEY)
        gw.start()
        # The wearable: its own persistent session, straight to the broker, not by the proxy.
        device = devices(broker.port, DEV, KEY) if wearable else None
        api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN)
        return gw, proxy, device, api, broker

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def site(make_site):
    return make_site()[:4]


def _alarm(gw, wearable):
    counter = wearable.next_counter()
    wearable.publish(p.encode(p.Alarm(DEV, counter, p.SOS), wearable.key))
    wearable.wait_acked([counter])
    wait_for(lambda: any(i["counter"] == counter for i in gw.incidents()), what="the incident")
    return counter, next(i["id"] for i in gw.incidents() if i["counter"] == counter)


def test_a_downlink_handed_to_paho_survives_five_kills_before_its_puback(site):
    gw, proxy, wearable, api = site
    first, first_incident = None, None
    # (what is held, how): kept back from the broker, or passed on with its PUBACK held back
    rounds = [("delivered", PUBLISH), ("acknowledge", PUBACK), ("delivered", PUBACK),
              ("prompt_double_tap", PUBLISH), ("resolve", PUBLISH)]
    for what, mode in rounds:
        if what == "delivered":
            # the DELIVERED ack follows the webhook's 2xx: held from the first publication on
            counter = wearable.counter + 1
            proxy.hold(_is(counter), mode)
            counter, incident = _alarm(gw, wearable)
            if first is None:
                first, first_incident = counter, incident
        else:
            code = {"acknowledge": p.ACKNOWLEDGED, "prompt_double_tap": p.PROMPT_DOUBLE_TAP,
                    "resolve": p.RESOLVED}[what]
            proxy.hold(_is(first, code), mode)
            status, body = api.act(first_incident, what)
            assert status == 200 and body["effect"] == "applied", body
        assert proxy.held.wait(15), "the gateway never published the %s downlink" % what
        held = proxy.held_payload
        if mode == PUBLISH:
            assert held not in wearable.raw  # the broker never had it
        gw.kill()  # before any PUBACK for it reached the gateway
        gw.start()
        wait_for(lambda: held in wearable.raw, 15,
                 "the %s downlink (%s) after the restart" % (what, mode))
    assert gw.starts == 6
    assert wearable.bad_downlinks == []
    # Every copy the wearable got of a stored downlink is the same bytes (one counter each).
    frames = {}
    for raw in wearable.raw:
        frame = p.decode(raw, wearable.key, p.DOWN)
        frames.setdefault(frame.counter, set()).add(raw)
    assert all(len(copies) == 1 for copies in frames.values())
    sent = gw.metrics()
    assert sent['vigil_gateway_downlinks_total{path="mqtt",what="RESOLVED"}'] == 1


def test_a_downlink_whose_connection_is_cut_before_its_puback_is_published_again(site):
    gw, proxy, wearable, api = site
    counter = wearable.counter + 1
    proxy.hold(_is(counter), PUBLISH)
    _alarm(gw, wearable)
    assert proxy.held.wait(15)
    held = proxy.held_payload
    proxy.drop()  # the network goes; the gateway reconnects and paho sends it again
    wait_for(lambda: held in wearable.raw, 15, "the DELIVERED ack after the reconnect")
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlinks_total{path="mqtt",what="DELIVERED"}') == 1, 10,
        "the PUBACK to be recorded")
    assert gw.metrics()["vigil_gateway_mqtt_connects_total"] >= 2
    events = [e for e in gw.log_events() if e["event"] == "downlink_sent"]
    assert [(e["what"], e["ref"]) for e in events] == [("DELIVERED", counter)]


def test_a_downlink_no_session_took_waits_for_its_wearable(make_site, devices):
    gw, proxy, _, api, broker = make_site(wearable=False)
    # The wearable's alarm reaches the gateway, but it has no session at the broker yet (it
    # never subscribed): the broker answers the DELIVERED ack "no matching subscribers".
    import paho.mqtt.client as mqtt

    bare = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bare-%08x" % DEV)
    bare.connect("127.0.0.1", broker.port)
    bare.loop_start()
    bare.publish("vigil/up/%08x" % DEV, p.encode(p.Alarm(DEV, 1, p.SOS), p.DeviceKey(KEY)),
                 qos=1).wait_for_publish(5)
    bare.disconnect()
    bare.loop_stop()
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlink_retries_total{reason="no_subscriber"}', 0) >= 1, 15,
        "the broker's 'no subscribers' answer")
    assert gw.metrics()['vigil_gateway_downlinks_total{path="mqtt",what="DELIVERED"}'] == 0
    # Now it connects with its persistent session; its first check-in says it is there.
    wearable = devices(broker.port, DEV, KEY)
    wearable.counter = 1
    wearable.publish(wearable.checkin())
    wait_for(lambda: any(isinstance(f, p.Ack) and f.stage == p.DELIVERED and f.ref == 1
                         for f in list(wearable.downlinks.queue)), 10,
             "the DELIVERED ack once the wearable is heard from")
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlinks_total{path="mqtt",what="DELIVERED"}') == 1, 10, "sent")
    assert any(e["event"] == "downlink_not_taken" and e["reason"] == "no_subscriber"
               for e in gw.log_events())
