# `vigil sim`: the firmware core on the MicroPython unix port, driven by a script, against a
# real Mosquitto. What it publishes must be frames the gateway would accept.
import contextlib
import json
import queue
import threading

import paho.mqtt.client as mqtt
import pytest

import vigil_protocol as p
from vigil_cli import vigil

SCRIPT = """\
# a wearer in trouble
status
sos
wait-sent
duress
wait-sent
tap            # no prompt is open: nothing may be sent
battery 5
wait 1500
wait-sent
silent
status
"""


@pytest.fixture
def uplinks(mosquitto, device_file):
    """Every payload the broker delivers on the device's uplink topic."""
    dev = json.loads(device_file.read_text())["device_id"]
    got = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-uplinks-" + dev)
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: got.put(m.payload)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("vigil/up/%s" % dev, qos=1)
    client.loop_start()
    assert subscribed.wait(10)
    yield got
    client.loop_stop()
    client.disconnect()


def run_sim(tmp_path, device_file, mosquitto, script):
    path = tmp_path / "script.txt"
    path.write_text(script)
    return vigil("sim", "--device-file", device_file, "--script", path, "--mqtt-port",
                 mosquitto.port, "--quick")


def drain(got, key, timeout=5):
    """Decode everything delivered so far (waiting briefly for stragglers)."""
    frames = []
    while True:
        try:
            frames.append(p.decode(got.get(timeout=timeout), key, p.UP))
        except queue.Empty:
            return frames
        timeout = 0.5


def test_a_scripted_wearer_sends_verifiable_frames(tmp_path, mosquitto, device_file, uplinks):
    record = json.loads(device_file.read_text())
    key = p.DeviceKey(bytes.fromhex(record["key"]))
    proc = run_sim(tmp_path, device_file, mosquitto, SCRIPT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for said in ("sim: SOS raised", "sim: duress raised", "double tap ignored",
                 "sim: battery 5%", "sim: silent", "sim: every alarm sent"):
        assert said in out, said
    # Every frame line it printed was decoded with the key, and none was rejected.
    assert "(MAC ok)" in out and "REJECTED" not in out
    # Duress is silent: after it, nothing is shown to the wearer (not even LOW_BATTERY).
    after_duress = out.split("sim: duress raised", 1)[1]
    assert "vigil: feedback" not in after_duress
    assert "vigil: feedback sos_raised" in out

    frames = drain(uplinks, key)
    alarms = {f.fields()["kind"]: f for f in frames if isinstance(f, p.Alarm)}
    assert set(alarms) == {"SOS", "DURESS", "LOW_BATTERY"}
    assert alarms["SOS"].counter < alarms["DURESS"].counter < alarms["LOW_BATTERY"].counter
    assert all(f.device_id == int(record["device_id"], 16) for f in frames)
    assert any(isinstance(f, p.CheckIn) for f in frames)
    assert record["key"] not in out + proc.stderr


def test_counters_carry_on_across_runs(tmp_path, mosquitto, device_file, uplinks):
    key = p.DeviceKey(bytes.fromhex(json.loads(device_file.read_text())["key"]))
    first = run_sim(tmp_path, device_file, mosquitto, "sos\nwait-sent\n")
    assert first.returncode == 0, first.stdout
    before = max(f.counter for f in drain(uplinks, key))
    second = run_sim(tmp_path, device_file, mosquitto, "duress\nwait-sent\n")
    assert second.returncode == 0, second.stdout
    duress = [f for f in drain(uplinks, key)
              if isinstance(f, p.Alarm) and f.fields()["kind"] == "DURESS"]
    assert duress and duress[0].counter > before


def test_sim_refuses_a_device_record_it_cannot_use(tmp_path, mosquitto):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = vigil("sim", "--device-file", bad, "--mqtt-port", mosquitto.port)
    assert proc.returncode == 2 and "not a device record" in proc.stderr


def test_the_gateway_accepts_the_sims_frames_and_its_acks_reach_the_wearable(
        tmp_path, mosquitto, device_file):
    import subprocess

    from vigil_cli import VIGIL

    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "gw"\n[mqtt]\nport = %d\nclient_id = "gw-%s"\n'
                      '[http]\nport = 0\n' % (mosquitto.port, tmp_path.name))
    assert vigil("gateway", "device", "import", device_file, "--config", config).returncode == 0
    gateway = subprocess.Popen([VIGIL, "gateway", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = run_sim(tmp_path, device_file, mosquitto,
                       "sos\nwait-acked 20000\nduress\nwait-acked 20000\n")
    finally:
        gateway.terminate()
        gateway.wait(30)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.count("sim: every alarm acknowledged") == 2, proc.stdout
    assert "vigil: rx " in proc.stdout and "REJECTED" not in proc.stdout
    # The wearer feels the SOS reach the gateway; the duress acknowledgement shows nothing.
    assert "vigil: feedback received" in proc.stdout.split("sim: duress raised")[0]
    assert "vigil: feedback" not in proc.stdout.split("sim: duress raised")[1]
    dev = json.loads(device_file.read_text())["device_id"]
    listed = vigil("gateway", "incidents", "--json", "--device", dev, "--config", config)
    assert sorted(json.loads(line)["kind"] for line in listed.stdout.splitlines()) == \
        ["DURESS", "SOS"]


def test_sim_over_ble_reaches_the_gateway_through_an_emulated_radio(tmp_path, mosquitto,
                                                                    device_file):
    """`vigil sim --link ble`: the firmware's BLE link (on CPython, over `vigil ble-air`) and
    the gateway's bleak central on the same emulated radio; no Bluetooth hardware."""
    import subprocess

    from vigil_cli import VIGIL
    from vigil_tools.broker import free_port

    ports = [free_port(), free_port()]
    air = subprocess.Popen([VIGIL, "ble-air"] + ["tcp-server:127.0.0.1:%d" % n for n in ports],
                           stdout=subprocess.PIPE, text=True)
    assert "emulated BLE air" in air.stdout.readline()
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "gw"\n[mqtt]\nport = %d\nclient_id = "gw-%s"\n'
                      '[http]\nport = 0\n[ble]\nenabled = true\nhci = "tcp-client:127.0.0.1:%d"\n'
                      % (mosquitto.port, tmp_path.name, ports[0]))
    assert vigil("gateway", "device", "import", device_file, "--config", config).returncode == 0
    gateway = subprocess.Popen([VIGIL, "gateway", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        script = tmp_path / "ble.txt"
        script.write_text("wait 3000\nduress\nwait-acked 30000\nstatus\n")
        proc = vigil("sim", "--device-file", device_file, "--script", script, "--quick",
                     "--link", "ble", "--ble-hci", "tcp-client:127.0.0.1:%d" % ports[1])
    finally:
        gateway.terminate()
        gateway.wait(30)
        air.terminate()
        air.wait(10)
    assert proc.returncode == 0, proc.stdout
    assert "sim: every alarm acknowledged" in proc.stdout, proc.stdout
    assert "vigil: feedback" not in proc.stdout  # duress: nothing, ever
    dev = json.loads(device_file.read_text())["device_id"]
    listed = vigil("gateway", "incidents", "--json", "--device", dev, "--config", config)
    assert [json.loads(line)["kind"] for line in listed.stdout.splitlines()] == ["DURESS"]


def test_sim_over_ble_needs_an_emulated_controller(tmp_path, device_file):
    proc = vigil("sim", "--device-file", device_file, "--link", "ble")
    assert proc.returncode == 2 and "--ble-hci" in proc.stderr


def test_the_sim_shows_why_its_link_is_down_from_the_first_attempt(tmp_path, device_file):
    # Nothing listens on the port: the wearable's console says so, and the sim passes it on.
    from vigil_tools.broker import free_port
    path = tmp_path / "script.txt"
    path.write_text("wait 1500\nstatus\n")
    proc = vigil("sim", "--device-file", device_file, "--script", path, "--mqtt-port",
                 free_port(), "--quick")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("mqtt: link down:")]
    assert lines and "refused" in lines[0], proc.stdout
    record = json.loads(device_file.read_text())
    assert record["mqtt_password"] not in proc.stdout + proc.stderr


@contextlib.contextmanager
def gateway_to_webhook(tmp_path, mosquitto, device_file, *places):
    """The real gateway (`vigil gateway run`) with the device imported and each of `places`
    (beacon add arguments) in its beacons table, forwarding to a webhook backend: yields the
    backend."""
    import subprocess

    from vigil_cli import VIGIL
    from vigil_responder import ResponderBackend

    secret = b"webhook-secret-for-the-sims-0123"
    backend = ResponderBackend(secret).start()
    (tmp_path / "secret").write_bytes(secret)
    (tmp_path / "secret").chmod(0o600)
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "gw"\n[mqtt]\nport = %d\nclient_id = "gw-%s"\n'
                      '[http]\nport = 0\n[forward]\nbackoff_min_s = 0.05\nbackoff_max_s = 0.3\n'
                      '[forward.webhook]\nurl = "%s"\nsecret_file = "%s"\n'
                      % (mosquitto.port, tmp_path.name, backend.url, tmp_path / "secret"))
    assert vigil("gateway", "device", "import", device_file, "--config", config).returncode == 0
    for place in places:
        proc = vigil("gateway", "beacon", "add", *place, "--config", config)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    gateway = subprocess.Popen([VIGIL, "gateway", "run", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield backend
    finally:
        gateway.terminate()
        gateway.wait(30)
        backend.stop()


def test_a_gnss_fix_fed_to_the_sims_uart_reaches_the_webhook_as_the_alarms_location(
        tmp_path, mosquitto, device_file):
    """`vigil sim --gnss`: NMEA on the simulated board's UART, an SOS through the real gateway
    (`vigil gateway run`) to a webhook backend: the body's location is the fix, with its age;
    the fix lost, the next alarm's is the same place, marked with its growing age."""
    script = tmp_path / "gnss.txt"
    script.write_text("nmea $GPGGA,garbage*00\nfix 51.5007 -0.1246 1.8\nsos\nwait-acked 20000\n"
                      "fix-lost\nwait 3000\nduress\nwait-acked 20000\nstatus\n")
    with gateway_to_webhook(tmp_path, mosquitto, device_file) as backend:
        proc = vigil("sim", "--device-file", device_file, "--script", script, "--mqtt-port",
                     mosquitto.port, "--quick", "--gnss")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "sim: gnss fix 51.5007 -0.1246" in proc.stdout, proc.stdout
        assert proc.stdout.count("sim: every alarm acknowledged") == 2, proc.stdout
        dev = json.loads(device_file.read_text())["device_id"]
        sos = backend.wait_for(lambda e: e["event"] == "raised"
                               and e["incident"]["kind"] == "SOS")
        duress = backend.wait_for(lambda e: e["event"] == "raised"
                                  and e["incident"]["kind"] == "DURESS")
    assert sos["device"]["id"] == dev
    where = sos["location"]
    assert where["source"] == "gnss"
    assert (where["lat"], where["lon"]) == pytest.approx((51.5007, -0.1246), abs=1e-6)
    assert where["accuracy_m"] == 9  # HDOP 1.8 x 5 m
    assert where["stale"] is False and where["fix"]["age_s"] <= 3, where
    # The fix lost 3 s before the duress alarm: the same place, with its true age.
    later = duress["location"]
    assert (later["lat"], later["lon"]) == (where["lat"], where["lon"])
    assert later["fix"]["age_s"] >= 3, (where, later)
    # Duress: the wearer was shown nothing from it on, GNSS or not.
    assert "vigil: feedback" not in proc.stdout.split("sim: duress raised")[1]


def test_access_points_the_sim_hears_name_the_place_of_its_alarms_at_the_webhook(
        tmp_path, mosquitto, device_file):
    """`vigil sim --wifi-scan`: the simulated board's station hears two access points from
    the start; the check-in at boot scans them; an SOS then carries them (a hint: no fix, no
    beacon) through the real gateway, which names the place of the strongest it knows in the
    `raised` webhook, source wifi. The access points then gone, the duress alarm raised
    before the next check-in still carries that scan: nothing but the schedule scans."""
    script = tmp_path / "wifi.txt"
    script.write_text("wait-checkin 5000\nsos\nwait-acked 20000\nap-gone a4:b1:c2:d3:e4:f5\n"
                      "ap-gone 0c:81:12:00:00:01\nstatus\nduress\nwait-acked 20000\n")
    with gateway_to_webhook(tmp_path, mosquitto, device_file,
                            ("wifi", "a4:b1:c2:d3:e4:f5", "--place", "Plant room", "--floor",
                             "B1")) as backend:
        proc = vigil("sim", "--device-file", device_file, "--script", script, "--mqtt-port",
                     mosquitto.port, "--quick", "--wifi-scan",
                     "--wifi-ap", "0c:81:12:00:00:01,-71", "--wifi-ap", "a4:b1:c2:d3:e4:f5,-49")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "sim: check-in sent" in proc.stdout, proc.stdout
        sos = backend.wait_for(lambda e: e["event"] == "raised"
                               and e["incident"]["kind"] == "SOS")
        duress = backend.wait_for(lambda e: e["event"] == "raised"
                                  and e["incident"]["kind"] == "DURESS")
    where = sos["location"]
    assert (where["source"], where["place"], where["floor"]) == ("wifi", "Plant room", "B1")
    # No new scan before the duress alarm (scans follow the check-in schedule): it carries
    # the same scan, as old as it is now.
    assert duress["location"]["place"] == "Plant room", duress["location"]
    # Duress: the wearer was shown nothing from it on.
    assert "vigil: feedback" not in proc.stdout.split("sim: duress raised")[1]
