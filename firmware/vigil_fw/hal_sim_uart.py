# The simulated board's UART for a GNSS module (hal_sim.SimBoard(gnss=...)), in a module of
# its own so that a simulated unit without GNSS (the benchmark's) loads nothing of it.
from .clock import Flag


class SimUart:
    """The GNSS module's UART as the firmware reads it (hal_esp32's asyncio.StreamReader over
    machine.UART): `await readinto(buf)` waits until bytes have come, then gives as many as
    fit. A test or the simulator feeds it what a receiver would send (`feed(bytes)`); each feed
    sets a flag as the UART's receive interrupt wakes the scheduler, and nothing in it wakes
    otherwise. What `fail(exc)` is given comes out of the next read instead (a driver error)."""

    RXBUF = 512  # as the board opens its UART with: bytes beyond it are lost, as they are there

    def __init__(self):
        self._rx = bytearray()
        self.lost = 0
        self._error = None
        self.flag = Flag()

    def feed(self, data):
        room = self.RXBUF - len(self._rx)
        if len(data) > room:
            self.lost += len(data) - room
            data = data[:max(room, 0)]
        self._rx.extend(data)
        self.flag.set()

    def fail(self, exc):
        self._error = exc
        self.flag.set()

    async def readinto(self, buf):
        while not self._rx and self._error is None:
            await self.flag.wait()
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        n = min(len(buf), len(self._rx))
        buf[0:n] = self._rx[0:n]
        self._rx = self._rx[n:]
        return n
