# The BLE link (protocol/SPEC.md section 10): the wearable is a GATT peripheral, over
# micropython-lib's aioble. Same interface as the MQTT link (see link.py).
#
# Rules:
#   advertise the Vigil service, the name "Vigil" and the device id in manufacturer data;
#     fast (ADV_FAST_US) while an alarm is waiting to be sent or still open (acks and the
#     responder's actions must get through), slow otherwise. Nothing in the
#     advertisement says whether an alarm is open, or of what kind
#   uplinks go out as notifications on the uplink characteristic; a frame longer than the
#     connection's ATT payload (MTU - 3) is not sent on this link (the core alarm frame, 20
#     bytes, always fits)
#   once a central is connected the wearable asks for an MTU of MTU itself, so a central that
#     never asks still gets check-ins and 22-byte downlinks in one ATT write each (a long
#     write of a downlink reaches the app in pieces on some stacks); meanwhile alarms go out
#   downlinks arrive as writes (with response) on the downlink characteristic and are only
#     handed to the inbox: the app verifies them like any other
#   every radio await has a timeout; while idle the link waits for a central inside aioble
import asyncio
import struct

from .clock import sleep_ms

SERVICE = "5649474c-0100-4000-8000-766967696c00"
UPLINK = "5649474c-0101-4000-8000-766967696c00"
DOWNLINK = "5649474c-0102-4000-8000-766967696c00"
IDENTITY = "5649474c-0103-4000-8000-766967696c00"
COMPANY_ID = 0xFFFF  # Bluetooth SIG: reserved for internal use / testing
NAME = "Vigil"
DEFAULT_MTU = 23


class BleLink:
    name = "ble"
    ADV_FAST_US = 100000
    ADV_SLOW_US = 1000000
    ADV_WINDOW_MS = 2000   # re-decide the advertising rate this often
    WRITE_WAIT_MS = 1000
    MTU = 247
    MTU_WAIT_MS = 1000
    MAX_DOWNLINK = 64

    def __init__(self, config, aioble, uuid, urgent=lambda: False, log=print):
        """`aioble` is micropython-lib's module (or a stand-in with its interface), `uuid` is
        bluetooth.UUID, and `urgent()` says whether an alarm is waiting or open."""
        self.config = config
        self.aioble = aioble
        self.urgent = urgent
        self.log = log
        self.up = False
        self.status = "advertising"
        self.connects = 0
        self.connection = None
        service = aioble.Service(uuid(SERVICE))
        self._uplink = aioble.Characteristic(service, uuid(UPLINK), notify=True)
        self._downlink = aioble.BufferedCharacteristic(service, uuid(DOWNLINK), write=True,
                                                       capture=True, max_len=self.MAX_DOWNLINK)
        aioble.Characteristic(service, uuid(IDENTITY), read=True,
                              initial=struct.pack(">IB", config.device_id, 1))
        aioble.register_services(service)
        self._service_uuid = uuid(SERVICE)
        self._manufacturer = (COMPANY_ID, struct.pack(">I", config.device_id))

    async def run(self, inbox, woke=None):
        while True:
            interval = self.ADV_FAST_US if self.urgent() else self.ADV_SLOW_US
            try:
                connection = await self.aioble.advertise(
                    interval, name=NAME, services=[self._service_uuid],
                    manufacturer=self._manufacturer, timeout_ms=self.ADV_WINDOW_MS)
            except asyncio.TimeoutError:
                continue  # nobody connected in this window
            except OSError as exc:
                self.status = "advertising failed (%r)" % (exc,)
                self.log("ble: " + self.status)
                await sleep_ms(self.ADV_WINDOW_MS)
                continue
            self.connection = connection
            self.connects += 1
            self.up = True
            self.status = ""
            if woke is not None:
                woke()
            try:
                await self._serve(connection, inbox)
            finally:
                self.up = False
                self.status = "advertising"
                self.connection = None

    async def _serve(self, connection, inbox):
        if (connection.mtu or DEFAULT_MTU) < self.MTU:
            try:
                await connection.exchange_mtu(self.MTU, timeout_ms=self.MTU_WAIT_MS)
            except Exception as exc:  # noqa: BLE001 - refused, timed out, gone: MTU stays
                self.log("ble: no MTU exchange (%r)" % (exc,))
        while connection.is_connected():
            try:
                written = await self._downlink.written(timeout_ms=self.WRITE_WAIT_MS)
            except asyncio.TimeoutError:
                continue
            if written:
                inbox.put(written[1], self.name)

    async def send(self, frame):
        connection = self.connection
        if not self.up or connection is None or not connection.is_connected():
            return False  # (aioble's notify takes a dropped connection's handle, None)
        if len(frame) > (connection.mtu or DEFAULT_MTU) - 3:
            return False  # needs an MTU exchange this central has not made
        try:
            self._uplink.notify(connection, frame)
            return True
        except (OSError, ValueError) as exc:
            self.log("ble: notify failed (%r)" % (exc,))
            return False

