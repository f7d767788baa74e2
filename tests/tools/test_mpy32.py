"""The 32-bit MicroPython unix port with `bluetooth` and the firmware frozen in (vigil_tools.mpy32):
what `make setup` built, and when its cache key says to build again."""
import io
import os
import subprocess

import pytest
from source_tree import copy_sources

from vigil_tools import ToolError, firmware_build, mpy32

# Only the frozen image on the path, run from an empty folder: what imports came from the image.
PRELUDE = "import sys\nsys.path[:] = ['.frozen']\n"


def run(exe, script, cwd):
    proc = subprocess.run([exe, "-c", PRELUDE + script], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, MICROPYPATH=".frozen"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_it_is_a_32_bit_build(micropython32, tmp_path):
    assert run(micropython32, "print(sys.maxsize)", tmp_path) == [str(2**31 - 1)]


def test_it_has_bluetooth(micropython32, tmp_path):
    out = run(micropython32, "import bluetooth\nprint(bluetooth.BLE.__name__, "
              "bluetooth.FLAG_NOTIFY)", tmp_path)
    assert out == ["BLE", "16"]


def test_aioble_and_the_firmware_import_from_the_frozen_image(micropython32, tmp_path):
    out = run(micropython32, "import aioble, vigil_fw.app, vigil_protocol, vigil_protocol.frames\n"
              "print(aioble.__file__, vigil_fw.app.__file__, vigil_protocol.__file__,"
              " vigil_protocol.frames.__file__)", tmp_path)
    # Frozen modules report their path inside the image.
    assert out == ["aioble/__init__.py", "vigil_fw/app.py", "vigil_protocol/__init__.py",
                   "vigil_protocol/frames.py"]


def test_the_romfs_build_runs_the_firmware_from_its_image_and_aioble_from_files(
        micropython32, tmp_path):
    # The build a provisioned unit stands for: nothing of Vigil or aioble frozen in, so they
    # import only once the ROMFS image is mounted: the firmware from /rom, aioble from the
    # folder that stands for the board's /lib, both as .mpy files.
    exe = mpy32.executable(romfs=True)
    lib = os.path.join(os.path.dirname(exe), "lib")
    missing = run(exe, "for m in ('vigil_fw', 'vigil_protocol', 'aioble'):\n"
                  "    try:\n        __import__(m)\n        print('found', m)\n"
                  "    except ImportError:\n        print('missing', m)\n", tmp_path)
    assert missing == ["missing", "vigil_fw", "missing", "vigil_protocol", "missing", "aioble"]
    out = run(exe, "import vigil_rom_image\nvigil_rom_image.mount(%r)\n"
              "import asyncio, aioble, vigil_fw.app, vigil_protocol.frames\n"
              "print(aioble.__file__, vigil_fw.app.__file__, vigil_protocol.frames.__file__)"
              % lib, tmp_path)
    assert out == [lib + "/aioble/__init__.mpy", "/rom/vigil_fw/app.mpy",
                   "/rom/vigil_protocol/frames.mpy"]


def test_every_module_of_the_bundle_is_frozen_in(micropython32, tmp_path):
    out = run(micropython32, "help('modules')", tmp_path)
    frozen = {name.removesuffix(".py") for name, _ in mpy32.frozen_files()}  # vigil_fw/app
    assert frozen - set(out) == set()


def test_the_key_follows_the_frozen_sources_not_where_they_are(root, tmp_path):
    a = copy_sources(root, tmp_path / "a")
    b = copy_sources(root, tmp_path / "somewhere" / "else")
    key = mpy32.key(mpy32.frozen_files(a))
    assert mpy32.key(mpy32.frozen_files(b)) == key
    assert mpy32.key(mpy32.frozen_files(a), options=("--m32",)) != key
    assert mpy32.key(mpy32.frozen_files(a), src_sha256="0" * 64) != key
    with open(b / "firmware" / "vigil_fw" / "app.py", "a") as f:
        f.write("\n# changed\n")
    assert mpy32.key(mpy32.frozen_files(b)) != key
    (a / "firmware" / "vigil_fw" / "extra.py").write_text("X = 1\n")  # a new module
    assert mpy32.key(mpy32.frozen_files(a)) != key
    with open(b / "tools" / "vigil_tools" / "fw_bench_phase.py", "a") as f:
        f.write("\n# changed\n")  # the benchmark's phase is frozen in too
    assert mpy32.key(mpy32.frozen_files(b)) not in (key, mpy32.key(mpy32.frozen_files(a)))


def test_the_key_covers_every_module_of_the_bundle_and_the_benchmark_phase(root):
    names = [name for name, _ in mpy32.frozen_files()]
    assert names == [firmware_build.source_name(n) for _, n in firmware_build.sources()] + [
        "fw_bench_phase.py"]
    assert "vigil_fw/app.py" in names and "vigil_protocol/__init__.py" in names


def fake_build(cache, key):
    """Both binaries of a build, as empty executables: the frozen one is returned."""
    for exe in (cache / key / "romfs" / "micropython", cache / key / "micropython"):
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("")
        exe.chmod(0o755)
    return exe


def test_a_build_for_other_sources_is_stale_run_make_setup(root, tmp_path, monkeypatch):
    monkeypatch.setattr(mpy32.platform, "machine", lambda: "x86_64")
    src = copy_sources(root, tmp_path / "src")
    cache, tarball = tmp_path / "cache", tmp_path / "micropython-src.tar.xz"
    tarball.write_bytes(b"")
    assert mpy32.executable(src, cache) is None
    assert "not built yet: run make setup" in mpy32.skip_reason(src, cache, tarball)
    exe = fake_build(cache, mpy32.key(mpy32.frozen_files(src)))
    assert mpy32.executable(src, cache) == str(exe)
    assert mpy32.executable(src, cache, romfs=True) == str(exe.parent / "romfs" / "micropython")
    assert mpy32.skip_reason(src, cache, tarball) is None
    (src / "firmware" / "vigil_fw" / "app.py").write_text("X = 2\n")
    assert mpy32.executable(src, cache) is None
    reason = mpy32.skip_reason(src, cache, tarball)
    assert "stale" in reason and "run make setup" in reason


def test_without_the_source_tarball_nothing_is_built_and_one_line_says_so(root, tmp_path):
    src = copy_sources(root, tmp_path / "src")
    missing = tmp_path / "nowhere" / "micropython-src.tar.xz"
    out = io.StringIO()
    assert mpy32.build(missing, root=src, cache=tmp_path / "cache", out=out) is None
    assert out.getvalue().count("\n") == 1
    assert str(missing) in out.getvalue() and "skipped" in out.getvalue()
    assert not mpy32.needs_build(missing, root=src, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    reason = mpy32.skip_reason(src, tmp_path / "cache", missing)
    assert reason.startswith("MicroPython source not found at %s" % missing)


def test_a_tarball_with_another_checksum_is_refused(root, tmp_path, monkeypatch):
    src = copy_sources(root, tmp_path / "src")
    tarball = tmp_path / "micropython-src.tar.xz"
    tarball.write_bytes(b"not micropython")
    monkeypatch.setattr(mpy32.platform, "machine", lambda: "x86_64")
    with pytest.raises(ToolError) as err:
        mpy32.build(tarball, root=src, cache=tmp_path / "cache", out=io.StringIO())
    assert "sha256" in str(err.value) and mpy32.SRC_SHA256 in str(err.value)
    assert not (tmp_path / "cache").exists()
