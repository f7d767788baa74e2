# Security at the broker: the password and ACL files `vigil gateway broker-config` writes keep
# each device to its own topics; TLS to the broker works with a CA made here, for this test.
import queue
import time

import pytest

import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from tls_ca import make_ca

A = 0x0000000A
B = 0x0000000B
PASSWORDS = {A: "pass-of-a", B: "pass-of-b"}


def _secured_gateway(mosquitto_factory, gateway_factory, tmp_path, **mqtt):
    """A gateway and a broker configured from its registry (passwords, ACL)."""
    write_secret(tmp_path / "gw.pw", "gateway-secret\n")
    gw = gateway_factory(1, mqtt=dict(username="vigil-gateway",
                                      password_file=str(tmp_path / "gw.pw"), **mqtt))
    for device_id, password in PASSWORDS.items():
        gw.add_device(device_id, key_for(device_id), password)
    out = gw.cli("broker-config", "--out", str(tmp_path / "broker-files")).stdout
    assert "vigil.conf" in out  # (these tests use its passwords and ACL with listeners of theirs)
    acl = (tmp_path / "broker-files" / "acl").read_text()
    assert "pattern write vigil/up/%u" in acl and "topic write vigil/down/#" in acl
    passwords = (tmp_path / "broker-files" / "passwords").read_text()
    assert "pass-of-a" not in passwords and "gateway-secret" not in passwords
    return gw, "password_file %s\nacl_file %s\n" % (tmp_path / "broker-files" / "passwords",
                                                    tmp_path / "broker-files" / "acl")


def _set_port(gw, port):
    text = gw.config.read_text().replace("port = 1\n", "port = %d\n" % port, 1)
    gw.config.write_text(text)


def test_a_device_cannot_publish_as_another(mosquitto_factory, gateway_factory, devices,
                                            tmp_path):
    gw, files = _secured_gateway(mosquitto_factory, gateway_factory, tmp_path)
    broker = mosquitto_factory(allow_anonymous=False, extra=files)
    _set_port(gw, broker.port)
    gw.start()
    a = devices(broker.port, A, key_for(A), password=PASSWORDS[A])
    b = devices(broker.port, B, key_for(B), password=PASSWORDS[B])
    # A, holding only its own key and credentials, tries B's uplink topic: the broker refuses
    # delivery, so the gateway never sees it (not even as a device_mismatch).
    a.publish(p.encode(p.Alarm(A, 1, p.SOS), key_for(A)), topic=b.up)
    # A also listens on B's downlink topic: the broker filters it out.
    spy = queue.Queue()
    a.client.message_callback_add(b.down, lambda c, u, m: spy.put(m.payload))
    a.client.subscribe(b.down, qos=1)
    b.publish(b.alarm(p.DURESS))
    b.wait_acked([1])
    a.publish(a.alarm(p.SOS))
    a.wait_acked([1])
    assert gw.frames("new") == 2
    assert gw.frames("rejected") == 0
    assert sorted((i["device"], i["kind"]) for i in gw.incidents()) == [
        ("0000000a", "SOS"), ("0000000b", "DURESS")]
    with pytest.raises(queue.Empty):
        spy.get(timeout=0.5)


def test_wrong_credentials_are_refused_and_the_gateway_says_so(mosquitto_factory,
                                                               gateway_factory, tmp_path):
    gw, files = _secured_gateway(mosquitto_factory, gateway_factory, tmp_path)
    broker = mosquitto_factory(allow_anonymous=False, extra=files)
    _set_port(gw, broker.port)
    write_secret(tmp_path / "gw.pw", "not-the-password\n")
    gw.start(wait=False)
    wait_for(lambda: any(e["event"] == "mqtt_refused" for e in gw.log_events()),
             what="the refusal to be logged")
    assert gw.get("/healthz")[0] == 503
    assert "not-the-password" not in gw.log()


def test_tls_to_the_broker(mosquitto_factory, gateway_factory, devices, tmp_path):
    tls = make_ca(tmp_path / "pki")
    gw, files = _secured_gateway(mosquitto_factory, gateway_factory, tmp_path)
    broker = mosquitto_factory(allow_anonymous=False, extra=files, tls=tls)
    text = gw.config.read_text().replace("port = 1\n", "port = %d\n" % broker.tls_port, 1)
    gw.config.write_text(text + '[mqtt.tls]\nenabled = true\nca_file = "%s"\n' % tls["cafile"])
    gw.start()
    assert any(e["event"] == "mqtt_connected" and e["tls"] for e in gw.log_events())
    a = devices(broker.tls_port, A, key_for(A), password=PASSWORDS[A], tls_ca=tls["cafile"])
    a.publish(a.alarm(p.SOS))
    a.wait_acked([1])


def test_tls_with_an_unknown_ca_does_not_connect(mosquitto_factory, gateway_factory, tmp_path):
    tls = make_ca(tmp_path / "pki")
    other = make_ca(tmp_path / "other-pki")
    broker = mosquitto_factory(tls=tls)
    gw = gateway_factory(broker.tls_port)
    gw.config.write_text(gw.config.read_text() +
                         '[mqtt.tls]\nenabled = true\nca_file = "%s"\n' % other["cafile"])
    gw.start(wait=False)
    wait_for(lambda: any(e["event"] == "mqtt_connect_failed" for e in gw.log_events()),
             what="the TLS failure to be logged")
    assert gw.get("/healthz")[0] == 503
    assert gw.proc.poll() is None  # it keeps trying, it does not crash
    time.sleep(0.3)
    assert gw.proc.poll() is None
