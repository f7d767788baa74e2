"""The firmware as a ROMFS image: built from the bundle, mounted at /rom on the unix port the
way a board mounts its ROMFS partition, and imported from there."""
import pytest
from vigil_cli import vigil
from vigil_tools import firmware_build, micropython, romfs
from vigil_tools.bench_firmware import BUDGET32_BYTES


def test_the_firmware_image_mounts_at_rom_and_its_modules_import_from_there(tmp_path):
    firmware_build.build(tmp_path / "bundle")
    size = firmware_build.build_romfs(tmp_path / "bundle", tmp_path / "fw.romfs")
    image = (tmp_path / "fw.romfs").read_bytes()
    assert image.startswith(romfs.HEADER) and len(image) == size
    out = micropython.run(
        "import sys\n"
        "import vigil_fw.app, vigil_protocol, vigil_fw.mqtt_link\n"
        "print(vigil_fw.app.__file__, vigil_protocol.__file__, vigil_fw.mqtt_link.__file__)\n"
        "print(sys.path[:3])\n", rom=tmp_path / "fw.romfs")
    files, path = out.strip().splitlines()
    assert files.split() == ["/rom/vigil_fw/app.mpy", "/rom/vigil_protocol/__init__.mpy",
                             "/rom/vigil_fw/mqtt_link.mpy"]
    assert path == "['', '/rom', '/rom/lib']"


def test_a_partition_without_an_image_mounts_nothing(tmp_path):
    blank = tmp_path / "blank.romfs"
    blank.write_bytes(b"\xff" * 4096)  # an erased partition
    out = micropython.run("import os\ntry:\n os.stat('/rom')\n print('mounted')\n"
                          "except OSError:\n print('nothing at /rom')\n", rom=blank)
    assert out.strip() == "nothing at /rom"


@pytest.fixture(scope="module")
def bench_figures():
    """One `vigil bench firmware` run for the tests below, at its defaults (as `make bench` runs
    it) but for --runs: the 64-bit port (112 KiB) and, where it is there, the 32-bit frozen
    build (64 KiB) and the 32-bit build run from the ROMFS image a unit is provisioned with
    (96 KiB), three times each."""
    proc = vigil("bench", "firmware", "--runs", "3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())


def test_the_firmware_fills_its_outbox_reboots_with_it_and_drains_it_with_no_task_dying(
        bench_figures):
    # Run from ROMFS as flashed, three times with other environment and path sizes (the heap's
    # layout follows them): 30 alarms with nobody acknowledging (the outbox fills at 24 and
    # refuses the rest), a reboot with the full outbox, then a gateway acknowledges them all.
    # The 64-bit port's objects are ~1.9x an ESP32's and its ROMFS names are interned in its
    # heap: with man-down on it peaks at ~92.5 KB, leaving a 1-2 KB free block at 96 KiB, so
    # it gets 112 KiB here; the 32-bit frozen build is held to the 64 KiB budget below.
    last = bench_figures
    assert last["heapsize_bytes"] == str(112 * 1024) and last["link_up"] == "1"
    assert (last["task_deaths"], last["task_restarts"], last["runs_without_death"]) == \
        ("0", "0", "3")
    assert (last["alarms_queued"], last["queued_at_reboot"], last["left_after_drain"]) == \
        ("24", "24", "0")
    # Running in place leaves the bytecode out of the heap: less in use than the baseline.
    assert 0 < float(last["romfs_vs_files_after_boot"]) < 1


def test_the_frozen_32_bit_firmware_holds_a_full_outbox_in_64k(micropython32, bench_figures):
    # The same life on the production image's word size, three times with other environment
    # and path sizes; the task counts cover every run of both builds.
    last = bench_figures
    # With BLE up (advertising on the emulated radio) as on the board.
    assert last["heapsize32_bytes"] == str(64 * 1024) and last["ble32_loaded"] == "1"
    assert last["left_after_drain32"] == "0" and last["runs32_without_death"] == "3"
    assert last["task_deaths"] == "0" and last["task_restarts"] == "0"
    # Within the budget (test_heap_budget.py: the same with GNSS).
    assert int(last["heap32_peak_bytes"]) <= BUDGET32_BYTES, last["heap32_peak_bytes"]


def test_idle_with_mqtt_up_and_ble_advertising_32_bit_wakes_at_most_3_times_a_second(
        micropython32, bench_figures):
    # Issue 11's goal: idle (MQTT link up, BLE advertising, no alarm) at most 3 task wake-ups
    # a second, on the production image's build with its real aioble on BTstack advertising
    # on the emulated radio and no central there to connect it. A count, not a timing.
    last = bench_figures
    assert last["idle32_ble_loaded"] == "1" and last["idle32_link_up"] == "1"
    assert int(last["idle32_ble_advertised"]) >= 1 and last["idle32_ble_connects"] == "0"
    assert float(last["idle_wakeups32_per_s"]) <= 3, last["idle32_wakes_by"]
    # The 64-bit build, which has no `bluetooth`, says so; its idle figure is MQTT's alone.
    assert last["ble_loaded"] == "0" and float(last["idle_wakeups_per_s"]) <= 3


def test_the_frozen_32_bit_firmware_keeps_a_4_kb_free_block_at_its_peak(micropython32,
                                                                          bench_figures):
    # Issue 11's goal: at the peak (a full outbox after a reboot, and its drain) a block of at
    # least 4 KB can still be allocated, in every run (the figure is the smallest of the runs).
    assert int(bench_figures["largest_free_block32_bytes"]) >= 4096


def test_the_32_bit_firmware_run_from_romfs_as_provisioned_holds_a_full_outbox(micropython32,
                                                                              bench_figures):
    # As `vigil provision` installs it (firmware and aioble as .mpy in ROMFS, a stock image):
    # loading .mpy files interns their names in the heap, which the frozen build does not, so
    # the heap is capped at 96 KiB here; the bench prints its peak against the 45 KB budget.
    last = bench_figures
    assert last["heapsize32_romfs_bytes"] == str(96 * 1024)
    assert last["ble32_romfs_connected"] == "1" and last["runs32_romfs_without_death"] == "3"
    assert last["left_after_drain32_romfs"] == "0"
    # More in use than frozen: the names and per-function records the frozen build keeps in
    # flash (if it were not, the image would not be what ran).
    assert int(last["heap32_romfs_peak_bytes"]) > int(last["heap32_peak_bytes"])
