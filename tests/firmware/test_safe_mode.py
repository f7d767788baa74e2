# Crash loops on a virtual board (tools/vigil_tools/virtual_board.py: the real firmware and its
# real main.run() on the MicroPython unix port behind a pty, laid out as `vigil flash` does) and
# a real Mosquitto. Failures are injected by the test's boot.py on the board's flash (it runs
# before main.py at every reset); no firmware file knows about the test.
#
# The first test: the unit reboots with alarms in its outbox, and building the Wearable fails at
# every boot in normal mode (the GNSS parser raises MemoryError, as on a unit whose full outbox
# leaves no heap for it). Each failed boot says so and resets, counted; the boot after
# BootGuard.FAST_BOOTS of them is in safe mode, which does not load GNSS, sends the queued
# alarms to the gateway until acknowledged, and leaves a technician the console.
import json
import shutil
import time

import pytest
import serial
from fw_harness import KEY

import vigil_protocol as p
from vigil_fw.app import Wearable
from vigil_fw.bootguard import BootGuard
from vigil_fw.config import Config
from vigil_fw.flash import Flash
from vigil_fw.hal_sim import SimBoard
from vigil_fw.outbox import Outbox
from vigil_tools import boot_check
from vigil_tools.firmware_build import build
from vigil_tools.serial_board import SerialBoard
from vigil_tools.virtual_board import VirtualBoard

DEVICE = "00c0ffee"
PASSWORD = "device-secret"
GNSS = {"uart": 1, "rx": 12, "tx": 13, "baud": 9600}

# The GNSS parser finds no heap; the watchdog arms soon (the tests' knob, as elsewhere) and a
# machine.WDT says on the console when one is started.
NO_HEAP_FOR_GNSS = """\
import machine
import vigil_fw.nmea
from vigil_fw.app import Wearable


def _no_heap(*args):
    raise MemoryError("no heap for the GNSS parser")


vigil_fw.nmea.Nmea = _no_heap
Wearable.WATCHDOG_ARM_MS = 300
Wearable.SUPERVISE_MS = 100
_wdt = machine.WDT


def _loud_wdt(*args, **kwargs):
    print("test: watchdog started")
    return _wdt(*args, **kwargs)


machine.WDT = _loud_wdt
"""


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    out = tmp_path_factory.mktemp("firmware")
    build(out)
    return out


def config(broker_port):
    return {"version": 1, "device_id": DEVICE, "key": KEY.hex(), "gnss": GNSS,
            "checkin_interval_s": 3600,
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "username": DEVICE,
                     "password": PASSWORD}}


def lay_out(tmp_path, firmware, boot_py, data):
    """The board's flash: the firmware (main.py kept aside until start()), the test's boot.py,
    and the config `data` (none if None)."""
    flash = tmp_path / "flash"
    shutil.copytree(firmware, flash)
    (flash / "main.py").rename(tmp_path / "main.py")
    (flash / "boot.py").write_text(boot_py)
    (flash / "vigil").mkdir()
    if data is not None:
        (flash / "vigil" / "vigil.json").write_text(json.dumps(data))
    return flash


def start(board, tmp_path):
    """The board's console, read from before the firmware first starts."""
    console = Console(board.port)
    (tmp_path / "main.py").rename(board.flash_dir / "main.py")
    board.hard_reset()
    return console


def queue_alarms(root, data, kinds):
    """The unit's outbox before the reboot: alarms raised by the firmware's own Wearable (on
    CPython, same flash format) that no gateway acknowledged. Their counters."""
    w = Wearable(SimBoard(str(root)), Config(data), [], log=lambda m: None)
    return [w.raise_alarm(kind) for kind in kinds]


class Console:
    """What the board prints on its serial port, read as a technician's terminal would."""

    def __init__(self, port):
        self.port = serial.Serial(port, timeout=0.05)
        self.text = ""

    def until(self, what, timeout):
        """All it printed, once `what` is among it (or for `timeout` seconds if what is None)."""
        deadline = time.monotonic() + timeout
        while (what is None or what not in self.text) and time.monotonic() < deadline:
            self.text += self.port.read(4096).decode("utf-8", "replace")
        assert what is None or what in self.text, self.text[-3000:]
        return self.text

    def close(self):
        self.port.close()


def test_a_unit_that_cannot_build_its_wearable_resets_counts_and_sends_its_outbox_in_safe_mode(
        tmp_path, firmware, mosquitto, fake_gateway):
    data = config(mosquitto.port)
    flash = lay_out(tmp_path, firmware, NO_HEAP_FOR_GNSS, data)
    queued = queue_alarms(flash / "vigil", data, [p.DURESS, p.SOS])
    gw = fake_gateway()  # acknowledges every verified uplink (RECEIVED), signed for the unit

    with VirtualBoard(flash, romfs_kib=0) as board:
        console = start(board, tmp_path)
        try:
            out = console.until("alarm(s) waiting in the outbox", 30)
            out = out[out.index("MPY: soft reboot"):]  # from our reset on
            boots, safe = out.split("vigil: safe mode", 1)
            # (a) Every normal boot failed in Wearable(), said so and reset: no traceback, no
            # stop at the REPL, and each one counted (the safe boot read 3 from flash).
            crashes = [line for line in boots.splitlines() if "vigil: crashed (" in line]
            assert len(crashes) == BootGuard.FAST_BOOTS, boots
            assert all("MemoryError" in line and "no heap for the GNSS parser" in line
                       and line.rstrip().endswith("): resetting") for line in crashes), crashes
            assert boots.count("MPY: soft reboot") == BootGuard.FAST_BOOTS + 1  # + ours
            assert board.resets == BootGuard.FAST_BOOTS + 1
            assert "Traceback" not in out and ">>>" not in boots
            # (b) The next boot is in safe mode, says what is off, and comes up without the
            # GNSS parser that failed the others.
            assert safe.startswith(
                " after %d boots that did not last: MQTT only (BLE, beacons, Wi-Fi scans,"
                " man-down and GNSS off), no watchdog" % BootGuard.FAST_BOOTS)
            assert "vigil: device %s up, 2 alarm(s) waiting in the outbox" % DEVICE in safe
            # Its queued alarms reach the gateway, and its acks empty the outbox on flash.
            deadline = time.monotonic() + 20
            while len(Outbox(Flash(str(flash / "vigil")))) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(Outbox(Flash(str(flash / "vigil")))) == 0
            assert sorted({f.counter for f in gw.frames("alarm")}) == sorted(queued)
            assert {f.kind for f in gw.frames("alarm")} == {p.DURESS, p.SOS}
            # (c) No watchdog: it would have started 300 ms after boot, long before the drain.
            out = console.until(None, 0.5)
            assert "test: watchdog started" not in out
            assert board.resets == BootGuard.FAST_BOOTS + 1
        finally:
            console.close()
        # A technician stops it at the console (as `vigil provision` does, with its own
        # transport) and provisions: the REPL answers in the same process (no reset since: the
        # board has not restarted, and what the safe boot loaded is still there), files land,
        # and a watchdog would have been seen: the stand-in the test put there still speaks.
        with SerialBoard(board.port) as technician:
            assert technician.provisioned_as("vigil/vigil.json") == (DEVICE, 0)
            technician.write_file("vigil/note.txt", b"seen in safe mode\n")
            said = technician.exec("import sys, machine\nprint('vigil_fw.bootguard' in "
                                   "sys.modules)\nmachine.WDT(timeout=1000)\n", "checking")
        assert said.split() == ["True", "test:", "watchdog", "started"], said
        assert (flash / "vigil" / "note.txt").read_bytes() == b"seen in safe mode\n"
        assert board.resets == BootGuard.FAST_BOOTS + 1
    assert PASSWORD not in out and KEY.hex() not in out


# A flash error in BootGuard, or one the config load did not expect, resets too (over and over:
# no boot is counted, BootGuard being what failed or coming after the config, which safe mode
# needs as much); a config that is wrong is said once and the unit waits at the console for a
# technician, no reset. BootWatch (how `vigil flash` and `vigil provision` read a boot) takes
# the crash for one.
def failing(module, name, error):
    return ("import vigil_fw.%s\n\n\ndef _broken(*args):\n    raise %s\n\n\n"
            "vigil_fw.%s.%s = _broken\n" % (module, error, module, name))


@pytest.mark.parametrize("boot_py, provisioned, said, verdict", [
    (failing("bootguard", "BootGuard", "OSError(5)"), True,
     "vigil: crashed (OSError(5,)): resetting", (boot_check.CRASH, "OSError(5,)")),
    (failing("config", "load", "MemoryError('reading')"), True,
     "vigil: crashed (MemoryError('reading',)): resetting",
     (boot_check.CRASH, "MemoryError('reading',)")),
    ("", False, "vigil: cannot start: config: vigil.json is missing: provision this device",
     (boot_check.CONFIG, "vigil.json is missing: provision this device")),
], ids=["bootguard-fails", "config-load-fails", "no-config"])
def test_what_fails_before_the_wearable_resets_the_board_and_a_wrong_config_waits(
        tmp_path, firmware, boot_py, provisioned, said, verdict):
    flash = lay_out(tmp_path, firmware, boot_py, config(1883) if provisioned else None)
    resets = verdict[0] == boot_check.CRASH
    with VirtualBoard(flash, romfs_kib=0) as board:
        console = start(board, tmp_path)
        try:
            if resets:  # said, reset, and the same again
                out = console.until(said + "\nMPY: soft reboot\r\n" + said, 15)
            else:
                console.until(said, 15)
                out = console.until(None, 1)
                assert ">>> " in out[out.index(said):] and board.resets == 1, out  # it waits
        finally:
            console.close()
    out = out[out.index("MPY: soft reboot"):]  # from the test's reset on
    assert "Traceback" not in out
    assert not (flash / "vigil" / "boots").exists()
    watch = boot_check.BootWatch()
    assert next(filter(None, map(watch, out.splitlines()))) == verdict
