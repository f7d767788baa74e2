# `vigil gateway broker-config` writes a Mosquitto configuration fit for alarms (passwords,
# ACL and vigil.conf), and Mosquitto started on exactly those files shows it: no wearable can
# take another's persistent session or the gateway's, whatever client id it sends, and 5,000
# alarms queued while the gateway is down all arrive once it is back.
import grp
import os
import queue
import shutil
import tempfile
import threading
import time

import pytest

import vigil_protocol as p
import debian_mosquitto
from gateway_harness import GatewayProcess, key_for, wait_for, write_secret
from vigil_gateway import broker_config
from vigil_responder import ActionsClient
from vigil_tools.broker import free_port

A = 0x0000000A
B = 0x0000000B
FLEET = [0x00000F01, 0x00000F02, 0x00000F03, 0x00000F04]
GATEWAY_USER = "vigil-gateway"
TOKEN = "broker-config-token-0123456789"


def password(device_id):
    return "password-of-%08x" % device_id


def _gateway(gateway_factory, tmp_path, device_ids, **sections):
    """A gateway with its own broker user, its devices, and the broker files in tmp/broker."""
    write_secret(tmp_path / "gw.pw", "gateway-secret\n")
    port = free_port()
    gw = gateway_factory(port, mqtt={"username": GATEWAY_USER,
                                     "password_file": str(tmp_path / "gw.pw")}, **sections)
    for device_id in device_ids:
        gw.add_device(device_id, key_for(device_id), password(device_id))
    out = gw.cli("broker-config", "--out", str(tmp_path / "broker"),
                 "--listen", "127.0.0.1:%d" % port)
    return gw, port, out


def _broker_on_those_files(mosquitto_factory, tmp_path, port):
    # The main file holds only the test's own: the persistence folder, the log, `user root`
    # as root (the files are in a private temporary folder); the rest is vigil.conf's.
    return mosquitto_factory(port=port, include_dir=str(tmp_path / "broker"))


def _conf(tmp_path):
    lines = (tmp_path / "broker" / broker_config.CONF_NAME).read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#")
                and not line.startswith("listener"))


def _registry(gw):
    from vigil_gateway import config
    from vigil_gateway.service import open_state

    return open_state(config.load(str(gw.config)))[1]


def test_the_files_are_fit_for_alarms(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883,
                        mqtt={"username": GATEWAY_USER, "password_file": str(tmp_path / "gw.pw")})
    write_secret(tmp_path / "gw.pw", "gateway-secret\n")
    registry = _registry(gw)
    for i, interval in enumerate([60, 60, 60, None, None, None]):
        registry.add(0x100 + i, key_for(0x100 + i), password(0x100 + i), interval)
    registry.revoke(0x105)  # revoked: no password line, not counted
    out = gw.cli("broker-config", "--out", str(tmp_path / "broker"), "--outage-hours", "48",
                 "--listen", "0.0.0.0:1883", "--listen", "127.0.0.1:1884").stdout
    conf = _conf(tmp_path)
    # 3 devices at 60 s: 48 h * (60 + 80 + 4); 2 at the default 300 s: 48 h * (12 + 80 + 4)
    messages = 3 * 48 * 144 + 2 * 48 * 96
    assert conf["max_queued_messages"] == str(messages)
    assert conf["max_queued_bytes"] == str(messages * p.MAX_FRAME)
    assert "max_queued_messages %d, max_queued_bytes %d" % (messages, messages * p.MAX_FRAME) \
        in out
    for key, value in [("persistence", "true"), ("autosave_on_changes", "false"),
                       ("autosave_interval", "1"), ("allow_anonymous", "false"),
                       ("per_listener_settings", "false"),
                       ("password_file", str(tmp_path / "broker" / "passwords")),
                       ("acl_file", str(tmp_path / "broker" / "acl"))]:
        assert conf[key] == value, key
    text = (tmp_path / "broker" / broker_config.CONF_NAME).read_text()
    # each listener binds client ids to usernames (Mosquitto reads it per listener)
    assert "listener 1883 0.0.0.0\nuse_username_as_clientid true\n" in text
    assert "listener 1884 127.0.0.1\nuse_username_as_clientid true\n" in text
    users = [line.split(":")[0] for line in
             (tmp_path / "broker" / "passwords").read_text().split()]
    assert users == [GATEWAY_USER] + ["%08x" % (0x100 + i) for i in range(5)]
    assert "gateway-secret" not in (tmp_path / "broker" / "passwords").read_text()
    acl = (tmp_path / "broker" / "acl").read_text()
    assert "user %s\ntopic read vigil/up/#" % GATEWAY_USER in acl
    # Debian's broker runs as user mosquitto: the files are its group's to read, nobody else's
    try:
        gid = grp.getgrnam("mosquitto").gr_gid
    except KeyError:
        gid = None
    for name in ("passwords", "acl", broker_config.CONF_NAME):
        st = os.stat(tmp_path / "broker" / name)
        if gid is not None and os.geteuid() == 0:
            assert (st.st_mode & 0o777, st.st_gid) == (0o640, gid), name
        else:
            assert st.st_mode & 0o077 == 0, name
    # The same fleet over the default 24 h; a small fleet gets the floor.
    gw.cli("broker-config", "--out", str(tmp_path / "broker"))
    assert _conf(tmp_path)["max_queued_messages"] == str(3 * 24 * 144 + 2 * 24 * 96)
    assert "listener 1883 127.0.0.1\n" in (tmp_path / "broker" / "vigil.conf").read_text()
    for i in range(5):
        registry.revoke(0x100 + i)
    gw.cli("broker-config", "--out", str(tmp_path / "broker"))
    assert _conf(tmp_path)["max_queued_messages"] == str(broker_config.QUEUE_FLOOR)


def test_the_gateway_needs_its_own_user(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    result = gw.cli("broker-config", "--out", str(tmp_path / "broker"), check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("vigil: mqtt.username: the broker these files configure "
                                    "admits no anonymous client")
    assert not (tmp_path / "broker").exists()


def test_no_wearable_can_take_another_s_session_or_the_gateway_s(
        mosquitto_factory, gateway_factory, devices, tmp_path):
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw, port, _ = _gateway(gateway_factory, tmp_path, [A, B],
                           actions={"tokens_file": str(tmp_path / "tokens")})
    _broker_on_those_files(mosquitto_factory, tmp_path, port)
    gw.start()
    # B raises an alarm, goes away; the responder acknowledges: the broker keeps that downlink
    # in B's persistent session until B is back.
    b = devices(port, B, key_for(B), password=password(B))
    b.publish(b.alarm(p.SOS))
    b.wait_acked([1])
    b.close()
    incident = gw.incidents()[0]["id"]
    api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN)
    assert api.act(incident, "acknowledge")[0] == 200
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlinks_total{path="mqtt",what="ACKNOWLEDGED"}') == 1, 10,
        "the broker to take the downlink for B")
    # A, with its own credentials, connects with B's client id, then with the gateway's (as
    # configured, and its username): each time it gets a session of its own, A's.
    for client_id in ("vigil-%08x" % B, "vigil-gateway-gateway0", GATEWAY_USER):
        thief = devices(port, A, key_for(A), password=password(A), client_id=client_id)
        spy = queue.Queue()
        thief.client.message_callback_add(b.down, lambda c, u, m: spy.put(m.payload))
        thief.client.subscribe(b.down, qos=1)
        time.sleep(0.3)
        with pytest.raises(queue.Empty):
            spy.get_nowait()
        thief.close()
    # B comes back and gets what waited for it; the gateway was never thrown off.
    b = devices(port, B, key_for(B), password=password(B))
    frames = []
    wait_for(lambda: frames.append(b.downlinks.get(timeout=0.1)) or any(
        isinstance(f, p.Action) and f.action == p.ACKNOWLEDGED and f.ref == 1 for f in frames),
        10, "B's queued ACKNOWLEDGED")
    assert gw.metrics()["vigil_gateway_mqtt_connects_total"] == 1
    assert not any(e["event"] == "mqtt_disconnected" for e in gw.log_events())
    b.counter = 1
    b.publish(b.alarm(p.SOS))
    b.wait_acked([2])


def test_5000_alarms_queued_while_the_gateway_is_down_all_arrive(
        mosquitto_factory, gateway_factory, devices, tmp_path):
    gw, port, _ = _gateway(gateway_factory, tmp_path, FLEET)
    broker = _broker_on_those_files(mosquitto_factory, tmp_path, port)
    gw.start()  # its persistent session and subscription
    gw.stop()
    wearables = [devices(port, d, key_for(d), password=password(d)) for d in FLEET]
    per_device = 5000 // len(FLEET)

    def publish_all(w):
        infos = [w.publish(w.alarm(p.SOS if i % 3 else p.FALL), wait=False)
                 for i in range(per_device)]
        for info in infos:
            info.wait_for_publish(30)

    threads = [threading.Thread(target=publish_all, args=(w,)) for w in wearables]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    gw.start()
    wait_for(lambda: gw.frames("new") >= 5000, 60, "5,000 alarms")
    for w in wearables:
        w.wait_acked(range(1, per_device + 1), timeout=30)
    incidents = gw.incidents()
    assert len(incidents) == 5000
    assert sorted((i["device"], i["counter"]) for i in incidents) == sorted(
        ("%08x" % d, c) for d in FLEET for c in range(1, per_device + 1))
    assert "dropped" not in broker.log.read_text()


def connack(port, user, password, tls_ca=None):
    """The broker's answer to a CONNECT with these credentials: 'Success' or why not."""
    import paho.mqtt.client as mqtt

    answers = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-%s" % user,
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)
    if tls_ca:
        client.tls_set(ca_certs=str(tls_ca))
    client.on_connect = lambda c, u, f, rc, props: answers.put(str(rc))
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        return answers.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.skipif(debian_mosquitto.skip_reason() is not None,
                    reason=str(debian_mosquitto.skip_reason()))
def test_debian_s_broker_reads_the_files_and_a_reload_shuts_a_revoked_device_out(
        gateway_factory, devices, tmp_path):
    # Mosquitto as Debian's package runs it: root, Debian's main file, no `user` line, so it
    # reads the files as user mosquitto (the folder stands in for /etc/mosquitto/conf.d).
    conf_d = tempfile.mkdtemp(prefix="vigil-conf.d-")
    os.chmod(conf_d, 0o755)
    broker = None
    try:
        gw, port, _ = _gateway(gateway_factory, tmp_path, [A, B])
        gw.cli("broker-config", "--out", conf_d, "--listen", "127.0.0.1:%d" % port)
        broker = debian_mosquitto.DebianMosquitto(conf_d, port).start()
        assert broker.user() == "mosquitto"
        gw.start()
        a = devices(port, A, key_for(A), password=password(A))
        b = devices(port, B, key_for(B), password=password(B))
        a.publish(a.alarm(p.SOS))
        a.wait_acked([1])
        # A is revoked; the files are written again and the running broker reloads them.
        gw.cli("device", "revoke", "%08x" % A)
        out = gw.cli("broker-config", "--out", conf_d, "--listen", "127.0.0.1:%d" % port,
                     "--reload", "--pid-file", broker.pid_file).stdout
        assert "reloaded" in out
        wait_for(lambda: not a.client.is_connected(), 10, "the broker to drop revoked A")
        assert connack(port, "%08x" % A, password(A)) == "Not authorized"
        assert "Reloading config" in broker.log_text()
        # B and the gateway stay connected, and the broker goes on as user mosquitto. (A probe
        # as B would take B's own session: its client id is its username.)
        b.publish(b.alarm(p.SOS))
        b.wait_acked([1])
        assert b.client.is_connected()
        assert gw.metrics()["vigil_gateway_mqtt_connects_total"] == 1
        assert broker.user() == "mosquitto" and broker.proc.poll() is None
        assert gw.get("/healthz")[0] == 200
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(conf_d)


def test_reload_without_a_broker_says_so(gateway_factory, tmp_path):
    gw, port, _ = _gateway(gateway_factory, tmp_path, [A])
    result = gw.cli("broker-config", "--out", str(tmp_path / "broker"), "--listen",
                    "127.0.0.1:%d" % port, "--reload", "--pid-file",
                    str(tmp_path / "no.pid"), check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("vigil: cannot reload the broker: cannot read its pid "
                                    "file %s" % (tmp_path / "no.pid"))
    assert "Traceback" not in result.stderr
