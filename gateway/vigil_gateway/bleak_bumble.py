"""A bleak backend over a bumble device: the gateway's real bleak code (BleakScanner,
BleakClient) runs unchanged against wearables in the emulated air (see bumble_air.py).

    scanner = BleakScanner(callback, backend=BumbleScanner, bumble_device=device)
    client = BleakClient(ble_device, backend=BumbleClient, bumble_device=device, mtu=247)
    scanner_factory, client_factory = factories(device)   # what BleCentral takes

Only what a Vigil central needs is implemented: scanning with advertisement data, connect with
an MTU request, service discovery, read, write (with and without response), notifications.
"""
import asyncio

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bumble.core import UUID
from bumble.device import AdvertisingData, Peer
from bumble.gatt import Characteristic as GattCharacteristic
from bumble.hci import HCI_LE_Create_Connection_Cancel_Command


def _uuid_str(uuid):
    return str(uuid).lower() if len(bytes(uuid)) == 16 else uuid.to_hex_str().lower()


class BumbleScanner(BaseBleakScanner):
    def __init__(self, detection_callback, service_uuids, scanning_mode="active", *,
                 bumble_device, **_):
        super().__init__(detection_callback, service_uuids)
        self.device = bumble_device
        self._listening = False
        self._names = {}  # address -> name from its scan response

    def _on_advertisement(self, advertisement):
        data = advertisement.data
        address = str(advertisement.address).split("/")[0]
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
        if name is not None:
            self._names[address] = name
        if advertisement.is_scan_response and address in self.seen_devices:
            # A scan response completes the advertisement already seen: report it merged.
            device, adv = self.seen_devices[address]
            adv = adv._replace(local_name=self._names.get(address))
            self.call_detection_callbacks(
                self.create_or_update_device(address, address, adv.local_name,
                                             device.details, adv), adv)
            return
        uuids = []
        for ad_type in (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                        AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS):
            for value in data.get_all(ad_type):
                uuids.extend(_uuid_str(u) for u in (value if isinstance(value, list)
                                                    else [value]))
        if not self.is_allowed_uuid(uuids):
            return
        manufacturer = {}
        for value in data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA):
            company, payload = value
            manufacturer[company] = bytes(payload)
        name = self._names.get(address)
        adv = AdvertisementData(local_name=name, manufacturer_data=manufacturer,
                                service_data={}, service_uuids=uuids, tx_power=None,
                                rssi=advertisement.rssi, platform_data=(advertisement,))
        device = self.create_or_update_device(address, address, name, advertisement.address,
                                              adv)
        self.call_detection_callbacks(device, adv)

    async def start(self):
        self.seen_devices = {}
        if not self._listening:
            self.device.on(self.device.EVENT_ADVERTISEMENT, self._on_advertisement)
            self._listening = True
        await self.device.start_scanning(filter_duplicates=False)

    async def stop(self):
        if self._listening:
            self.device.remove_listener(self.device.EVENT_ADVERTISEMENT, self._on_advertisement)
            self._listening = False
        await self.device.stop_scanning()


class BumbleClient(BaseBleakClient):
    def __init__(self, address_or_ble_device, *, bumble_device, mtu=247, **kwargs):
        super().__init__(address_or_ble_device,
                         disconnected_callback=kwargs.get("disconnected_callback"),
                         timeout=kwargs.get("timeout", 10.0))
        self.device = bumble_device
        self.wanted_mtu = mtu
        self.connection = None
        self.peer = None
        details = getattr(address_or_ble_device, "details", None)
        self._peer_address = details if details is not None else self.address

    @property
    def name(self):
        return self.address

    @property
    def mtu_size(self):
        return self.connection.att_mtu if self.connection else 23

    @property
    def is_connected(self):
        return self.connection is not None

    async def connect(self, pair=False, **kwargs):
        try:
            self.connection = await asyncio.wait_for(
                self.device.connect(self._peer_address), self._timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            # The controller is still trying (a peer that stopped advertising, one whose
            # address rotated): stop it, or it refuses every later connection attempt.
            try:
                await asyncio.shield(self.device.send_sync_command(
                    HCI_LE_Create_Connection_Cancel_Command()))
            except Exception:  # it completed or failed meanwhile: nothing left to cancel
                pass
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise BleakError("connection to %s timed out" % self.address) from None
        self.connection.on(self.connection.EVENT_DISCONNECTION, self._on_disconnection)
        self.peer = Peer(self.connection)
        if self.wanted_mtu and self.wanted_mtu > 23:
            await self.peer.request_mtu(self.wanted_mtu)
        await self.peer.discover_services()
        await self.peer.discover_characteristics()
        self.services = self._collect_services()

    def _on_disconnection(self, *_):
        self.connection = None
        self.peer = None
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _collect_services(self):
        collection = BleakGATTServiceCollection()
        for service in self.peer.services:
            bleak_service = BleakGATTService(service, service.handle, _uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in service.characteristics:
                props = [name.lower().replace("_", "-") for name in
                         str(GattCharacteristic.Properties(characteristic.properties))
                         .split("|") if name]
                collection.add_characteristic(BleakGATTCharacteristic(
                    characteristic, characteristic.handle, _uuid_str(characteristic.uuid),
                    props, lambda: self.mtu_size - 3, bleak_service))
        return collection

    async def disconnect(self):
        if self.connection is not None:
            await self.connection.disconnect()
        self.connection = None

    async def pair(self, *args, **kwargs):
        raise NotImplementedError("Vigil does not pair: frames are signed end to end")

    async def unpair(self):
        raise NotImplementedError("Vigil does not pair: frames are signed end to end")

    def _require(self):
        if self.peer is None:
            raise BleakError("not connected")
        return self.peer

    async def read_gatt_char(self, characteristic, **kwargs):
        return bytearray(await self._require().read_value(characteristic.obj))

    async def read_gatt_descriptor(self, descriptor, **kwargs):
        return bytearray(await self._require().read_value(descriptor.handle))

    async def write_gatt_char(self, characteristic, data, response):
        await self._require().write_value(characteristic.obj, bytes(data),
                                          with_response=response)

    async def write_gatt_descriptor(self, descriptor, data):
        await self._require().write_value(descriptor.handle, bytes(data), with_response=True)

    async def start_notify(self, characteristic, callback, **kwargs):
        await self._require().subscribe(characteristic.obj,
                                        lambda value: callback(bytearray(value)))

    async def stop_notify(self, characteristic):
        await self._require().unsubscribe(characteristic.obj)


__all__ = ["BumbleScanner", "BumbleClient", "UUID"]


def factories(device, service_uuids=None):
    """(scanner_factory, client_factory) as BleCentral takes them, on bumble `device`:
    BleakScanner(callback) filtered by `service_uuids`, and BleakClient(ble_device,
    disconnected_callback) asking for an MTU of 247."""
    from bleak import BleakClient, BleakScanner

    return (lambda callback: BleakScanner(callback, service_uuids, backend=BumbleScanner,
                                          bumble_device=device),
            lambda ble_device, gone: BleakClient(ble_device, gone, backend=BumbleClient,
                                                 bumble_device=device, mtu=247))
