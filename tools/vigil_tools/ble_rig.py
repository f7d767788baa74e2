"""An emulated Bluetooth LE radio for wearables running MicroPython's own `bluetooth` module.

bumble's emulated controllers on one link: a pseudo-terminal speaking H4 for each MicroPython
wearable (the 32-bit unix port's BTstack opens it as its UART, $MICROPYBTUART), and a TCP port
for each bumble host (the gateway's central, through `ble.hci` or vigil_gateway.bumble_air's
open_device). No kernel Bluetooth, no radio.

    rig = BleRig(wearables=2)
    rig.start()
    rig.wearable_uart(0)      # "/tmp/.../hci0", for MICROPYBTUART
    rig.gateway_transport     # "tcp-client:127.0.0.1:PORT", for the gateway's ble.hci
    rig.advertising(0)        # what wearable 0's host asked its controller to advertise
    rig.observer(1)           # a passive observer on central port 1 (Observer)
    rig.stop()

The controllers run on an event loop in a thread of their own, so the caller's loop (a test's,
a benchmark's) is free. `vigil ble-air` serves the same controllers from the command line.

bumble's emulated controller was written for bumble's own host. BTstack (the stack
MicroPython's unix port uses over H4) needs three workarounds, each commented where it is made:
an answer to vendor commands, legacy advertising reports, and LE data sent from the address the
connection was made with. A fourth makes a scan response carry the advertiser's scan response
data, as a real controller's does.
"""
import asyncio
import dataclasses
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time

from bumble import hci, ll
from vigil_gateway.bumble_air import AirController
from bumble.core import PhysicalTransport
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import StreamPacketSource

DEVICE_SCRIPT = pathlib.Path(__file__).with_name("ble_device.py")
WEARABLE_ADDRESS = "F0:F1:F2:F3:%02X:%02X"   # wearable i's controller (public address)
CENTRAL_ADDRESS = "F0:F1:F2:F4:%02X:%02X"    # central j's controller


class AdvertisingRecord:
    """What a host asked its controller to advertise: one entry per change, in order."""

    def __init__(self):
        self.events = []  # (time.monotonic(), what, value)
        self.interval_ms = None
        self.data = b""
        self.scan_response = b""
        self.enabled = False

    def _add(self, what, value):
        self.events.append((time.monotonic(), what, value))

    def intervals(self):
        """The advertising intervals (ms) the host enabled advertising with, in order."""
        out = []
        interval = None
        for _, what, value in self.events:
            if what == "interval":
                interval = value
            elif what == "enabled" and value:
                out.append(interval)
        return out


class RigController(AirController):
    """bumble's emulated controller, made to work with BTstack as MicroPython runs it (and
    with LE Create Connection Cancel ending a pending connection: AirController)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.advertising_record = AdvertisingRecord()
        # Workaround 2: bumble reports every advertisement as an *extended* advertising report
        # whenever this feature bit is set, even to a host that scans with the legacy
        # commands. MicroPython's BTstack has no extended advertising, so a wearable that
        # scans (for indoor-location beacons, or to observe) would see nothing. With the bit
        # cleared, reports are legacy ones, which every host understands.
        self.le_features &= ~hci.LeFeatureMask.LE_EXTENDED_ADVERTISING

    def on_packet(self, packet):
        # Workaround 1: bumble's controller has no vendor commands, and sends nothing back for
        # a command it cannot handle. MicroPython's unix port always picks BTstack's "Zephyr"
        # chipset driver, whose start-up sends the vendor command 0xFC09 (Read Static
        # Addresses) and then waits for its Command Complete: BLE().active(True) fails with
        # ETIMEDOUT after 15 s. Every vendor command (OGF 0x3F) is answered "unknown
        # command" here, before bumble parses it: once bumble's drivers are imported (a bumble
        # host in this process does), 0xFC09 parses as an Intel command that this packet is
        # too short for, and the parse error would drop it too. BTstack then moves on and uses
        # the controller's public address.
        if len(packet) >= 3 and packet[0] == hci.HCI_COMMAND_PACKET:
            op_code = packet[1] | packet[2] << 8
            if op_code >> 10 == hci.HCI_VENDOR_OGF:
                return self._unknown_command(op_code)
        super().on_packet(packet)

    def on_hci_command_packet(self, command):
        if type(command) is hci.HCI_Command:  # a standard command bumble has no class for
            return self._unknown_command(command.op_code)
        if isinstance(command, hci.HCI_Reset_Command):
            self.fall_silent()  # a host starting again (a rebooted wearable) resets its radio
        self._record(command)
        super().on_hci_command_packet(command)

    def fall_silent(self):
        """The radio stops, as a reset or powered-off one does: every connection ends (the
        peer sees it as a real peer does once the supervision timeout passes), advertising and
        scanning stop. bumble's controller does none of this on a reset, and does not know
        when its host has gone."""
        for connection in list(self.le_connections.values()):
            connection.send_ll_control_pdu(
                ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR))
            self.on_le_disconnected(connection, hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR)
        self.le_legacy_advertiser.stop()
        self.le_scan_enable = False

    def _unknown_command(self, op_code):
        self.send_hci_packet(hci.HCI_Command_Complete_Event(
            num_hci_command_packets=1, command_opcode=op_code,
            return_parameters=hci.HCI_GenericReturnParameters(
                data=bytes([hci.HCI_ErrorCode.UNKNOWN_HCI_COMMAND_ERROR]))))

    def _record(self, command):
        record = self.advertising_record
        if isinstance(command, hci.HCI_LE_Set_Advertising_Parameters_Command):
            # The interval in units of 0.625 ms, as the Core specification counts it.
            record.interval_ms = command.advertising_interval_min * 0.625
            record._add("interval", record.interval_ms)
        elif isinstance(command, hci.HCI_LE_Set_Advertising_Data_Command):
            record.data = bytes(command.advertising_data)
            record._add("data", record.data)
        elif isinstance(command, hci.HCI_LE_Set_Scan_Response_Data_Command):
            record.scan_response = bytes(command.scan_response_data)
            record._add("scan_response", record.scan_response)
        elif isinstance(command, hci.HCI_LE_Set_Advertising_Enable_Command):
            record.enabled = bool(command.advertising_enable)
            record._add("enabled", record.enabled)

    def send_hci_packet(self, packet):
        # Fidelity fix (not BTstack's): bumble answers a scan request with the advertising
        # data again. A real controller sends the advertiser's scan response data, which is
        # where a wearable's name rides when the advertisement is full.
        if isinstance(packet, hci.HCI_LE_Advertising_Report_Event) and self.link is not None:
            packet = hci.HCI_LE_Advertising_Report_Event(
                [self._scan_response(report) for report in packet.reports])
        super().send_hci_packet(packet)

    def _scan_response(self, report):
        if report.event_type != hci.HCI_LE_Advertising_Report_Event.EventType.SCAN_RSP:
            return report
        advertiser = self.link.advertiser(report.address)
        if advertiser is None:
            return report
        return dataclasses.replace(report,
                                   data=advertiser.le_legacy_advertiser.scan_response_data)


class RigLink(LocalLink):
    """bumble's link between emulated controllers, with LE data sent from the right address,
    and taps for observers: each LE data PDU (a whole L2CAP PDU: the controllers reassemble)
    is shown to every callable in `sniffers` as (time, source address, destination address,
    PDU), which is what a sniffer following the connection records."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sniffers = []

    def _tap(self, source, destination, data):
        for sniff in self.sniffers:
            sniff(time.monotonic(), str(source), str(destination), bytes(data))

    def advertiser(self, address):
        for c in self.controllers:
            if c.le_legacy_advertiser.enabled and c.le_legacy_advertiser.address == address:
                return c
        return None

    def send_acl_data(self, sender_controller, destination_address, transport, data):
        # Workaround 3: bumble's link stamps LE data with the sender's *random* address
        # (00:00:00:00:00:00 when the host never set one). BTstack advertises and connects with
        # its public address, so the receiver finds no connection for that random address and
        # drops every ATT packet: discovery and notifications never arrive. Send the data from
        # the address the sender's connection was made with, which is the one the receiver
        # knows the connection by.
        connection = sender_controller.le_connections.get(destination_address)
        if transport == PhysicalTransport.LE and self.sniffers:
            self._tap(connection.self_address if connection is not None
                      else sender_controller.random_address, destination_address, data)
        if transport != PhysicalTransport.LE or connection is None or \
                not connection.self_address:
            return super().send_acl_data(sender_controller, destination_address, transport,
                                         data)
        receiver = self.find_le_controller(destination_address)
        if receiver is not None:
            source = connection.self_address
            asyncio.get_running_loop().call_soon(
                lambda: receiver.on_link_acl_data(source, transport, data))


class BleRig:
    """Emulated controllers on one link: `wearables` ptys (H4, for MicroPython's BTstack) and
    `centrals` TCP ports (for bumble hosts), served from a thread until stop()."""

    def __init__(self, wearables=1, centrals=1, folder=None):
        self.wearables = wearables
        self.centrals = centrals
        self._own_folder = folder is None
        self.folder = folder or tempfile.mkdtemp(prefix="vigil-ble-rig-")
        self._uarts = [os.path.join(self.folder, "hci%d" % i) for i in range(wearables)]
        self._ports = []
        self.controllers = []
        self._loop = None
        self._thread = None
        self._stopped = None
        self._ready = threading.Event()
        self._error = None
        self._background = []  # tasks run on the rig's loop for callers (listening centrals)

    # -- what callers use ----------------------------------------------------------------------

    def wearable_uart(self, index):
        """The pty wearable `index`'s MicroPython opens as its H4 UART ($MICROPYBTUART)."""
        return self._uarts[index]

    @property
    def gateway_transport(self):
        """The bumble transport name the gateway's host opens (its `ble.hci` setting)."""
        return self.central_transport(0)

    def central_transport(self, index):
        return "tcp-client:127.0.0.1:%d" % self._ports[index]

    def advertising(self, index):
        """What wearable `index`'s host asked its controller to advertise (AdvertisingRecord)."""
        return self.controllers[index].advertising_record

    def listening_central(self, allowed, index=0, timeout=10.0):
        """The gateway's BLE central (vigil_gateway.ble_central: bleak over bumble) on central
        port `index`, run on the rig's own loop: it connects the wearables in `allowed` (a
        dict of device id -> key bytes, so it resolves their rotating identifiers) and
        subscribes to their uplink, and drops what they send, as a gateway in range that never
        acknowledges would. Returns the BleCentral (its .status.connected says who is
        connected)."""
        return asyncio.run_coroutine_threadsafe(
            self._listen(dict(allowed), index), self._loop).result(timeout)

    def observer(self, index, timeout=10.0):
        """A passive Observer on central port `index`, recording from now on."""
        observer = Observer(self)
        asyncio.run_coroutine_threadsafe(observer._start(index), self._loop).result(timeout)
        return observer

    async def _listen(self, allowed, index):
        from vigil_gateway.ble_central import SERVICE, BleCentral
        from vigil_gateway.bleak_bumble import factories
        from vigil_gateway.bumble_air import open_device
        from vigil_gateway.topics import Topics

        device = await open_device(self.central_transport(index),
                                   "F0:00:00:00:01:%02X" % (index & 255))
        import vigil_protocol as p

        keys = {device_id: p.DeviceKey(key) for device_id, key in allowed.items()}
        central = BleCentral(Topics("vigil"), lambda message: None, lambda: set(keys),
                             *factories(device, [SERVICE]), max_connections=len(allowed),
                             key_of=keys.get)
        self._background.append((asyncio.ensure_future(central.run()), central, device))
        return central

    def start(self, timeout=10.0):
        self._thread = threading.Thread(target=self._run, name="ble-rig", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the emulated BLE controllers did not start in %.0f s" % timeout)
        if self._error is not None:
            raise RuntimeError("the emulated BLE controllers failed to start: %r"
                               % (self._error,))
        return self

    def stop(self):
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(
                lambda: self._stopped.done() or self._stopped.set_result(None))
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._own_folder:
            for path in self._uarts:
                if os.path.lexists(path):
                    os.unlink(path)
            try:
                os.rmdir(self.folder)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the controllers' thread ---------------------------------------------------------------

    def _run(self):
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(), or lost after stop()
            self._error = exc
            self._ready.set()

    async def _serve(self):
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        transports = []
        try:
            specs = [("pty:" + path, WEARABLE_ADDRESS % (i >> 8, i & 255)) for i, path in
                     enumerate(self._uarts)]
            for spec, address in specs:
                transports.append(await open_transport(spec))
            hosts = []
            for j in range(self.centrals):
                host = HostPort()
                self._ports.append(await host.listen())
                hosts.append(host)
                transports.append(host)
                specs.append((None, CENTRAL_ADDRESS % (j >> 8, j & 255)))
            self.controllers = serve_controllers(transports, [a for _, a in specs])
            for host, controller in zip(hosts, self.controllers[len(self._uarts):]):
                host.gone = controller.fall_silent
            self._ready.set()
            await self._stopped
        finally:
            for task, central, device in self._background:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)  # its scanner stopped
                if central is not None:
                    await central.close()
                    await asyncio.gather(*central._tasks, return_exceptions=True)
                await device.transport.close()
            for transport in transports:
                try:
                    await transport.close()
                except Exception:  # a transport whose peer already went away
                    pass


class Observer:
    """A bystander with a sniffer: a bumble host on one of the rig's central ports that only
    scans, passively (it sends nothing, not even scan requests), and records every
    advertisement it hears, and a tap on the link that records every ATT notification and
    write, as a sniffer following each connection would. Lists grow from the threads the rig
    runs on; read them after the fact.

    adverts: [(time, address, data)]             every advertising report heard
    frames:  [(time, "notify" | "write", peer address, value)]
    """

    _NOTIFY, _WRITE_REQUEST, _WRITE_COMMAND = 0x1B, 0x12, 0x52

    def __init__(self, rig):
        self.rig = rig
        self.adverts = []
        self.frames = []
        self.device = None

    async def _start(self, index):
        from bumble.device import Device

        from vigil_gateway.bumble_air import open_device

        self.device = await open_device(self.rig.central_transport(index),
                                        "F0:00:00:00:0E:%02X" % (index & 255))
        self.device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self.device.start_scanning(active=False, filter_duplicates=False)
        self.rig.controllers[0].link.sniffers.append(self._on_pdu)
        self.rig._background.append((asyncio.ensure_future(asyncio.sleep(0)), None,
                                     self.device))

    def _on_advertisement(self, advertisement):
        self.adverts.append((time.monotonic(), str(advertisement.address).split("/")[0],
                             bytes(advertisement.data_bytes)))

    def _on_pdu(self, at, source, destination, pdu):
        # L2CAP: length u16, channel u16 (4: ATT), then the ATT PDU: opcode, handle u16, value.
        if len(pdu) < 7 or int.from_bytes(pdu[2:4], "little") != 4:
            return
        opcode = pdu[4]
        if opcode == self._NOTIFY:
            self.frames.append((at, "notify", source, pdu[7:]))
        elif opcode in (self._WRITE_REQUEST, self._WRITE_COMMAND):
            self.frames.append((at, "write", destination, pdu[7:]))

    def of(self, address_prefix=""):
        """The advertisements heard from addresses starting with `address_prefix`."""
        return [a for a in self.adverts if a[1].startswith(address_prefix)]


class HostPort:
    """A TCP port on loopback that one bumble host at a time uses as its HCI (what bumble's
    tcp-server transport does), telling the rig when that host goes away: its process ended,
    and its controller must fall silent, or the wearables would stay connected to nobody."""

    def __init__(self):
        self.source = StreamPacketSource()
        self.sink = self
        self.gone = None
        self._current = None  # the asyncio transport of the host connected now
        self._server = None

    async def listen(self, host="127.0.0.1", number=0):
        """Listen on `host`:`number` (0: any free port); the port number."""
        port = self

        class Connection(asyncio.Protocol):
            def connection_made(self, transport):
                if port._current is not None:
                    port._current.close()  # a new host takes the port over
                port._current = self.transport = transport

            def data_received(self, data):
                port.source.data_received(data)

            def connection_lost(self, exc):
                if port._current is self.transport:
                    port._current = None
                    if port.gone is not None:
                        port.gone()

        self._server = await asyncio.get_running_loop().create_server(
            Connection, host, number)
        return self._server.sockets[0].getsockname()[1]

    def on_packet(self, packet):  # from the controller, to the host
        if self._current is not None:
            self._current.write(packet)

    async def close(self):
        if self._current is not None:
            self._current.close()
        if self._server is not None:
            self._server.close()


def serve_controllers(transports, addresses=None):
    """One RigController per opened bumble transport, all on one RigLink."""
    link = RigLink()
    controllers = []
    for i, transport in enumerate(transports):
        address = addresses[i] if addresses else WEARABLE_ADDRESS % (i >> 8, i & 255)
        controllers.append(RigController("C%d" % i, host_source=transport.source,
                                         host_sink=transport.sink, link=link,
                                         public_address=address))
    return controllers


async def serve(transports):
    """Host one controller per transport name (bumble's: pty:PATH, tcp-server:HOST:PORT, ...)
    on one link, until cancelled: what `vigil ble-air` runs."""
    opened = []
    hosts = {}
    try:
        for i, name in enumerate(transports):
            if name.startswith("tcp-server:"):  # a host that may come and go: see HostPort
                host, number = name[len("tcp-server:"):].rsplit(":", 1)
                hosts[i] = HostPort()
                await hosts[i].listen(host, int(number))
                opened.append(hosts[i])
            else:
                opened.append(await open_transport(name))
        controllers = serve_controllers(opened)
        for i, port in hosts.items():
            port.gone = controllers[i].fall_silent
        await asyncio.get_running_loop().create_future()
    finally:
        for transport in opened:
            await transport.close()


class WearableProcess:
    """A wearable on the 32-bit MicroPython build, on one of a rig's ptys: ble_device.py in a
    process of its own, driven by commands. Blocking calls; from an event loop use
    `await asyncio.to_thread(...)`."""

    def __init__(self, exe, uart, settings, path=".frozen", heapsize=None, timeout=20.0):
        cmd = [str(exe)] + (["-X", "heapsize=%s" % heapsize] if heapsize else [])
        env = dict(os.environ, MICROPYPATH=path, MICROPYBTUART=uart)
        self.proc = subprocess.Popen(cmd + [str(DEVICE_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     text=True, bufsize=1)
        self.events = []   # every JSON line, in order
        self.log = []      # every other line (the firmware's own log)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.proc.stdin.write(json.dumps(settings) + "\n")
        self.proc.stdin.flush()
        self.ready = self.wait("ready", timeout=timeout)

    def _read(self):
        for line in self.proc.stdout:
            with self._changed:
                if line.startswith("{"):
                    self.events.append(json.loads(line))
                else:
                    self.log.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.events.append({"ev": "exit"})
            self._changed.notify_all()

    def wait(self, ev, timeout=10.0, start=0, where=lambda e: True):
        """The first event named `ev` from index `start` on that satisfies `where`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[start:]:
                    if event["ev"] == ev and where(event):
                        return event
                    if event["ev"] == "exit":
                        raise RuntimeError("the MicroPython wearable exited (%s): %s" % (
                            self.proc.poll(), self._stderr_tail()))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no %r from the MicroPython wearable in %.0f s (log: %s)"
                                       % (ev, timeout, self.log[-5:]))
                self._changed.wait(left)

    def _stderr_tail(self):
        try:
            return self.proc.stderr.read()[-2000:]
        except ValueError:
            return ""

    def request(self, command, timeout=10.0):
        """Send one command line; its reply event."""
        with self._changed:
            start = len(self.events)
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.wait(command.split()[0], timeout + 5.0, start)

    def status(self):
        return self.request("status")

    def raise_alarm(self, kind):
        return self.request("raise %d" % kind)["counter"]

    def acked(self, counter, timeout=10.0):
        """The "acked" event of alarm `counter` (its raise -> ack time in "us")."""
        return self.wait("acked", timeout, where=lambda e: e["counter"] == counter)

    def close(self, timeout=5.0):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
