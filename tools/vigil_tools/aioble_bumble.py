"""micropython-lib's aioble interface over a bumble device, so the firmware's own BLE link
(vigil_fw.ble_link.BleLink) runs on CPython as a real GATT peripheral in the emulated air.

Implements what the firmware uses: Service, Characteristic, BufferedCharacteristic,
register_services, advertise (returning a connection with is_connected(), mtu and
disconnect()), with the fields as keywords or as raw adv_data/resp_data, notify, written() ->
(connection, data) for capture characteristics, asyncio.TimeoutError on timeouts, and config():
"mac" and addr_mode as MicroPython's bluetooth.BLE.config has them (1 RANDOM, 3 NRPA: a fresh
address each time it is set, as NimBLE makes them; 0 and 2 are refused with EINVAL).
"""
import asyncio
import struct

from bumble.core import UUID as BumbleUUID
from bumble.device import AdvertisingData
from bumble.gatt import Characteristic as GattCharacteristic
from bumble.gatt import CharacteristicValue
from bumble.gatt import Service as GattService
from bumble.hci import Address, HCI_LE_Set_Random_Address_Command


def UUID(text):
    return text


class Connection:
    def __init__(self, bumble_connection):
        self.bumble = bumble_connection
        self.connected = True
        bumble_connection.on(bumble_connection.EVENT_DISCONNECTION, self._gone)

    def _gone(self, *_):
        self.connected = False

    def is_connected(self):
        return self.connected

    @property
    def mtu(self):
        return self.bumble.att_mtu

    async def disconnect(self, timeout_ms=2000):
        if self.connected:
            await asyncio.wait_for(self.bumble.disconnect(), timeout_ms / 1000)


class Aioble:
    """An aioble-like module bound to one powered-on bumble Device."""

    def __init__(self, device):
        self.device = device
        self._connections = {}
        self._tasks = set()
        # Like aioble's IRQ handler: a connection that lands while nobody is advertising (the
        # window just timed out) is kept for the next advertise() call, never lost.
        self._incoming = asyncio.Queue()
        device.on(device.EVENT_CONNECTION, self._incoming.put_nowait)
        adapter = self

        class Service:
            def __init__(self, uuid):
                self.uuid = uuid
                self.characteristics = []

        class Characteristic:
            def __init__(self, service, uuid, read=False, write=False, write_no_response=False,
                         notify=False, indicate=False, initial=None, capture=False):
                service.characteristics.append(self)
                self.uuid = uuid
                self.capture = capture
                self._writes = asyncio.Queue()
                properties = GattCharacteristic.Properties(0)
                permissions = 0
                if read:
                    properties |= GattCharacteristic.Properties.READ
                    permissions |= GattCharacteristic.READABLE
                if write:
                    properties |= GattCharacteristic.Properties.WRITE
                    permissions |= GattCharacteristic.WRITEABLE
                if notify:
                    properties |= GattCharacteristic.Properties.NOTIFY
                value = (CharacteristicValue(write=self._on_write) if write
                         else (initial or b""))
                self.gatt = GattCharacteristic(uuid, properties, permissions or
                                               GattCharacteristic.READABLE, value)

            def _on_write(self, bumble_connection, value):
                # The stack's callback only hands the write over.
                connection = adapter._connections.get(bumble_connection.handle)
                self._writes.put_nowait((connection, bytes(value)))

            def notify(self, connection, data=None):
                if not connection.is_connected():
                    raise ValueError("Not connected")
                task = asyncio.ensure_future(adapter.device.notify_subscriber(
                    connection.bumble, self.gatt, bytes(data)))
                adapter._tasks.add(task)
                task.add_done_callback(adapter._tasks.discard)

            async def written(self, timeout_ms=None):
                item = await asyncio.wait_for(self._writes.get(),
                                              None if timeout_ms is None else timeout_ms / 1000)
                return item if self.capture else item[0]

        class BufferedCharacteristic(Characteristic):
            def __init__(self, *args, max_len=20, append=False, **kwargs):
                Characteristic.__init__(self, *args, **kwargs)

        self.Service = Service
        self.Characteristic = Characteristic
        self.BufferedCharacteristic = BufferedCharacteristic
        self.UUID = UUID
        self._address_pending = False

    def config(self, *args, **kwargs):
        if args == ("mac",):
            return (1, bytes(reversed(bytes(self.device.random_address))))
        if args:
            raise ValueError("unknown config param")
        mode = kwargs.pop("addr_mode", None)
        if mode is not None:
            if mode not in (1, 3):
                raise OSError(22, "EINVAL")
            self.device.random_address = (Address.generate_static_address() if mode == 1
                                          else Address.generate_private_address())
            self._address_pending = True  # sent to the controller before advertising again
        kwargs.pop("gap_name", None)
        if kwargs:
            raise ValueError("unknown config param")
        return None

    def register_services(self, *services):
        for service in services:
            self.device.add_service(GattService(service.uuid,
                                                [c.gatt for c in service.characteristics]))

    async def advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True,
                        limited_disc=False, br_edr=False, name=None, services=None,
                        appearance=0, manufacturer=None, timeout_ms=None):
        if not adv_data and not resp_data:
            fields = [(AdvertisingData.FLAGS, bytes([0x06]))]
            for uuid in services or ():
                fields.append((AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                               bytes(BumbleUUID(uuid))))
            if manufacturer:
                fields.append((AdvertisingData.MANUFACTURER_SPECIFIC_DATA,
                               struct.pack("<H", manufacturer[0]) + manufacturer[1]))
            adv_data = bytes(AdvertisingData(fields))
            resp_data = bytes(AdvertisingData(
                [(AdvertisingData.COMPLETE_LOCAL_NAME, name.encode())] if name else []))
        if not self._incoming.empty():
            return self._accept(self._incoming.get_nowait())
        if self._address_pending:
            self._address_pending = False
            await self.device.send_command(HCI_LE_Set_Random_Address_Command(
                random_address=self.device.random_address))
        await self.device.start_advertising(
            advertising_data=bytes(adv_data or b""),
            scan_response_data=bytes(resp_data or b""),
            advertising_interval_min=interval_us / 1000,
            advertising_interval_max=interval_us / 1000)
        try:
            bumble_connection = await asyncio.wait_for(
                self._incoming.get(), None if timeout_ms is None else timeout_ms / 1000)
        except asyncio.TimeoutError:
            await self.device.stop_advertising()
            raise
        return self._accept(bumble_connection)

    def _accept(self, bumble_connection):
        connection = Connection(bumble_connection)
        self._connections[bumble_connection.handle] = connection
        return connection
