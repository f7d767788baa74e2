# The shared protocol tests, run on both real MicroPython VMs. Each runner must pass and must
# have run exactly as many tests as CPython finds in the same modules, so a test that one
# interpreter silently skips shows up as a failure here.
import importlib
import importlib.util
import re
import subprocess
import sys
import unittest

SHARED_DIR = "tests/protocol"


def shared_modules(root):
    """The module list the MicroPython runners use (tests/mpy/suite.py MODULES)."""
    spec = importlib.util.spec_from_file_location("mpy_suite", root / "tests/mpy/suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    return suite.MODULES


def cpython_count(root):
    sys.path.insert(0, str(root / SHARED_DIR))
    try:
        loader = unittest.TestLoader()
        return sum(loader.loadTestsFromModule(importlib.import_module(m)).countTestCases()
                   for m in shared_modules(root))
    finally:
        sys.path.remove(str(root / SHARED_DIR))


def summary(output):
    match = re.search(r"VIGIL-MPY implementation=(\S+) version=(\S+) ran=(\d+) failures=(\d+)",
                      output)
    assert match, "runner printed no summary:\n" + output[-3000:]
    return match.group(1), match.group(2), int(match.group(3)), int(match.group(4))


def test_every_shared_protocol_module_is_in_the_micropython_suite(root):
    on_disk = {p.stem for p in (root / SHARED_DIR).glob("test_*.py")} - {"test_properties"}
    assert on_disk == set(shared_modules(root))


def test_protocol_tests_pass_on_micropython_unix_port(root, micropython):
    cmd, env = micropython
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py")], env=env,
                          cwd=root, capture_output=True, text=True, timeout=300)
    name, version, ran, failures = summary(proc.stdout)
    assert name == "micropython"
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    assert ran == cpython_count(root)


def test_protocol_tests_pass_on_micropython_webassembly_port(root):
    proc = subprocess.run(["node", str(root / "tests" / "mpy" / "run_wasm.mjs")], cwd=root,
                          capture_output=True, text=True, timeout=300)
    name, version, ran, failures = summary(proc.stdout)
    assert name == "micropython"
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    assert ran == cpython_count(root)


def test_runners_fail_when_a_test_fails(root, micropython, tmp_path):
    # The runners must not report success for a failing suite (micropython-lib's unittest
    # does not set the exit status by itself).
    failing = tmp_path / "test_failing.py"
    failing.write_text("import unittest\nclass F(unittest.TestCase):\n"
                       "    def test_fails(self):\n        self.assertEqual(1, 2)\n")
    cmd, env = micropython
    env = dict(env, MICROPYPATH=env["MICROPYPATH"] + ":" + str(tmp_path))
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py"), "test_failing"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert summary(proc.stdout)[2:] == (1, 1)


def test_firmware_units_pass_on_micropython_unix_port(root, micropython):
    cmd, env = micropython
    proc = subprocess.run(cmd + [str(root / "tests" / "mpy" / "run_unix.py"), "test_fw_units"],
                          env=env, cwd=root, capture_output=True, text=True, timeout=300)
    name, version, ran, failures = summary(proc.stdout)
    assert (failures, proc.returncode) == (0, 0), proc.stdout[-5000:] + proc.stderr[-2000:]
    sys.path[:0] = [str(root / "firmware"), str(root / "tests" / "firmware"),
                    str(root / "tools" / "vigil_tools")]
    try:
        module = importlib.import_module("test_fw_units")
        expected = unittest.TestLoader().loadTestsFromModule(module).countTestCases()
    finally:
        del sys.path[:3]
    assert ran == expected
