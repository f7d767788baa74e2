"""The firmware as a ROMFS image: built from the bundle, mounted at /rom on the unix port the
way a board mounts its ROMFS partition, and imported from there."""
from vigil_cli import vigil
from vigil_tools import firmware_build, micropython, romfs


def test_the_firmware_image_mounts_at_rom_and_its_modules_import_from_there(tmp_path):
    firmware_build.build(tmp_path / "bundle")
    size = firmware_build.build_romfs(tmp_path / "bundle", tmp_path / "fw.romfs")
    image = (tmp_path / "fw.romfs").read_bytes()
    assert image.startswith(romfs.HEADER) and len(image) == size
    out = micropython.run(
        "import sys\n"
        "import vigil_fw.app, vigil_protocol, umqtt.simple\n"
        "print(vigil_fw.app.__file__, vigil_protocol.__file__, umqtt.simple.__file__)\n"
        "print(sys.path[:3])\n", rom=tmp_path / "fw.romfs")
    files, path = out.strip().splitlines()
    assert files.split() == ["/rom/vigil_fw/app.mpy", "/rom/vigil_protocol/__init__.mpy",
                             "/rom/umqtt/simple.mpy"]
    assert path == "['', '/rom', '/rom/lib']"


def test_a_partition_without_an_image_mounts_nothing(tmp_path):
    blank = tmp_path / "blank.romfs"
    blank.write_bytes(b"\xff" * 4096)  # an erased partition
    out = micropython.run("import os\ntry:\n os.stat('/rom')\n print('mounted')\n"
                          "except OSError:\n print('nothing at /rom')\n", rom=blank)
    assert out.strip() == "nothing at /rom"


def test_the_firmware_holds_a_full_outbox_in_a_64k_heap():
    # 30 alarms raised with nobody acknowledging: the outbox fills (24) and refuses the rest,
    # and the firmware, run from ROMFS as flashed, never runs out of heap on the way.
    proc = vigil("bench", "firmware", "--alarms", "30")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    assert last["heapsize_bytes"] == str(64 * 1024)
    assert last["link_up"] == "1" and last["alarms_queued"] == "24"
    assert int(last["alarms_sent"]) > 0


def test_bench_firmware_prints_the_romfs_figures_and_the_files_baseline():
    proc = vigil("bench", "firmware", "--heapsize", "160k")
    assert proc.returncode == 0, proc.stderr
    last = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    assert last["link_up"] == "1" and int(last["alarms_sent"]) >= 6
    # Running in place leaves the bytecode out of the heap: less in use than the baseline.
    assert int(last["heap_imported_bytes"]) < int(last["files_heap_imported_bytes"])
    assert 0 < float(last["romfs_vs_files_after_boot"]) < 1
