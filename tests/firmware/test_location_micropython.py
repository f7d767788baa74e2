# test_nmea.py and test_beacon_scan.py on the real MicroPython unix port: they must pass there
# and run as many tests as CPython finds (so nothing is skipped silently), and their allocation
# tests run only there; the same on the 32-bit build with the firmware frozen in (an ESP32's
# word size: a longitude past 107 degrees is a big int there, nothing else may allocate).
import importlib
import os
import re
import subprocess
import unittest

import pytest

MODULES = ("test_nmea", "test_beacon_scan")


def summary(output):
    match = re.search(r"VIGIL-MPY implementation=(\S+) version=(\S+) ran=(\d+) failures=(\d+)",
                      output)
    assert match, "runner printed no summary:\n" + output[-3000:]
    return match.group(1), match.group(2), int(match.group(3)), int(match.group(4))


def expected(module):
    return unittest.TestLoader().loadTestsFromModule(importlib.import_module(module)) \
        .countTestCases()


@pytest.mark.parametrize("module", MODULES)
def test_location_parsers_pass_on_micropython_unix_port(root, micropython, module):
    cmd, env = micropython
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py"), module],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    name, version, ran, failures = summary(proc.stdout)
    assert name == "micropython"
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    assert ran == expected(module)


@pytest.mark.parametrize("module", MODULES)
def test_location_parsers_pass_frozen_on_the_32_bit_port(root, micropython32, module):
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(root / ".venv" / "mpy-lib"),
                                                        ".frozen"]))
    where = subprocess.run([micropython32, "-c", "import vigil_fw.nmea as n, vigil_fw.beacons "
                            "as b; print(n.__file__, b.__file__)"],
                           env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == ["vigil_fw/nmea.py", "vigil_fw/beacons.py"], \
        where.stdout + where.stderr
    proc = subprocess.run([micropython32, str(root / "tests" / "mpy" / "run_unix.py"), module],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    name, version, ran, failures = summary(proc.stdout)
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    assert ran == expected(module)
