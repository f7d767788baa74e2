import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fw_harness import KEY, ROOT, FakeGateway  # noqa: E402

sys.path.insert(0, str(ROOT / "firmware"))  # the firmware core also runs on CPython
sys.path.insert(0, str(ROOT / "tools" / "vigil_tools"))  # traces.py, as the device tests see it


@pytest.fixture
def fake_gateway(mosquitto):
    gateways = []

    def make(policy=None):
        gw = FakeGateway(mosquitto.port, policy=policy)
        gateways.append(gw)
        return gw

    yield make
    for gw in gateways:
        gw.close()


@pytest.fixture
def scenario(mosquitto, micropython, tmp_path):
    """Run one scenario of tests/firmware/scenarios.py on the MicroPython unix port."""

    def run(name, device="00c0ffee", heapsize=None, timeout=120, port=None, **settings):
        cmd, env = micropython
        if heapsize:
            cmd = cmd + ["-X", "heapsize=%s" % heapsize]
        settings.update(scenario=name, port=port or mosquitto.port, fs=str(tmp_path / "flash"),
                        device=device, key=KEY.hex())
        os.makedirs(settings["fs"], exist_ok=True)
        proc = subprocess.run(cmd + [str(ROOT / "tests" / "firmware" / "scenarios.py")],
                              input=json.dumps(settings), env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
        assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-3000:])
        return json.loads(lines[-1][len("REPORT "):])

    return run

