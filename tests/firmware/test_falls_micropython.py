# test_falls.py on the real MicroPython unix port: it must pass there and run as many tests as
# CPython finds (so nothing is skipped silently), and its allocation test runs only there; the
# same on the 32-bit build with the firmware frozen in (an ESP32's word size: small ints end at
# 2**30, so a square past it would allocate). And `vigil bench falls` prints its figures.
import importlib
import os
import re
import subprocess
import unittest

from vigil_cli import vigil


def summary(output):
    match = re.search(r"VIGIL-MPY implementation=(\S+) version=(\S+) ran=(\d+) failures=(\d+)",
                      output)
    assert match, "runner printed no summary:\n" + output[-3000:]
    return match.group(1), match.group(2), int(match.group(3)), int(match.group(4))


def test_fall_detectors_pass_on_micropython_unix_port(root, micropython):
    cmd, env = micropython
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py"), "test_falls"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=600)
    name, version, ran, failures = summary(proc.stdout)
    assert name == "micropython"
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    expected = unittest.TestLoader().loadTestsFromModule(
        importlib.import_module("test_falls")).countTestCases()
    assert ran == expected


def test_fall_detectors_pass_frozen_on_the_32_bit_port(root, micropython32):
    # the detector is the frozen one; the test data (lists of samples) wants a bigger heap
    # than the port's default 1 MB
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(root / ".venv" / "mpy-lib"),
                                                        ".frozen"]))
    where = subprocess.run([micropython32, "-c", "import vigil_fw.falls as f; print(f.__file__)"],
                           env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == ["vigil_fw/falls.py"], where.stdout + where.stderr
    proc = subprocess.run([micropython32, "-X", "heapsize=8m",
                           str(root / "tests" / "mpy" / "run_unix.py"), "test_falls"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=600)
    name, version, ran, failures = summary(proc.stdout)
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    expected = unittest.TestLoader().loadTestsFromModule(
        importlib.import_module("test_falls")).countTestCases()
    assert ran == expected


def test_bench_falls_prints_figures_and_a_key_value_line():
    proc = vigil("bench", "falls", "--seeds", "3", "--hours", "0.01", "--shift-hours", "0.1",
                 timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    assert float(last["fall_recall"]) == 1.0
    for kind in ("forward", "backward", "side", "knees"):
        assert float(last["recall_" + kind]) == 1.0, kind
    assert float(last["false_prealarms_per_shift"]) == 0.0
    assert float(last["false_alarms_per_shift"]) == 0.0
    assert float(last["latency_ms_median"]) >= 3000
    assert float(last["mpy_fall_heap_bytes_per_sample"]) == 0.0
    assert float(last["mpy_no_motion_heap_bytes_per_sample"]) == 0.0
