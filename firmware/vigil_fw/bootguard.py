# Crash loops: a wearable whose firmware keeps failing soon after boot must still send its
# alarms and still let a technician in.
#
# Rules:
#   every boot adds one to a sealed count on flash ("boots"); a run that stays up
#     Wearable.HEALTHY_MS sets it back to 0 (healthy())
#   FAST_BOOTS boots in a row that never got that far (crashes, watchdog resets) start the
#     next boot in safe mode: MQTT only (no BLE, beacon scans, man-down or GNSS), no
#     watchdog, so the outbox is still sent and provisioning over USB is not cut off by a reset
#   main.py counts the boot (makes a BootGuard) before anything that can fail; whatever
#     fails, a config error aside, is logged on the console and resets the board
import struct

from .flash import read_sealed, write_atomic

FILE = "boots"


class BootGuard:
    FAST_BOOTS = 3

    def __init__(self, flash):
        self.flash = flash
        saved = read_sealed(flash, FILE)
        self.fast_boots = struct.unpack(">H", saved)[0] if saved and len(saved) == 2 else 0
        self.safe = self.fast_boots >= self.FAST_BOOTS
        self._write(min(self.fast_boots + 1, 0xFFFF))

    def _write(self, count):
        write_atomic(self.flash, FILE, struct.pack(">H", count))

    def healthy(self):
        """The firmware has run long enough: the next boot is a normal one."""
        self.fast_boots = 0
        self._write(0)
