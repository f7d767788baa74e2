"""Bluetooth LE without a radio: emulated controllers on one `LocalLink` (bumble), so a
simulated wearable's GATT server and the gateway's bleak central talk over a real, user-space
Bluetooth host stack. Used by the BLE tests, `vigil sim --link ble` and `vigil bench ble`.

    air = Air()
    wearable = await air.device("F1:00:00:00:00:01")   # powered on
    gateway = await air.device("F0:00:00:00:00:01")
"""
from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink


class Air:
    """One emulated radio space: every device made here hears every other."""

    def __init__(self):
        self.link = LocalLink()
        self.devices = []

    async def device(self, address):
        controller = Controller("C" + address.replace(":", "")[-4:], link=self.link,
                                public_address=address)
        device = Device(address=Address(address), host=Host(controller,
                                                              AsyncPipeSink(controller)))
        await device.power_on()
        self.devices.append(device)
        return device

    async def close(self):
        for device in self.devices:
            try:
                await device.power_off()
            except Exception:  # a device already gone: nothing left to switch off
                pass
        self.devices = []
