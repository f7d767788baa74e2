# `vigil provision` and `vigil flash` against a virtual board: the MicroPython unix port's own
# REPL behind a pty, reached by the real mpremote and pyserial. The firmware really starts on
# it after a reset, and really connects to Mosquitto with the credentials provisioning gave it.
# The `board` fixture has a ROMFS partition (the firmware's /lib goes there as one image);
# `files_board` has none (the firmware goes to /lib as files).
import hashlib
import json
import queue
import signal
import subprocess
import threading

import paho.mqtt.client as mqtt
import pytest

from vigil_cli import VIGIL, vigil
from vigil_tools.firmware_build import build, build_romfs
from vigil_tools.virtual_board import VirtualBoard


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """{path on the board: sha256} of the firmware as provisioning builds it, and "ROMFS": its
    /lib part as the ROMFS image."""
    out = tmp_path_factory.mktemp("bundle")
    build(out / "b")
    build_romfs(out / "b", out / "fw.romfs")
    files = {str(path.relative_to(out / "b")): sha256(path)
             for path in (out / "b").rglob("*") if path.is_file()}
    files["ROMFS"] = (out / "fw.romfs").read_bytes()
    return files


@pytest.fixture
def files_board(tmp_path):
    """A virtual wearable without a ROMFS partition."""
    with VirtualBoard(tmp_path / "flash", romfs_kib=0) as vb:
        yield vb


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provision_args(board, device_file, port=1883, *extra):
    return ["provision", "--port", board.port, "--device-file", device_file,
            "--mqtt-host", "127.0.0.1", "--mqtt-port", port, *extra]


def provision(board, device_file, gateway_config, *extra, port=1883):
    return vigil(*provision_args(board, device_file, port, "--gateway-config", gateway_config,
                                 *extra))


def flash_state(board):
    """(hash, mtime) of every file on the board and of its ROMFS partition: equal before and
    after means nothing changed."""
    paths = [p for p in board.flash_dir.rglob("*") if p.is_file()] + [board.romfs_partition]
    return {p: (sha256(p), p.stat().st_mtime_ns) for p in paths}


def assert_bundle_landed(board, bundle):
    """The firmware is on the board byte for byte: /lib in the ROMFS partition (and not in
    the filesystem) when the board has one, else as files."""
    flash = board.flash_dir
    files = {p: digest for p, digest in bundle.items() if p != "ROMFS"}
    if board.romfs_kib:
        image = bundle["ROMFS"]
        assert board.romfs_partition.read_bytes()[:len(image)] == image
        files = {p: digest for p, digest in files.items() if not p.startswith("lib/")}
        assert not list(flash.rglob("*.mpy"))
    assert {p: sha256(flash / p) for p in files if (flash / p).exists()} == files
    assert not list(flash.rglob("*.part"))


def registered(gateway_config):
    proc = vigil("gateway", "device", "list", "--json", "--config", gateway_config)
    assert proc.returncode == 0, proc.stderr
    return {row["device"]: row for row in map(json.loads, proc.stdout.splitlines())}


def copy_watcher(flash, files, action):
    """Run action() once `files` firmware modules have landed on the board's flash."""
    def watch():
        while len(list(flash.rglob("*.mpy"))) < files:
            threading.Event().wait(0.005)
        action()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# -- the whole job -----------------------------------------------------------------------------

def test_provision_end_to_end(tmp_path, board, device_file, bundle, mosquitto_factory):
    record = json.loads(device_file.read_text())
    dev = record["device_id"]
    # A gateway with its own broker user, and a broker that knows only what the registry says.
    (tmp_path / "gw.pw").write_text("gateway-secret\n")
    gateway_config = tmp_path / "gateway.toml"
    gateway_config.write_text('[gateway]\ndata_dir = "gateway"\n[mqtt]\nusername = "gw"\n'
                              'password_file = "gw.pw"\n')
    files = tmp_path / "broker-files"
    assert vigil("gateway", "broker-config", "--config", gateway_config, "--out",
                 files).returncode == 0
    broker = mosquitto_factory(allow_anonymous=False, extra="password_file %s\nacl_file %s\n"
                               % (files / "passwords", files / "acl"))

    proc = provision(board, device_file, gateway_config, "--broker-files", files,
                     "--checkin-interval", 60, port=broker.port)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "device %s is up with its config" % dev in proc.stdout
    assert "gateway: device %s registered" % dev in proc.stdout
    assert "writing ROMFS" in proc.stderr and "copying" in proc.stderr  # the progress bars
    assert "ROMFS: firmware image written and verified" in proc.stdout
    printed = proc.stdout + proc.stderr
    assert record["key"] not in printed and record["mqtt_password"] not in printed

    # The files and the config landed, byte for byte.
    flash = board.flash_dir
    assert_bundle_landed(board, bundle)
    config = json.loads((flash / "vigil" / "vigil.json").read_text())
    assert (config["device_id"], config["key"]) == (dev, record["key"])
    assert config["mqtt"] == {"host": "127.0.0.1", "port": broker.port, "prefix": "vigil",
                              "username": dev, "password": record["mqtt_password"],
                              "tls": False}
    assert config["checkin_interval_s"] == 60

    # The gateway knows the device, with a broker password.
    assert registered(gateway_config)[dev]["broker_password"] is True
    # A unit started here from a clean flash: the gateway knows where its counters begin.
    assert registered(gateway_config)[dev]["counter_floor"] == 0
    assert record["mqtt_password"] not in (files / "passwords").read_text()

    # The wearable, running on the board, reaches the broker with its own credentials once
    # the broker reloads the files provisioning rewrote.
    online = queue.Queue()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-watcher")
    watcher.username_pw_set("gw", "gateway-secret")
    watcher.on_message = lambda c, u, m: online.put(m.payload)
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("vigil/status/%s" % dev, qos=1)
    watcher.loop_start()
    try:
        broker.proc.send_signal(signal.SIGHUP)
        assert online.get(timeout=40) == b"online"
    finally:
        watcher.loop_stop()
        watcher.disconnect()

    # A second run finds everything right: nothing copied, nothing rewritten, still up.
    before = flash_state(board)
    again = provision(board, device_file, gateway_config, "--broker-files", files,
                      "--checkin-interval", 60, port=broker.port)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to copy" in again.stdout and "image already right" in again.stdout
    assert "device %s already registered" % dev in again.stdout
    assert "device %s is up" % dev in again.stdout
    changed = {p for p, state in flash_state(board).items() if before.get(p) != state}
    # Only what the running firmware itself wrote (its counters, outbox, logs) may differ.
    assert all("vigil" in p.relative_to(flash).parts for p in changed), changed


@pytest.mark.parametrize("romfs", [True, False], ids=["romfs", "files"])
def test_flash_installs_the_firmware_and_says_the_board_needs_provisioning(
        romfs, board, files_board, bundle):
    board = board if romfs else files_board
    proc = vigil("flash", "--port", board.port)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not provisioned yet" in proc.stdout and "vigil.json is missing" in proc.stdout
    assert_bundle_landed(board, bundle)
    if not romfs:
        assert "no ROMFS partition for the firmware (none on the board)" in proc.stdout
    again = vigil("flash", "--port", board.port)
    assert again.returncode == 0 and "nothing to copy" in again.stdout


def test_flash_moves_a_firmware_installed_as_files_into_romfs(tmp_path, bundle):
    with VirtualBoard(tmp_path / "flash", romfs_kib=0) as old:
        assert vigil("flash", "--port", old.port).returncode == 0
    with VirtualBoard(tmp_path / "flash") as board:  # the same flash, now with a partition
        proc = vigil("flash", "--port", board.port)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "stale removed" in proc.stdout
        assert_bundle_landed(board, bundle)


def test_a_romfs_partition_too_small_for_the_image_gets_the_files(tmp_path, bundle):
    with VirtualBoard(tmp_path / "flash", romfs_kib=8) as small:
        proc = vigil("flash", "--port", small.port)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "no ROMFS partition for the firmware (8 kB, image" in proc.stdout
        assert (small.flash_dir / "lib" / "vigil_fw" / "app.mpy").exists()


def test_flash_keeps_the_config_and_reports_what_the_firmware_says(board, bundle):
    config = board.flash_dir / "vigil" / "vigil.json"
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    proc = vigil("flash", "--port", board.port)
    assert proc.returncode == 0
    assert "vigil.json is not valid JSON" in proc.stdout
    assert config.read_text() == "{not json"


# -- bad paths: a clear message, a non-zero exit, and a re-run that finishes the job -----------

@pytest.mark.parametrize("command", [["flash"], ["monitor", "--duration", "1"],
                                     ["provision", "--device-file", "x.json", "--mqtt-host",
                                      "h", "--no-register"]])
def test_no_such_port(tmp_path, device_file, command):
    if "--device-file" in command:
        command[command.index("--device-file") + 1] = str(device_file)
    proc = vigil(*command, "--port", tmp_path / "ttyACM9")
    assert proc.returncode == 2
    assert "no such port: %s" % (tmp_path / "ttyACM9") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_board_that_does_not_answer(board, device_file, gateway_config):
    board.freeze()
    proc = provision(board, device_file, gateway_config)
    assert proc.returncode == 2
    assert "does not answer" in proc.stderr and "reset" in proc.stderr
    assert registered(gateway_config) == {}  # nothing registered for a board not done
    board.hard_reset()
    again = provision(board, device_file, gateway_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is up with its config" in again.stdout


def test_a_board_reset_in_the_middle_of_the_copy(files_board, device_file, gateway_config,
                                                 bundle):
    board = files_board
    copy_watcher(board.flash_dir, 5, board.hard_reset)
    proc = provision(board, device_file, gateway_config)
    assert proc.returncode == 2
    assert "lost the board" in proc.stderr and "run the same command again" in proc.stderr
    again = provision(board, device_file, gateway_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already right" in again.stdout  # what landed before the reset is kept
    assert_bundle_landed(board, bundle)


def test_a_provisioning_killed_in_the_middle_of_the_copy(files_board, device_file,
                                                         gateway_config, bundle):
    board = files_board
    proc = subprocess.Popen([VIGIL, *map(str, provision_args(
        board, device_file, 1883, "--gateway-config", gateway_config))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    copy_watcher(board.flash_dir, 5, proc.kill).join(60)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    again = provision(board, device_file, gateway_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_bundle_landed(board, bundle)


def romfs_watcher(board, action):
    """Run action() once the ROMFS write has begun (some block past the first is written)."""
    def watch():
        while not board.romfs_partition.read_bytes()[4096:].rstrip(b"\xff"):
            threading.Event().wait(0.005)
        action()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_board_reset_in_the_middle_of_the_romfs_write(board, device_file, gateway_config,
                                                        bundle):
    romfs_watcher(board, board.hard_reset)
    proc = provision(board, device_file, gateway_config)
    assert proc.returncode == 2
    assert "lost the board" in proc.stderr and "run the same command again" in proc.stderr
    # The image's first block goes last: the half-written partition is no ROMFS at all.
    assert not board.romfs_partition.read_bytes().startswith(bundle["ROMFS"][:3])
    again = provision(board, device_file, gateway_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_bundle_landed(board, bundle)


def test_a_provisioning_killed_in_the_middle_of_the_romfs_write(board, device_file,
                                                               gateway_config, bundle):
    proc = subprocess.Popen([VIGIL, *map(str, provision_args(
        board, device_file, 1883, "--gateway-config", gateway_config))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    romfs_watcher(board, proc.kill).join(60)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    again = provision(board, device_file, gateway_config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_bundle_landed(board, bundle)


def test_a_config_the_wearable_would_refuse(board, device_file, gateway_config):
    proc = provision(board, device_file, gateway_config, "--checkin-interval", 5)
    assert proc.returncode == 2
    assert "checkin_interval_s must be from 10 to 65535" in proc.stderr
    assert not any(board.flash_dir.iterdir())  # refused before the board was touched
    assert registered(gateway_config) == {}
    again = provision(board, device_file, gateway_config, "--checkin-interval", 30)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_device_registered_with_another_key_is_refused_before_flashing(
        tmp_path, board, device_file, gateway_config):
    record = json.loads(device_file.read_text())
    other = tmp_path / "other.json"
    assert vigil("keygen", "--out", other, "--device", record["device_id"]).returncode == 0
    assert vigil("gateway", "device", "import", other, "--config",
                 gateway_config).returncode == 0
    proc = provision(board, device_file, gateway_config)
    assert proc.returncode == 2
    assert "already registered with another key" in proc.stderr
    assert not any(board.flash_dir.iterdir())


def test_a_broken_device_record(tmp_path, board, gateway_config):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device_id": "00c0ffee", "key": "abcd"}))
    proc = provision(board, bad, gateway_config)
    assert proc.returncode == 2 and "64 hex digits" in proc.stderr
    proc = provision(board, tmp_path / "missing.json", gateway_config)
    assert proc.returncode == 2 and "cannot read the device record" in proc.stderr


def test_provision_without_a_gateway_config_says_how_to_go_on(tmp_path, board, device_file):
    proc = vigil(*provision_args(board, device_file), cwd=tmp_path)
    assert proc.returncode == 2 and "--no-register" in proc.stderr


def test_provision_with_tls_and_no_ble(tmp_path, board, device_file,
                                                            gateway_config):
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot checked by the tools\n"
                  "-----END CERTIFICATE-----\n")
    proc = provision(board, device_file, gateway_config, "--mqtt-ca", ca, "--no-ble")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())
    assert config["ble"] is False
    assert config["mqtt"]["tls"] is True
    assert config["mqtt"]["ca_file"] == "/vigil/broker-ca.pem"
    assert sha256(board.flash_dir / "vigil" / "broker-ca.pem") == sha256(ca)


def test_a_board_that_was_another_device_is_only_reused_when_asked(
        tmp_path, board, device_file, gateway_config):
    assert provision(board, device_file, gateway_config).returncode == 0
    first = json.loads(device_file.read_text())["device_id"]
    state = board.flash_dir / "vigil" / "ob"  # the firmware's outbox, made when it started
    (state / "00000009").write_bytes(b"an alarm signed by the first device")
    other = tmp_path / "other.json"
    assert vigil("keygen", "--out", other).returncode == 0
    second = json.loads(other.read_text())["device_id"]

    proc = provision(board, other, gateway_config)
    assert proc.returncode == 2
    assert "provisioned as device %s" % first in proc.stderr and "--replace" in proc.stderr
    assert (state / "00000009").exists()
    assert json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())["device_id"] == first

    proc = provision(board, other, gateway_config, "--replace")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "erased the state of device %s" % first in proc.stdout
    assert "device %s is up" % second in proc.stdout
    assert not (state / "00000009").exists()


def test_a_fresh_unit_for_a_device_the_gateway_knows_starts_past_its_counters(
        tmp_path, board, device_file, gateway_config, mosquitto):
    import time as _time

    import vigil_protocol as p
    from vigil_gateway import config as gateway_cfg, service

    # The gateway has this device id and stored its frames up to counter 5000: an earlier
    # unit (broken, or wiped with --replace) had it.
    record = json.loads(device_file.read_text())
    dev = int(record["device_id"], 16)
    assert vigil("gateway", "device", "import", device_file, "--config",
                 gateway_config).returncode == 0
    conn, _registry, store = service.open_state(gateway_cfg.load(gateway_config))
    with store.transaction():
        store.insert_frame(dev, 5000, b"t" * 16, "alarm", "SOS", 0, b"", _time.time())
    conn.close()

    uplinks = queue.Queue()
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="floor-watcher")
    watcher.on_message = lambda c, u, m: uplinks.put(m.payload)
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe("floortest/up/%s" % record["device_id"], qos=1)
    watcher.loop_start()
    try:
        proc = provision(board, device_file, gateway_config, "--mqtt-prefix", "floortest",
                         port=mosquitto.port)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "counters start at 9097" in proc.stdout
        config = json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())
        assert config["counter_floor"] == 9097
        # The unit's first frame (its check-in) is past everything the gateway stored.
        assert p.peek(uplinks.get(timeout=40)).counter >= 9097
    finally:
        watcher.loop_stop()
        watcher.disconnect()

    # Provisioned again, the unit keeps its counters and its config is left as it is.
    again = provision(board, device_file, gateway_config, "--mqtt-prefix", "floortest",
                      port=mosquitto.port)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to copy" in again.stdout and "counters start at" not in again.stdout
