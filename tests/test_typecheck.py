# The device code type-checks against the MicroPython ESP32 stubs (firmware/mypy.ini), so a
# call the board does not have fails here, before it reaches a board.
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def mypy(root, *targets):
    stubs = root / ".venv" / "mpy-stubs"
    env = dict(os.environ, MYPYPATH=os.pathsep.join([str(root / "firmware"), str(stubs),
                                                     str(root / ".venv" / "mpy-lib"),
                                                     str(root / "protocol")]))
    return subprocess.run([str(BIN / "mypy"), "--config-file", str(root / "firmware" / "mypy.ini"),
                           "--custom-typeshed-dir", str(stubs), "--cache-dir",
                           str(root / ".mypy_cache" / "device"), *map(str, targets)],
                          env=env, cwd=root, capture_output=True, text=True, timeout=600)


def test_firmware_and_protocol_type_check_against_the_device_stubs(root):
    proc = mypy(root, root / "firmware" / "vigil_fw", root / "protocol" / "vigil_protocol")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Success" in proc.stdout


def test_a_call_the_board_does_not_have_fails(root, tmp_path):
    bad = tmp_path / "bad_board.py"
    bad.write_text("import machine\nimport network\n"
                   "machine.Pin(4).toggle_fast()\nnetwork.WLAN(network.STA_IF).teleport()\n")
    proc = mypy(root, bad)
    assert proc.returncode == 1
    assert 'has no attribute "toggle_fast"' in proc.stdout
    assert 'has no attribute "teleport"' in proc.stdout
