# Configuration errors name the key; the registry's commands do what they say and keep keys
# private.
import json
import os
import subprocess

import pytest

from gateway_harness import VIGIL, GatewayProcess, key_for
from vigil_gateway import ConfigError, config


def _load(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return config.load(str(path))


@pytest.mark.parametrize("text, key", [
    ("[mqtt]\nport = 'abc'\n", "mqtt.port"),
    ("[mqtt]\nport = 70000\n", "mqtt.port"),
    ("[mqtt]\nprot = 1883\n", "mqtt.prot"),
    ("[mqtt]\nprefix = 'vigil/#'\n", "mqtt.prefix"),
    ("[mqtt.tls]\nenabled = true\n", "mqtt.tls.ca_file"),
    ("[mqtt]\nreconnect_min_s = 5\nreconnect_max_s = 1\n", "mqtt.reconnect_min_s"),
    ("[mqtt]\npassword_file = 'pw'\n", "mqtt.username"),
    ("[stor]\nbatch_max = 3\n", "stor"),
    ("[store]\nsynchronous = 'sometimes'\n", "store.synchronous"),
    ("[supervision]\ngrace_s = -1\n", "supervision.grace_s"),
    ("[log]\nlevel = 'loud'\n", "log.level"),
    ("data_dir = 'x'\n", "data_dir"),
    ("[mqtt\n", "config"),
])
def test_config_errors_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)
    assert raised.value.key == key
    assert str(raised.value).startswith(key + ":")


def test_the_example_config_is_the_embedded_defaults(root):
    example = config.load(str(root / "gateway" / "gateway.example.toml"))
    defaults = config.defaults()
    for section in ("mqtt", "store", "supervision", "http", "log"):
        assert vars(getattr(example, section)) == vars(getattr(defaults, section)), section
    assert example.gateway.data_dir == str(root / "gateway" / "var" / "gateway")


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    loaded = _load(tmp_path, "[gateway]\ndata_dir = 'data'\n")
    assert loaded.gateway.data_dir == str(tmp_path / "data")


def test_the_cli_reports_a_bad_key_and_exits_2(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("[http]\nport = 'eighty'\n")
    result = subprocess.run(VIGIL + ["gateway", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "http.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_device_commands(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    gw.add_device(0x00C0FFEE, key_for(1), interval=120)
    (tmp_path / "record.json").write_text(json.dumps({
        "device_id": "00000042", "key": key_for(2).hex(), "mqtt_password": "pw42",
        "checkin_interval_s": 60, "label": "night shift"}))
    assert "imported device 00000042" in gw.cli("device", "import",
                                                str(tmp_path / "record.json")).stdout
    rows = [json.loads(line) for line in gw.cli("device", "list", "--json").stdout.splitlines()]
    assert [(r["device"], r["state"], r["interval_s"], r["broker_password"]) for r in rows] == [
        ("00000042", "active", 60, True), ("00c0ffee", "active", 120, False)]
    # A record that does not say (older tools) may be a v1 unit; one added now is v2.
    assert [r["protocol"] for r in rows] == [1, 2]
    # Neither says where its counters start (a key given, a record): not known.
    assert [r["counter_floor"] for r in rows] == [None, None]
    gw.cli("device", "add", "00000061", "--record-out", str(tmp_path / "new.json"))
    (tmp_path / "k98").write_text(key_for(98).hex())
    gw.cli("device", "add", "00000062", "--key-file", str(tmp_path / "k98"),
           "--counter-floor", "5000")
    rows = {r["device"]: r for r in map(json.loads, gw.cli(
        "device", "list", "--json").stdout.splitlines())}
    # A key made just now has sealed nothing: every counter from 1 is the unit's.
    assert (rows["00000061"]["counter_floor"], rows["00000062"]["counter_floor"]) == (0, 5000)
    listing = gw.cli("device", "list").stdout.splitlines()
    assert "protocol v1" in listing[0] and "protocol v2" in listing[1]

    again = gw.cli("device", "import", str(tmp_path / "record.json"))  # safe to run again
    assert "device 00000042 is already registered with this record" in again.stdout

    keys = tmp_path / "gw" / "data" / "keys"
    assert os.stat(keys).st_mode & 0o777 == 0o700
    assert os.stat(keys / "00000042.v1.key").st_mode & 0o777 == 0o600
    new_key = tmp_path / "new.key"
    new_key.write_text(key_for(3).hex())
    assert "key version 2" in gw.cli("device", "rotate-key", "00000042", "--key-file",
                                     str(new_key)).stdout
    assert not (keys / "00000042.v1.key").exists()
    assert (keys / "00000042.v2.key").read_text().strip() == key_for(3).hex()

    gw.cli("device", "revoke", "00c0ffee")
    rows = [json.loads(line) for line in gw.cli("device", "list", "--json").stdout.splitlines()]
    assert [r["state"] for r in rows if r["device"] in ("00000042", "00c0ffee")] == [
        "active", "revoked"]

    for bad in (["device", "add", "xyz", "--key-file", str(new_key)],
                ["device", "add", "00000001"],
                ["device", "revoke", "00000099"]):
        result = gw.cli(*bad, check=False)
        assert result.returncode == 2 and result.stderr.startswith("vigil: "), bad


def test_broker_config_lists_active_devices_with_a_password_only(tmp_path):
    (tmp_path / "gw.pw").write_text("gateway-secret\n")
    (tmp_path / "gw.pw").chmod(0o600)
    gw = GatewayProcess(tmp_path / "gw", 1883, mqtt={"username": "gw",
                                                     "password_file": str(tmp_path / "gw.pw")})
    gw.add_device(0x00000042, key_for(2), password="pw42")
    gw.add_device(0x00000043, key_for(3), password="pw43")
    gw.add_device(0x00000044, key_for(4))
    gw.cli("device", "revoke", "00000043")
    gw.cli("broker-config", "--out", str(tmp_path / "out"))
    passwords = (tmp_path / "out" / "passwords").read_text()
    assert [line.split(":")[0] for line in passwords.split()] == ["gw", "00000042"]
    assert passwords.split("\n")[1].split(":", 1)[1].startswith("$7$")
    assert "pw42" not in passwords and "gateway-secret" not in passwords
    assert os.stat(tmp_path / "out" / "passwords").st_mode & 0o077 in (0, 0o040)
    acl = (tmp_path / "out" / "acl").read_text()
    assert "pattern read vigil/down/%u" in acl and "user gw\n" in acl


def test_the_gateway_says_when_its_http_port_is_taken(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gw = GatewayProcess(tmp_path / "gw", 1883, http={"port": taken.getsockname()[1]})
        result = subprocess.run(VIGIL + ["gateway", "run", "--config", str(gw.config)],
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "http.port: cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
