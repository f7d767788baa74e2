"""Bluetooth LE without a radio: emulated controllers on one link (bumble), so simulated
wearables' GATT servers and the gateway's bleak central talk over a real, user-space Bluetooth
host stack. Used by the BLE tests, `vigil sim --link ble`, `vigil bench ble` and the demo.

In one process:      air = Air(); device = await air.device("F1:00:00:00:00:01")
Across processes:    `vigil ble-air tcp-server:127.0.0.1:7001 tcp-server:127.0.0.1:7002`
                     hosts one controller per transport on a shared link; each process then
                     opens its device with  await open_device("tcp-client:127.0.0.1:7001", addr)
                     (the gateway's `ble.hci` setting takes the same string).
"""
import asyncio

from bumble import hci
from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink


class AirController(Controller):
    """bumble's emulated controller, with LE Create Connection Cancel doing what a real one
    does: bumble's answers "success" and keeps trying, so a central that gave up on a peer (one
    that stopped advertising, or rotated its address) got "command disallowed" for every
    connection after that. Here the pending connection ends with the Connection Complete event
    the specification calls for (Vol 4, Part E, 7.8.13)."""

    def on_hci_le_create_connection_cancel_command(self, command):
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        peer = pending.peer_address if hasattr(pending, "peer_address") else \
            pending.peer_addresses[0]
        # After the Command Complete this handler's return value becomes.
        asyncio.get_running_loop().call_soon(
            self.send_hci_packet, hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0, role=hci.Role.CENTRAL,
                peer_address_type=peer.address_type, peer_address=peer, connection_interval=0,
                peripheral_latency=0, supervision_timeout=0, central_clock_accuracy=0))
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class Air:
    """One emulated radio space in this process: every device made here hears every other."""

    def __init__(self):
        self.link = LocalLink()
        self.devices = []

    async def device(self, address):
        controller = AirController("C" + address.replace(":", "")[-4:], link=self.link,
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


async def open_device(transport, address):
    """A powered-on device on a controller reached through `transport` (bumble's transport
    names, e.g. "tcp-client:127.0.0.1:7001"). The transport stays open with the device."""
    hci = await open_transport(transport)
    device = Device.with_hci("vigil", Address(address), hci.source, hci.sink)
    device.transport = hci  # keep it alive as long as the device
    await device.power_on()
    return device


async def serve_air(transports):
    """Host one emulated controller per transport on a shared link, until cancelled."""
    link = LocalLink()
    opened = []
    try:
        for index, name in enumerate(transports):
            hci = await open_transport(name)
            opened.append(hci)
            Controller("C%d" % index, host_source=hci.source, host_sink=hci.sink, link=link)
        await asyncio.get_running_loop().create_future()
    finally:
        for hci in opened:
            await hci.close()
