"""The BLE link: the gateway is a bleak central for the wearables on its allow-list
(protocol/SPEC.md section 10). Frames go into the same pipeline as MQTT's.

Rules:
  scan for the Vigil service; a wearable is known by the rotating identifier in its
    manufacturer data (6 bytes), resolved against the allow-list's keys (ble_resolver.py), or,
    from firmware that predates it, by the device id in clear (4 bytes); it is connected only
    if it is on the allow-list and fewer than max_connections are up
  the advertising callback only looks identifiers up; a new one goes to the resolver task, so
    a large registry's HMACs never run inside bleak's callback. An identifier no key resolves
    is logged once, counted at each advertisement, and never connected
  on connect: request the MTU (the backend does, where the stack lets it), subscribe to the
    uplink characteristic; every notification becomes a pipeline Message on the device's
    uplink topic, so the pipeline's binding check rejects a frame whose device id is not the
    resolved one (device_mismatch)
  a wearable that advertised a rotating identifier masks every frame on the link with the
    masks of that identifier (vigil_protocol.ble_id): notifications are unmasked here, so the
    pipeline sees the bytes MQTT carries and its replay window merges the two copies; a frame
    that does not unmask to its device's header is logged, counted and dropped. Downlinks are
    masked before they are written
  downlinks (acks, responder actions) are written with response to the downlink
    characteristic of a connected wearable; the MQTT path carries them too
  one connection attempt at a time: controllers (and BlueZ, with "InProgress") refuse a second
    LE Create Connection while one is pending
  a dropped connection is retried with backoff (1 s doubling to 30 s); the wearable's own
    retransmission then brings any unacknowledged alarm again
  scanner watchdog: no advertisement at all for scan_stall_s while scanning, or a scanner
    error (BlueZ "InProgress" and the like), restarts the scanner; both are counted
  callbacks from bleak only hand work over (put a message, set an event)
"""
import asyncio
import logging
import random
import time

from vigil_protocol.ble_id import ID_LEN, MASK_LEN, apply

from . import logs
from .ble_resolver import Resolver
from .pipeline import Message

SERVICE = "5649474c-0100-4000-8000-766967696c00"
UPLINK = "5649474c-0101-4000-8000-766967696c00"
DOWNLINK = "5649474c-0102-4000-8000-766967696c00"
COMPANY_ID = 0xFFFF
LEGACY_ID_LEN = 4  # a device id in clear: firmware from before the rotating identifier

log = logging.getLogger("vigil_gateway.ble")


class BleStatus:
    """What health and metrics show of the BLE link."""

    def __init__(self):
        self.scanning = False
        self.connected = set()
        self.last_advert = None        # time.monotonic() of the last advertisement seen
        self.adverts = 0
        self.scanner_restarts = 0
        self.scanner_errors = 0
        self.connect_failures = 0
        self.ignored = 0               # advertisements from devices not on the allow-list
        self.resolved = 0              # advertisements whose rotating identifier resolved
        self.unresolved = 0            # ... that no allowed device's key resolves
        self.legacy = 0                # advertisements with a device id in clear
        self.bad_frames = 0            # masked frames that did not unmask to their header
        self.superseded = 0            # connection attempts dropped for a newer identifier


class BleCentral:
    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 30.0

    def __init__(self, topics, put_message, allowed, scanner_factory, client_factory,
                 max_connections=8, scan_stall_s=60.0, connect_timeout_s=10.0, key_of=None):
        """`allowed()` returns the set of device ids to serve (the allow-list);
        `scanner_factory(callback)` makes a bleak BleakScanner and
        `client_factory(ble_device, disconnected_callback)` a BleakClient (tests pass ones
        built on the bumble backend); `key_of(device_id)` is a device's DeviceKey (None: no
        rotating identifier can be resolved)."""
        self.topics = topics
        self.put_message = put_message
        self.allowed = allowed
        self.scanner_factory = scanner_factory
        self.client_factory = client_factory
        self.max_connections = max_connections
        self.scan_stall_s = scan_stall_s
        self.connect_timeout_s = connect_timeout_s
        self.status = BleStatus()
        self._clients = {}        # device_id -> connected BleakClient
        self._connecting = set()  # device ids with a connection task running
        self._attempts = {}       # device_id -> (identifier, task) until connected
        self._superseded = set()  # attempts given up for the wearable's newer identifier
        self._retry_at = {}       # device_id -> (monotonic time, delay)
        self._tasks = set()
        self._connect_lock = asyncio.Lock()
        self.resolver = Resolver(key_of or (lambda device_id: None))
        self._masks = {}          # device_id -> (up, down) masks of its connection
        self._pending = {}        # identifier -> ble_device: for the resolver task
        self._to_resolve = asyncio.Event()
        self._said_unresolved = set()

    # -- scanning ---------------------------------------------------------------------------

    def _on_advertisement(self, device, adv):
        self.status.adverts += 1
        self.status.last_advert = time.monotonic()
        data = adv.manufacturer_data.get(COMPANY_ID)
        if not data or SERVICE not in adv.service_uuids:
            return
        if len(data) == LEGACY_ID_LEN:
            self.status.legacy += 1
            self._connect(int.from_bytes(data, "big"), device, None)
            return
        identifier = bytes(data)
        allowed = self.allowed()
        judged, device_id = self.resolver.known(identifier, allowed)
        if not judged:
            self._pending[identifier] = device  # the resolver task tries the keys
            self._to_resolve.set()
        elif device_id is None:
            self.status.unresolved += 1
        else:
            self.status.resolved += 1
            self._connect(device_id, device, identifier, allowed)

    async def _resolve_pending(self):
        """Resolve the identifiers the advertising callback has not seen before."""
        while True:
            await self._to_resolve.wait()
            self._to_resolve.clear()
            pending, self._pending = self._pending, {}
            allowed = self.allowed()
            for identifier, device in pending.items():
                if len(identifier) == ID_LEN:
                    device_id = self.resolver.resolve(identifier, allowed)
                else:
                    device_id = None
                if device_id is None:
                    self.status.unresolved += 1
                    if identifier not in self._said_unresolved:
                        if len(self._said_unresolved) > 4096:
                            self._said_unresolved.clear()
                        self._said_unresolved.add(identifier)
                        logs.event(log, logging.INFO, "ble_unresolved",
                                   identifier=identifier.hex()[:2 * 8], length=len(identifier))
                    continue
                self.status.resolved += 1
                self._connect(device_id, device, identifier, allowed)
                await asyncio.sleep(0)  # a long batch leaves the loop breathing

    def _connect(self, device_id, device, identifier, allowed=None):
        if device_id not in (self.allowed() if allowed is None else allowed):
            self.status.ignored += 1
            return
        if device_id in self._connecting and device_id not in self._clients:
            attempt = self._attempts.get(device_id)
            if attempt is not None and attempt[0] != identifier and identifier is not None:
                # The wearable rotated while we were connecting to its old address, which
                # will never answer again: give that attempt up now, not at its timeout
                # (it holds the one connection slot every other wearable waits for).
                self._superseded.add(device_id)
                self.status.superseded += 1
                attempt[1].cancel()
            return
        if device_id in self._clients:
            return
        if len(self._clients) + len(self._connecting) >= self.max_connections:
            return
        retry = self._retry_at.get(device_id)
        if retry and time.monotonic() < retry[0]:
            return
        masks = None
        if identifier is not None:
            ble = self.resolver.ble_key(device_id)
            if ble is None:
                return
            masks = ble.masks(identifier)
        self._connecting.add(device_id)
        task = asyncio.ensure_future(self._serve(device_id, device, masks))
        self._attempts[device_id] = (identifier, task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self):
        """Scan forever, restarting the scanner when it stalls or fails."""
        resolving = asyncio.ensure_future(self._resolve_pending())
        try:
            await self._scan()
        finally:
            resolving.cancel()

    async def _scan(self):
        while True:
            scanner = self.scanner_factory(self._on_advertisement)
            try:
                await scanner.start()
                self.status.scanning = True
                started = time.monotonic()
                while True:
                    await asyncio.sleep(min(1.0, self.scan_stall_s / 4))
                    last = max(self.status.last_advert or 0, started)
                    if time.monotonic() - last > self.scan_stall_s:
                        self.status.scanner_restarts += 1
                        logs.event(log, logging.WARNING, "ble_scanner_stalled",
                                   silent_s=round(time.monotonic() - last, 1))
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # BleakError, BlueZ "InProgress", a dead adapter ...
                self.status.scanner_errors += 1
                logs.event(log, logging.WARNING, "ble_scanner_error", error=repr(exc)[:200])
                await asyncio.sleep(self.RETRY_FIRST_S)
            finally:
                self.status.scanning = False
                try:
                    await scanner.stop()
                except Exception:  # stopping a scanner that failed to start
                    pass

    # -- connections --------------------------------------------------------------------------

    def _unmask(self, device_id, masks, data):
        """The frame a masked notification carries, or None (logged and counted) when it does
        not unmask to a header of this device: a wrong identifier, a damaged frame."""
        if len(data) > MASK_LEN or len(data) < 9:
            reason = "length"
        else:
            frame = bytearray(len(data))
            apply(masks[0], data, frame)
            if frame[0] >> 4 in (1, 2) and int.from_bytes(frame[1:5], "big") == device_id:
                return bytes(frame)
            reason = "header"
        self.status.bad_frames += 1
        logs.event(log, logging.WARNING, "ble_bad_frame", device="%08x" % device_id,
                   length=len(data), reason=reason)
        return None

    async def _serve(self, device_id, ble_device, masks=None):
        disconnected = asyncio.Event()
        client = self.client_factory(ble_device, lambda _client=None: disconnected.set())
        try:
            async with self._connect_lock:
                await asyncio.wait_for(client.connect(), self.connect_timeout_s)
            topic = self.topics.up(device_id)

            def on_notify(_characteristic, data):
                frame = bytes(data) if masks is None else self._unmask(device_id, masks, data)
                if frame is not None:
                    self.put_message(Message(topic, frame, token=("ble", device_id)))

            await client.start_notify(UPLINK, on_notify)
            self._masks[device_id] = masks
            self._clients[device_id] = client
            self.status.connected.add(device_id)
            self._retry_at.pop(device_id, None)
            logs.event(log, logging.INFO, "ble_connected", device="%08x" % device_id,
                       mtu=client.mtu_size, rotating=masks is not None)
            await disconnected.wait()
            logs.event(log, logging.INFO, "ble_disconnected", device="%08x" % device_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.status.connect_failures += 1
            logs.event(log, logging.WARNING, "ble_connect_failed", device="%08x" % device_id,
                       error=repr(exc)[:200])
        finally:
            self._clients.pop(device_id, None)
            self._masks.pop(device_id, None)
            self.status.connected.discard(device_id)
            self._connecting.discard(device_id)
            self._attempts.pop(device_id, None)
            if device_id in self._superseded:  # connect to its new address at once
                self._superseded.discard(device_id)
                self._retry_at.pop(device_id, None)
                logs.event(log, logging.INFO, "ble_connect_superseded",
                           device="%08x" % device_id)
            else:
                delay = self._retry_at.get(device_id, (0, self.RETRY_FIRST_S / 2))[1] * 2
                delay = min(delay, self.RETRY_MAX_S)
                self._retry_at[device_id] = (
                    time.monotonic() + delay * random.uniform(0.8, 1.2), delay)
            try:
                await client.disconnect()
            except Exception:  # already gone
                pass

    async def send(self, device_id, frame):
        """Write a downlink to a connected wearable; False if it is not connected here."""
        client = self._clients.get(device_id)
        if client is None:
            return False
        masks = self._masks.get(device_id)
        try:
            if masks is not None:
                masked = bytearray(len(frame))
                apply(masks[1], frame, masked)
                frame = bytes(masked)
            await client.write_gatt_char(DOWNLINK, frame, response=True)
            return True
        except Exception as exc:
            logs.event(log, logging.WARNING, "ble_write_failed", device="%08x" % device_id,
                       error=repr(exc)[:200])
            return False

    async def close(self):
        for task in list(self._tasks):
            task.cancel()
        for client in list(self._clients.values()):
            try:
                await client.disconnect()
            except Exception:  # already gone
                pass
