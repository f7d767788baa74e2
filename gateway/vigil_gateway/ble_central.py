"""The BLE link: the gateway is a bleak central for the wearables on its allow-list
(protocol/SPEC.md section 10). Frames go into the same pipeline as MQTT's.

Rules:
  scan for the Vigil service; a wearable is known by the device id in its manufacturer data,
    and connected only if it is on the allow-list and fewer than max_connections are up
  on connect: request the MTU (the backend does, where the stack lets it), subscribe to the
    uplink characteristic; every notification becomes a pipeline Message on the device's
    uplink topic, so the pipeline's binding check rejects a frame whose device id is not the
    advertised one (device_mismatch)
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

from . import logs
from .pipeline import Message

SERVICE = "5649474c-0100-4000-8000-766967696c00"
UPLINK = "5649474c-0101-4000-8000-766967696c00"
DOWNLINK = "5649474c-0102-4000-8000-766967696c00"
COMPANY_ID = 0xFFFF

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


class BleCentral:
    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 30.0

    def __init__(self, topics, put_message, allowed, scanner_factory, client_factory,
                 max_connections=8, scan_stall_s=60.0, connect_timeout_s=10.0):
        """`allowed()` returns the set of device ids to serve (the allow-list);
        `scanner_factory(callback)` makes a bleak BleakScanner and
        `client_factory(ble_device, disconnected_callback)` a BleakClient (tests pass ones
        built on the bumble backend)."""
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
        self._retry_at = {}       # device_id -> (monotonic time, delay)
        self._tasks = set()
        self._connect_lock = asyncio.Lock()

    # -- scanning ---------------------------------------------------------------------------

    def _on_advertisement(self, device, adv):
        self.status.adverts += 1
        self.status.last_advert = time.monotonic()
        data = adv.manufacturer_data.get(COMPANY_ID)
        if not data or len(data) != 4 or SERVICE not in adv.service_uuids:
            return
        device_id = int.from_bytes(data, "big")
        if device_id not in self.allowed():
            self.status.ignored += 1
            return
        if device_id in self._clients or device_id in self._connecting:
            return
        if len(self._clients) + len(self._connecting) >= self.max_connections:
            return
        retry = self._retry_at.get(device_id)
        if retry and time.monotonic() < retry[0]:
            return
        self._connecting.add(device_id)
        task = asyncio.ensure_future(self._serve(device_id, device))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self):
        """Scan forever, restarting the scanner when it stalls or fails."""
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

    async def _serve(self, device_id, ble_device):
        disconnected = asyncio.Event()
        client = self.client_factory(ble_device, lambda _client=None: disconnected.set())
        try:
            async with self._connect_lock:
                await asyncio.wait_for(client.connect(), self.connect_timeout_s)
            topic = self.topics.up(device_id)

            def on_notify(_characteristic, data):
                self.put_message(Message(topic, bytes(data), token=("ble", device_id)))

            await client.start_notify(UPLINK, on_notify)
            self._clients[device_id] = client
            self.status.connected.add(device_id)
            self._retry_at.pop(device_id, None)
            logs.event(log, logging.INFO, "ble_connected", device="%08x" % device_id,
                       mtu=client.mtu_size)
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
            self.status.connected.discard(device_id)
            self._connecting.discard(device_id)
            delay = self._retry_at.get(device_id, (0, self.RETRY_FIRST_S / 2))[1] * 2
            delay = min(delay, self.RETRY_MAX_S)
            self._retry_at[device_id] = (time.monotonic() + delay * random.uniform(0.8, 1.2),
                                         delay)
            try:
                await client.disconnect()
            except Exception:  # already gone
                pass

    async def send(self, device_id, frame):
        """Write a downlink to a connected wearable; False if it is not connected here."""
        client = self._clients.get(device_id)
        if client is None:
            return False
        try:
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
