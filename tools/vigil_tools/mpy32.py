"""A 32-bit MicroPython unix port with `bluetooth`, the firmware frozen in: a production image
on the host.

Built from the pinned MicroPython source tarball (see SRC_SHA256) with its
build-micropython-unix.sh, which sits beside it: 32-bit (`--m32`, an ESP32's word size, so heap
figures match a board's), `bluetooth` on BTstack over an H4 UART (`--bluetooth-h4`, the UART is
$MICROPYBTUART at run time), and frozen in: the port's standard manifest, micropython-lib's
aioble, every module of the firmware bundle (firmware_build.sources()) and the firmware
benchmark's device-side phase module (fw_bench_phase.py), compiled as the bundle is (-O2).
A second build beside it (<key>/romfs/micropython, the same options) stands for a provisioned
unit: a stock image (the standard manifest only) with the ROMFS image a unit is provisioned
with (the same modules as .mpy files) frozen in as a read-only constant, which
`vigil_rom_image.mount(lib)` mounts at /rom, so the firmware runs from ROMFS as on a board, and
aioble as .mpy files in <key>/romfs/lib, as `mip` installs it into a board's /lib (see
rom_image_module() and aioble_lib()).

The binary is cached at .venv/mpy32/<key>/micropython, where the key hashes the tarball's
sha256, the build options and the name and bytes of every frozen source file: a firmware change
gives a new key, and `make setup` builds again. Tests never build: executable() is the binary
for the sources as they are now, or None, and skip_reason() says why.

    python -m vigil_tools.mpy32 build [--src TARBALL]        build unless cached (make setup)
    python -m vigil_tools.mpy32 needs-build [--src TARBALL]  exit 0 when `build` would build
    python -m vigil_tools.mpy32 path                         the binary, or why there is none
"""
import argparse
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from . import ToolError, firmware_build

SRC_SHA256 = "a10ac7d2b14bd8c5379b190f80508cfa56ec9dbb2085d1f737dd5aac217c8ae7"  # v1.28.0
OPTIONS = ("--m32", "--bluetooth-h4")
BUILD_SCRIPT = "build-micropython-unix.sh"  # beside the tarball
DEFAULT_SRC = firmware_build.ROOT.parent / "shared" / "vendor" / "micropython-src.tar.xz"
CACHE = firmware_build.ROOT / ".venv" / "mpy32"
# Bumped when the manifest this module writes changes in a way the sources do not show.
SCHEME = b"vigil-mpy32/3"
PHASE_MODULE = "fw_bench_phase.py"  # device side of `vigil bench firmware` (bench_firmware.py)
ROM_IMAGE_MODULE = "vigil_rom_image.py"  # generated: the ROMFS image a unit is provisioned with
ROMFS_VARIANT = "romfs"  # the build holding it, beside the frozen one in the cache
AIOBLE_IN_TARBALL = "lib/micropython-lib/micropython/bluetooth/aioble/aioble/"
HOSTS = ("x86_64", "amd64", "i386", "i686")  # where gcc -m32 builds (gcc-multilib)


def default_src():
    """Where the source tarball is looked for: $MICROPYTHON_SRC, else the shared vendor folder
    beside the checkout."""
    return pathlib.Path(os.environ.get("MICROPYTHON_SRC") or DEFAULT_SRC)


def frozen_files(root=None):
    """[(path in the frozen image, source file)] for every module frozen in: the bundle's
    modules (firmware_build.sources()) at their paths under lib/, e.g.
    ("vigil_fw/app.py", .../firmware/vigil_fw/app.py), then the firmware benchmark's phase
    module, frozen as a board's main.py would be so that its bytecode is not in the heap the
    benchmark measures."""
    phase = (pathlib.Path(root) / "tools" / "vigil_tools" if root is not None
             else pathlib.Path(__file__).parent) / PHASE_MODULE
    return [(firmware_build.source_name(name), pathlib.Path(src))
            for src, name in firmware_build.sources(root)] + [(PHASE_MODULE, phase)]


def key(files, options=OPTIONS, src_sha256=SRC_SHA256):
    """The cache key of a build: the tarball's sha256, the options, and each frozen file's
    path in the image and bytes (never its host path: two checkouts share keys)."""
    h = hashlib.sha256()
    for part in (SCHEME, src_sha256.encode(), " ".join(options).encode()):
        h.update(b"%d:%s" % (len(part), part))
    for name, src in sorted(files):
        data = pathlib.Path(src).read_bytes()
        h.update(b"%d:%s%d:" % (len(name.encode()), name.encode(), len(data)) + data)
    return h.hexdigest()[:20]


def manifest(stage, names):
    """The frozen manifest: the port's standard one, aioble, and the firmware modules staged
    under `stage` (top-level packages with package(), modules with module())."""
    lines = ['include("$(PORT_DIR)/variants/standard/manifest.py")', 'require("aioble")']
    packages = sorted({n.split("/")[0] for n in names if "/" in n})
    modules = sorted(n for n in names if "/" not in n)
    for name in packages:
        lines.append("package(%r, base_path=%r, opt=2)" % (name, str(stage)))
    for name in modules:
        lines.append("module(%r, base_path=%r, opt=2)" % (name, str(stage)))
    return "\n".join(lines) + "\n"


def manifest_romfs(stage):
    """The manifest of the build a provisioned unit stands for: the port's standard modules
    (asyncio, as a stock board image has them) and the ROMFS image constant staged under
    `stage`, nothing of Vigil or aioble frozen in. Their names are then not in the binary's
    own qstr table either, so running from the image interns them in the heap as on a board."""
    return ('include("$(PORT_DIR)/variants/standard/manifest.py")\n'
            "module(%r, base_path=%r)\n" % (ROM_IMAGE_MODULE, str(stage)))


def _run_build(script, src, into, manifest_file, tmp, cache):
    into.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["bash", str(script), str(src), str(into), *OPTIONS, "--frozen-manifest",
         str(manifest_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TMPDIR=str(tmp)))
    (cache / "build.log").write_text(proc.stdout)
    if proc.returncode != 0 or not (into / "micropython").is_file():
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise ToolError("the 32-bit MicroPython build failed (full log: %s):\n%s"
                        % (cache / "build.log", tail))


def _binary(cache, k):
    """The frozen build's binary when both builds for key `k` are there, else None."""
    exe = pathlib.Path(cache) / k / "micropython"
    other = pathlib.Path(cache) / k / ROMFS_VARIANT / "micropython"
    ok = all(x.is_file() and os.access(x, os.X_OK) for x in (exe, other))
    return exe if ok else None


def executable(root=None, cache=CACHE, romfs=False):
    """The cached binary for the current sources, or None (see skip_reason()): the one with
    the firmware frozen in, or with `romfs` the stock one holding the ROMFS image (its
    aioble is in the folder `lib` beside it)."""
    try:
        k = key(frozen_files(root))
    except (ToolError, OSError):
        return None
    exe = _binary(cache, k)
    if exe is None:
        return None
    return str(exe.parent / ROMFS_VARIANT / "micropython") if romfs else str(exe)


def skip_reason(root=None, cache=CACHE, src=None):
    """Why executable() is None, for a skipped test; None when the binary is there."""
    src = pathlib.Path(src) if src else default_src()
    try:
        k = key(frozen_files(root))
    except (ToolError, OSError) as exc:
        return "the 32-bit MicroPython build cannot find its frozen sources: %s" % exc
    if _binary(cache, k):
        return None
    reason = _skipped(src)
    if reason:
        return reason
    built = pathlib.Path(cache).is_dir() and any(
        _binary(cache, d.name) for d in pathlib.Path(cache).iterdir())
    if built:
        return ("the 32-bit MicroPython build is stale (firmware sources changed since it was "
                "built): run make setup")
    return "the 32-bit MicroPython unix port is not built yet: run make setup"


def rom_image_module(stage, names, tmp):
    """The source of a frozen module holding, as one bytes constant, the ROMFS image a unit is
    provisioned with (the firmware bundle compiled as `vigil provision` compiles it, and the
    benchmark's phase module), with mount(lib) to mount it at /rom, ahead of `lib` (where
    aioble is, see aioble_lib()) and the frozen modules. A frozen constant stays in the
    binary's read-only data, outside the heap, as a board's memory-mapped partition does:
    mounted, the modules run from it as a board runs them from ROMFS, with what loading a .mpy
    costs the heap (its names interned, a record per function), which frozen modules do not."""
    from .romfs import build_image
    rom = tmp / "rom-lib"
    for name in names:
        target = rom / (name[:-3] + ".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        firmware_build.compile_module(stage / name, name, target)
    return ("# The ROMFS image a unit is provisioned with, generated by vigil_tools.mpy32.\n"
            "IMAGE = %r\n\n\n"
            "def mount(lib):\n"
            "    import sys\n"
            "    import vfs\n"
            "    vfs.mount(vfs.VfsRom(IMAGE), '/rom')\n"
            "    sys.path[:] = ['/rom', lib, '.frozen']\n" % build_image(rom))


def aioble_lib(src, lib):
    """aioble compiled from the tarball's micropython-lib into lib/aioble as .mpy files: where
    a board has it, installed with `mip` into /lib (its bytecode is then loaded into the heap)."""
    import tarfile
    aioble = pathlib.Path(lib) / "aioble"
    aioble.mkdir(parents=True)
    with tarfile.open(src, "r:xz") as tar:
        for member in tar:
            _, _, inner = member.name.partition("/")
            if inner.startswith(AIOBLE_IN_TARBALL) and inner.endswith(".py"):
                source = aioble / "source.py"
                source.write_bytes(tar.extractfile(member).read())
                base = inner[len(AIOBLE_IN_TARBALL):]
                firmware_build.compile_module(source, "aioble/" + base,
                                              aioble / (base[:-3] + ".mpy"))
                source.unlink()
    if not any(aioble.iterdir()):
        raise ToolError("%s holds no aioble under %s" % (src, AIOBLE_IN_TARBALL))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_src(src):
    digest = sha256_file(src)
    if digest != SRC_SHA256:
        raise ToolError("%s has sha256 %s, expected %s (MicroPython v1.28.0): refusing to build "
                        "from it" % (src, digest, SRC_SHA256))
    script = src.parent / BUILD_SCRIPT
    if not script.is_file():
        raise ToolError("%s is missing beside %s" % (BUILD_SCRIPT, src))
    return script


def _skipped(src):
    """The one line saying why nothing is built, or None when a build can run."""
    if not src.is_file():
        return ("MicroPython source not found at %s: the 32-bit/BLE build and its tests are "
                "skipped" % src)
    if platform.machine().lower() not in HOSTS:
        return ("the 32-bit MicroPython build needs an x86 host (found %s): it and its tests "
                "are skipped" % platform.machine())
    return None


def needs_build(src, root=None, cache=CACHE):
    """Whether build() would build (so the build tools must be there)."""
    return _skipped(src) is None and _binary(cache, key(frozen_files(root))) is None


def build(src, root=None, cache=CACHE, out=None):
    """Build into the cache unless the binary for the current sources is there; returns its
    path, or None when the tarball is absent (one line on `out` says so)."""
    out = out or sys.stdout
    src = pathlib.Path(src).resolve() if pathlib.Path(src).exists() else pathlib.Path(src)
    reason = _skipped(src)
    if reason:
        print(reason, file=out)
        return None
    script = _check_src(src)
    cache = pathlib.Path(cache)
    with tempfile.TemporaryDirectory(prefix="vigil-mpy32-") as tmp:
        tmp = pathlib.Path(tmp)
        # Freeze copies, so the bytes hashed into the key are the bytes built even while the
        # tree is being edited.
        stage = tmp / "frozen"
        files = []
        for name, source in frozen_files(root):
            target = stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            files.append((name, target))
        k = key(files)
        exe = _binary(cache, k)
        if exe:
            return str(exe)
        names = [n for n, _ in files]
        rom_image = stage / "rom-image"
        rom_image.mkdir()
        (rom_image / ROM_IMAGE_MODULE).write_text(rom_image_module(stage, names, tmp))
        (tmp / "manifest.py").write_text(manifest(stage, names))
        (tmp / "manifest-romfs.py").write_text(manifest_romfs(rom_image))
        cache.mkdir(parents=True, exist_ok=True)
        work = pathlib.Path(tempfile.mkdtemp(prefix=k + ".", dir=cache))
        work.chmod(0o755)
        print("building the 32-bit MicroPython unix port (bluetooth; the firmware frozen in, "
              "then a stock image with the ROMFS image)...", end=" ", file=out, flush=True)
        t0 = time.monotonic()
        try:
            for manifest_file, into in (("manifest.py", work), ("manifest-romfs.py",
                                                                 work / ROMFS_VARIANT)):
                _run_build(script, src, into, tmp / manifest_file, tmp, cache)
            aioble_lib(src, work / ROMFS_VARIANT / "lib")
        except BaseException:
            print("failed after %.0f s" % (time.monotonic() - t0), file=out, flush=True)
            shutil.rmtree(work, ignore_errors=True)
            raise
        elapsed = time.monotonic() - t0
        (work / "manifest.py").write_text(manifest("<frozen>", names))
        try:
            work.rename(cache / k)
        except OSError:  # built meanwhile by another setup: keep that one
            shutil.rmtree(work, ignore_errors=True)
        print("done in %.0f s" % elapsed, file=out, flush=True)
    for old in cache.iterdir():  # builds for sources that are no more
        if old.is_dir() and old.name != k and "." not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    return str(cache / k / "micropython")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vigil_tools.mpy32",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "needs-build", "path"))
    parser.add_argument("--src", type=pathlib.Path, default=None,
                        help="the MicroPython source tarball (default: $MICROPYTHON_SRC, else %s)"
                        % DEFAULT_SRC)
    args = parser.parse_args(argv)
    src = args.src or default_src()
    try:
        if args.command == "needs-build":
            return 0 if needs_build(src) else 1
        if args.command == "path":
            exe = executable()
            print(exe or skip_reason(src=src))
            return 0 if exe else 1
        build(src)
    except ToolError as exc:
        print("vigil mpy32: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
