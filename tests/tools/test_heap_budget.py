"""With a UART GNSS module, the frozen 32-bit firmware's peak live heap against its budget
(44,800 bytes: 70 % of the 64,000 a classic ESP32 starts with), as `vigil bench firmware --gnss`
measures it: the life of test_romfs.py's benchmark (30 alarms nobody acknowledges, a reboot
with the full outbox, the drain; BLE up with a central connected; man-down on as `vigil
provision` sets it), the worst of two runs with other heap layouts, with `gnss` in the unit's
config and a receiver's burst with a fix fed to the simulated UART 64 bytes at each sample."""
import pytest
from vigil_cli import vigil
from vigil_tools.bench_firmware import BUDGET32_BYTES

# Known: with GNSS the frozen build peaks a few hundred bytes over the budget (firmware/README.md,
# Budgets): 650-870 in runs at different paths since 13a0c47, whose owed alarms cost every unit
# about 190 bytes at the peak (1024 before it). The gap may shrink, never grow past this; once
# it is gone the test passes.
KNOWN_GAP_BYTES = 1280


def test_with_gnss_the_frozen_32_bit_firmware_peaks_within_its_heap_budget(micropython32):
    proc = vigil("bench", "firmware", "--gnss", "--heapsize", "112k", "--heapsize32", "64k",
                 "--runs", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    f = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    # The unit had its module and the parser held the fix all along, BLE up, nothing died.
    assert f["gnss"] == "1" and f["gnss32_fix"] == "1" and f["ble32_connected"] == "1"
    assert f["runs32_without_death"] == "2" and f["left_after_drain32"] == "0"
    over = int(f["heap32_peak_bytes"]) - BUDGET32_BYTES
    if over > 0:
        assert over < KNOWN_GAP_BYTES, "GNSS on: %d bytes over the budget" % over
        pytest.xfail("GNSS on: %d bytes over the %d-byte budget" % (over, BUDGET32_BYTES))
