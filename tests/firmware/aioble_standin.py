# A stand-in for micropython-lib's aioble, for running the firmware's BLE link on the
# MicroPython unix port: no MicroPython build here has the `bluetooth` module, and there is no
# radio. It keeps aioble's public interface (Service, Characteristic, BufferedCharacteristic,
# register_services, advertise, connections with is_connected()/mtu, written() returning
# (connection, data) for capture characteristics, asyncio.TimeoutError on timeouts), and adds a
# `Central` that plays the gateway's side of the air: connect, receive notifications, write.
import asyncio

adverts = []       # (interval_us, name, services, manufacturer) for every advertise() call
registered = []
_waiting = []      # advertise() calls waiting for a central: (event, holder)


def UUID(text):
    return text


class Service:
    def __init__(self, uuid):
        self.uuid = uuid
        self.characteristics = []


class Characteristic:
    def __init__(self, service, uuid, read=False, write=False, write_no_response=False,
                 notify=False, indicate=False, initial=None, capture=False):
        service.characteristics.append(self)
        self.uuid = uuid
        self.can_notify = notify
        self.capture = capture
        self.value = initial
        self._writes = []
        self._written = asyncio.Event()

    def read(self):
        return self.value

    def notify(self, connection, data=None):
        if not self.can_notify:
            raise ValueError("Not supported")
        if not connection.is_connected():
            raise ValueError("Not connected")
        connection.central.notifications.append((self.uuid, bytes(data)))

    async def written(self, timeout_ms=None):
        if not self._writes:
            self._written.clear()
            await asyncio.wait_for_ms(self._written.wait(), timeout_ms)
        connection, data = self._writes.pop(0)
        return (connection, data) if self.capture else connection


class BufferedCharacteristic(Characteristic):
    def __init__(self, *args, max_len=20, append=False, **kwargs):
        Characteristic.__init__(self, *args, **kwargs)
        self.max_len = max_len


def register_services(*services):
    registered.extend(services)


class DeviceConnection:
    def __init__(self, central, mtu):
        self.central = central
        self.mtu = mtu
        self.connected = True

    def is_connected(self):
        return self.connected


async def advertise(interval_us, adv_data=None, resp_data=None, connectable=True,
                    limited_disc=False, br_edr=False, name=None, services=None, appearance=0,
                    manufacturer=None, timeout_ms=None):
    adverts.append((interval_us, name, services, manufacturer))
    holder = [asyncio.Event(), None]
    _waiting.append(holder)
    try:
        await asyncio.wait_for_ms(holder[0].wait(), timeout_ms)
    finally:
        if holder in _waiting:
            _waiting.remove(holder)
    return holder[1]


class Central:
    """The other end of the air: a gateway's central, driven by the test."""

    def __init__(self):
        self.notifications = []
        self.connection = None

    async def connect(self, mtu=23, timeout_ms=5000):
        waited = 0
        while not _waiting:
            if waited >= timeout_ms:
                raise asyncio.TimeoutError()
            await asyncio.sleep_ms(10)
            waited += 10
        holder = _waiting.pop(0)
        self.connection = DeviceConnection(self, mtu)
        holder[1] = self.connection
        holder[0].set()
        return self.connection

    def manufacturer_data(self):
        return adverts[-1][3] if adverts else None

    async def write(self, uuid, data):
        """A write with response to the characteristic `uuid`."""
        for service in registered:
            for characteristic in service.characteristics:
                if characteristic.uuid == uuid:
                    if len(data) > characteristic.max_len:
                        raise ValueError("longer than the characteristic's buffer")
                    characteristic._writes.append((self.connection, bytes(data)))
                    characteristic._written.set()
                    await asyncio.sleep_ms(0)
                    return
        raise ValueError("no such characteristic")

    def disconnect(self):
        if self.connection is not None:
            self.connection.connected = False
            self.connection = None
