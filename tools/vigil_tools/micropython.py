"""Run device-side Python on the MicroPython unix port, with the protocol on its path."""
import os
import pathlib
import shutil
import subprocess
import sys

import vigil_protocol

from . import ToolError

PROTOCOL_DIR = pathlib.Path(vigil_protocol.__file__).resolve().parent.parent


def venv_tool(name, what):
    """A command installed beside this Python (the venv's bin), else on PATH."""
    exe = pathlib.Path(sys.executable).parent / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        raise ToolError("%s is not installed (run `make setup`)" % what)
    return found


def executable():
    return venv_tool("micropython", "the MicroPython unix port")


def run(script, args=(), stdin="", heapsize=None, timeout=120, path=(), rom=None):
    """Run `script` (source text) under MicroPython; return its stdout, raise on failure.

    `rom`: a ROMFS image file, mapped outside the heap and mounted at /rom as on a board
    (see romfs.py); /rom comes before the folders in `path`.

    Keep each argument short: the unix port (1.28.0.2 wheel) dies with "FATAL: uncaught NLR"
    when one command-line argument is longer than about 255 characters. Pass data on stdin.
    """
    cmd = [executable()]
    if rom is not None:
        from .romfs import MOUNT_FILE, command
        cmd = command(rom)
        script = MOUNT_FILE.read_text() + script
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd += ["-c", script] + [str(a) for a in args]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(list(path) + [str(PROTOCOL_DIR), ".frozen"]))
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise ToolError("MicroPython failed:\n" + (proc.stderr or proc.stdout)[-2000:])
    return proc.stdout
