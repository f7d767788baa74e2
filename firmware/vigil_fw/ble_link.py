# The BLE link (protocol/SPEC.md section 10): the wearable is a GATT peripheral, over
# micropython-lib's aioble. Same interface as the MQTT link (see link.py).
#
# Rules:
#   advertise the Vigil service and a rotating identifier (vigil_protocol.ble_id) in
#     manufacturer data, and nothing else: no device id, no name, no scan response, no
#     readable characteristic. Every Vigil wearable's advertisement is the same but for the
#     identifier's 6 bytes
#   rotate the identifier and the BLE address together, every ROTATE_MS less a random part of
#     up to a quarter (so never later, and not on a beat an observer could follow). A
#     connection still up at that moment is closed first: nothing begun under one identifier
#     goes on under the next
#   the address: BLE.config(addr_mode=NRPA) makes a fresh non-resolvable private address
#     (NimBLE); a stack that refuses it (BTstack) gets addr_mode=RANDOM, which makes a fresh
#     random address on each call there. Read back with config("mac"): an address that did
#     not change is logged and counted (rotations go on; the identifier still changes)
#   every frame on the link wears the identifier's mask: notifications the uplink mask,
#     downlink writes the downlink mask (removed before the inbox sees them), so no header
#     links two identifiers. Masks are computed at rotation into buffers made at boot
#   fast (ADV_FAST_US) while urgent() (an alarm other than a duress alarm waits or is open:
#     acks and the responder's actions must get through), slow otherwise; a duress alarm
#     never changes the radio
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
import os
import random

from vigil_protocol._compat import const
from vigil_protocol.ble_id import ID_LEN, MASK_LEN, PRAND_LEN, BleKey, apply

from .clock import sleep_ms, ticks_add, ticks_diff, ticks_ms

SERVICE = "5649474c-0100-4000-8000-766967696c00"
UPLINK = "5649474c-0101-4000-8000-766967696c00"
DOWNLINK = "5649474c-0102-4000-8000-766967696c00"
COMPANY_ID = 0xFFFF  # Bluetooth SIG: reserved for internal use / testing
DEFAULT_MTU = 23
_ADDR_RANDOM = const(1)
_ADDR_NRPA = const(3)
_ID_AT = const(25)  # the identifier's offset in the advertising data (see _advertisement)


def _advertisement():
    """Flags, the 128-bit service UUID and manufacturer data with room for the identifier:
    31 bytes, one legacy advertisement (aioble would push the last field to the scan
    response, which needs a scan request and shows more to whoever sends one)."""
    uuid = bytes.fromhex(SERVICE.replace("-", ""))
    adv = bytearray(b"\x02\x01\x06\x11\x07")
    for i in range(16):
        adv.append(uuid[15 - i])  # little-endian on the air
    adv += bytes((3 + ID_LEN, 0xFF, COMPANY_ID & 0xFF, COMPANY_ID >> 8))
    adv += bytes(ID_LEN)
    return adv


class BleLink:
    name = "ble"
    ADV_FAST_US = 100000
    ADV_SLOW_US = 1000000
    ADV_WINDOW_MS = 2000   # re-decide the advertising rate this often
    ROTATE_MS = 900000     # a new identifier and address at least this often (15 min)
    WRITE_WAIT_MS = 1000
    MTU = 247
    MTU_WAIT_MS = 1000
    MAX_DOWNLINK = 64

    def __init__(self, config, aioble, uuid, urgent=lambda: False, log=print):
        """`aioble` is micropython-lib's module (or a stand-in with its interface), `uuid` is
        bluetooth.UUID, and `urgent()` says whether an alarm other than a duress alarm is
        waiting or open."""
        self.config = config
        self.aioble = aioble
        self.urgent = urgent
        self.log = log
        self.up = False
        self.status = "advertising"
        self.connects = 0
        self.connection = None
        self.rotations = 0
        self.address_stuck = 0   # rotations where the stack kept its address
        self.bad_downlinks = 0   # writes too long to unmask
        self.address = None      # config("mac") after the last rotation
        service = aioble.Service(uuid(SERVICE))
        self._uplink = aioble.Characteristic(service, uuid(UPLINK), notify=True)
        self._downlink = aioble.BufferedCharacteristic(service, uuid(DOWNLINK), write=True,
                                                       capture=True, max_len=self.MAX_DOWNLINK)
        aioble.register_services(service)
        try:
            aioble.config(gap_name="")  # the GAP name characteristic says nothing either
        except (OSError, ValueError):
            pass
        # Allocated once: the advertisement, the masks of the current identifier, the masked
        # copy of an uplink.
        self._key = BleKey(config.key)
        self._adv = _advertisement()
        self._up_mask = bytearray(MASK_LEN)
        self._down_mask = bytearray(MASK_LEN)
        self._out = bytearray(MASK_LEN)
        self._outv = memoryview(self._out)
        self._addr_modes = (_ADDR_NRPA, _ADDR_RANDOM)  # type: tuple
        self._rotate_at = None

    @property
    def identifier(self):
        return bytes(self._adv[_ID_AT:_ID_AT + ID_LEN])

    def _due(self):
        return self._rotate_at is None or ticks_diff(ticks_ms(), self._rotate_at) >= 0

    def _rotate(self):
        """A new identifier, its masks and a new address, together; called while neither
        advertising nor connected."""
        ident = self._key.identifier(os.urandom(PRAND_LEN))
        self._adv[_ID_AT:_ID_AT + ID_LEN] = ident
        self._key.masks(ident, self._up_mask, self._down_mask)
        self._new_address()
        self.rotations += 1
        jitter = (random.getrandbits(16) * (self.ROTATE_MS // 4)) >> 16
        self._rotate_at = ticks_add(ticks_ms(), self.ROTATE_MS - jitter)

    def _new_address(self):
        before = self.address
        for mode in self._addr_modes:
            try:
                self.aioble.config(addr_mode=mode)
            except (OSError, ValueError):
                continue
            self._addr_modes = (mode,)  # the first mode this stack takes, from now on
            break
        try:
            self.address = self.aioble.config("mac")
        except (OSError, ValueError):
            self.address = None
        if self.address is None or self.address == before:
            self.address_stuck += 1
            self.log("ble: the address did not change at rotation %d" % (self.rotations + 1))

    async def run(self, inbox, woke=None):
        while True:
            if self._due():
                self._rotate()
            interval = self.ADV_FAST_US if self.urgent() else self.ADV_SLOW_US
            window = min(self.ADV_WINDOW_MS, max(1, ticks_diff(self._rotate_at, ticks_ms())))
            try:
                connection = await self.aioble.advertise(
                    interval, adv_data=self._adv, resp_data=b"", timeout_ms=window)
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
            if self._due():
                # Rotation: this connection was made under the old identifier; end it.
                self.up = False
                try:
                    await connection.disconnect(timeout_ms=self.WRITE_WAIT_MS)
                except Exception as exc:  # noqa: BLE001 - already gone, or timed out
                    self.log("ble: disconnect at rotation (%r)" % (exc,))
                return
            try:
                written = await self._downlink.written(timeout_ms=self.WRITE_WAIT_MS)
            except asyncio.TimeoutError:
                continue
            if written:
                data = written[1]
                if len(data) > MASK_LEN:
                    self.bad_downlinks += 1
                    self.log("ble: downlink of %d bytes refused" % len(data))
                    continue
                frame = bytearray(len(data))
                apply(self._down_mask, data, frame)
                inbox.put(frame, self.name)

    async def send(self, frame):
        connection = self.connection
        if not self.up or connection is None or not connection.is_connected():
            return False  # (aioble's notify takes a dropped connection's handle, None)
        if len(frame) > (connection.mtu or DEFAULT_MTU) - 3:
            return False  # needs an MTU exchange this central has not made
        try:
            n = apply(self._up_mask, frame, self._out)
            self._uplink.notify(connection, self._outv[:n])
            return True
        except (OSError, ValueError) as exc:
            self.log("ble: notify failed (%r)" % (exc,))
            return False
