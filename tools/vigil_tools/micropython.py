"""Run device-side Python on the MicroPython unix port, with the protocol on its path."""
import os
import pathlib
import shutil
import subprocess
import sys

import vigil_protocol

from . import ToolError

PROTOCOL_DIR = pathlib.Path(vigil_protocol.__file__).resolve().parent.parent


def executable():
    exe = pathlib.Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise ToolError("the MicroPython unix port is not installed (run `make setup`)")
    return found


def run(script, args=(), stdin="", heapsize=None, timeout=120, path=()):
    """Run `script` (source text) under MicroPython; return its stdout, raise on failure.

    Keep each argument short: the unix port (1.28.0.2 wheel) dies with "FATAL: uncaught NLR"
    when one command-line argument is longer than about 255 characters. Pass data on stdin.
    """
    cmd = [executable()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += ["-c", script] + [str(a) for a in args]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(list(path) + [str(PROTOCOL_DIR), ".frozen"]))
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise ToolError("MicroPython failed:\n" + (proc.stderr or proc.stdout)[-2000:])
    return proc.stdout
