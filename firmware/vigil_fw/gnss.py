# GNSS in the wearable, loaded only when the config names a module (app.py): the task that
# reads the module's UART into the NMEA parser, and the latest fix for every frame.
#
# Rules:
#   the task parks in the UART stream's readinto() (the scheduler wakes it when bytes have
#     come: nothing polls) and feeds what came to nmea.Nmea, which keeps the latest fix
#   fix() is the latest fix with its age now, (lat_e7, lon_e7, accuracy_m, age_s) as extension
#     0x04 carries it, or None before a first fix: a lost fix is given with its true age
#   nothing here shows anything to the wearer (no feedback, in duress or not)
from vigil_protocol._compat import const

from .clock import ticks_ms
from .nmea import Nmea

_READ = const(64)  # bytes taken from the UART at a time


class Gnss:
    def __init__(self, uart):
        # an asyncio stream (hal_esp32.gnss_uart(), hal_sim_uart.SimUart), or None when the
        # module's UART did not open: then no task, and no fix ever
        self.uart = uart
        self.nmea = Nmea()
        self._buf = bytearray(_READ)

    def fix(self):
        return self.nmea.fix(ticks_ms())

    async def gnss_task(self, app):
        """Whatever the module sends, as it comes, into the parser; `app` keeps the task's
        heartbeat for the supervisor (parked while it waits for the UART)."""
        uart = self.uart
        nmea = self.nmea
        buf = self._buf
        while True:
            app._park("gnss")
            n = await uart.readinto(buf)
            app._busy("gnss")
            if n:
                nmea.feed(buf, ticks_ms(), n)
