# BLE privacy on CPython (protocol/SPEC.md section 10): the firmware's own BLE link over the
# aioble adapter on one emulated bumble controller, the gateway's real bleak central on another.
# The wearable advertises a rotating identifier, never its device id; the central resolves it
# with the device's key only, and the frames on the link are masked.
import asyncio
import struct

import vigil_protocol as p
from test_ble_air import KEY, Config, SimBoard, Wearable, ble_link, until
from vigil_gateway.ble_central import COMPANY_ID, SERVICE, BleCentral
from vigil_gateway.bleak_bumble import factories as bumble_factories
from vigil_gateway.bumble_air import Air
from vigil_gateway.topics import Topics
from vigil_protocol.ble_id import BleKey

DEVICE = 0x00C0FFEE
OTHER = 0x0000BEEF
OTHER_KEY = bytes(range(0x60, 0x80))


async def wearable(air, flash_dir, address="F1:00:00:00:00:01", device="00c0ffee", key=KEY):
    """The firmware's Wearable with its BLE link over aioble on bumble."""
    from vigil_tools.aioble_bumble import Aioble

    config = Config({"version": 1, "device_id": device, "key": key.hex(),
                     "mqtt": {"host": "unused", "username": device, "password": "x"}})
    w = Wearable(SimBoard(str(flash_dir)), config, [], log=lambda m: None)
    aioble = Aioble(await air.device(address))
    link = ble_link.BleLink(config, aioble, aioble.UUID, urgent=w.urgent, log=lambda m: None)
    w.links.append(link)
    return w, None, link


async def central_for(air, keys, messages, **kwargs):
    device = await air.device("F0:00:00:00:00:01")
    keys = {d: p.DeviceKey(k) for d, k in keys.items()}
    return BleCentral(Topics("vigil"), messages.put_nowait, lambda: set(keys),
                      *bumble_factories(device), key_of=keys.get, **kwargs)


async def next_of(messages, name, timeout=5):
    while True:
        message = await asyncio.wait_for(messages.get(), timeout)
        if p.decode(message.payload, KEY, p.UP).NAME == name:
            return message


def manufacturer(adv_data):
    i = 0
    while i + 1 < len(adv_data):
        length, kind = adv_data[i], adv_data[i + 1]
        if kind == 0xFF:
            return bytes(adv_data[i + 2:i + 1 + length])
        i += 1 + length
    return None


def test_the_advertisement_carries_a_resolvable_identifier_and_no_device_id(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path)
        task = asyncio.create_task(w.run())
        assert await until(lambda: link.rotations == 1)
        data = bytes(link._adv)
        assert len(data) == 31
        company_and_id = manufacturer(data)
        assert struct.unpack("<H", company_and_id[:2])[0] == COMPANY_ID
        identifier = company_and_id[2:]
        assert identifier == link.identifier and len(identifier) == 6
        assert BleKey(KEY).resolves(identifier)
        assert not BleKey(bytes(32)).resolves(identifier)
        assert struct.pack(">I", DEVICE) not in data and b"Vigil" not in data
        task.cancel()
        await air.close()

    asyncio.run(scenario())


def test_a_resolved_wearable_is_served_over_masked_frames_and_others_are_counted(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path / "a")
        other, _, _ = await wearable(air, tmp_path / "b", address="F1:00:00:00:00:02",
                                     device="0000beef", key=OTHER_KEY)
        messages = asyncio.Queue()
        central = await central_for(air, {DEVICE: KEY}, messages)
        tasks = [asyncio.create_task(t) for t in (w.run(), other.run(), central.run())]
        assert await until(lambda: DEVICE in central.status.connected)
        # The other wearable's identifier resolves under no key here: heard, counted, left.
        assert await until(lambda: central.status.unresolved > 0)
        assert central.status.connected == {DEVICE} and central.status.legacy == 0

        sniffed = []
        real_notify = link._uplink.notify
        link._uplink.notify = lambda c, data: (sniffed.append(bytes(data)),
                                               real_notify(c, data))[1]
        counter = w.raise_alarm(p.DURESS)
        message = await next_of(messages, "alarm")
        frame = p.decode(message.payload, KEY, p.UP)
        assert (frame.kind, frame.counter, message.token) == (p.DURESS, counter,
                                                              ("ble", DEVICE))
        # On the air the header is not the frame's: no device id, no counter in clear.
        on_air = [s for s in sniffed if len(s) == len(message.payload)][-1]
        assert on_air != message.payload and on_air[1:5] != message.payload[1:5]
        assert struct.pack(">I", DEVICE) not in on_air
        # The ack goes back masked and reaches the outbox.
        ack = p.encode(p.Ack(DEVICE, 1, counter, p.RECEIVED), KEY)
        assert await central.send(DEVICE, ack)
        assert await until(lambda: len(w.outbox) == 0)
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_rotation_gives_a_new_identifier_and_address_and_the_central_follows(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path)
        link.ROTATE_MS = 4000  # several slow advertising intervals: time to connect
        messages = asyncio.Queue()
        central = await central_for(air, {DEVICE: KEY}, messages)
        central.RETRY_FIRST_S = 0.1
        tasks = [asyncio.create_task(t) for t in (w.run(), central.run())]
        assert await until(lambda: DEVICE in central.status.connected)
        seen = [(link.identifier, link.address)]
        assert await until(lambda: link.rotations >= 2, 15)
        assert await until(lambda: link.up and DEVICE in central.status.connected, 10)
        seen.append((link.identifier, link.address))
        assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
        assert link.connects >= 2 and link.address_stuck == 0
        counter = w.raise_alarm(p.SOS)  # the link still carries alarms after rotations
        frame = p.decode((await next_of(messages, "alarm")).payload, KEY, p.UP)
        assert frame.counter == counter
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_a_frame_that_does_not_unmask_is_dropped_and_counted(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path)
        messages = asyncio.Queue()
        central = await central_for(air, {DEVICE: KEY}, messages)
        tasks = [asyncio.create_task(t) for t in (w.run(), central.run())]
        assert await until(lambda: link.up and DEVICE in central.status.connected)
        # A notification masked with another identifier's mask (or damaged on the way).
        link._up_mask[1] ^= 0xFF
        w.raise_alarm(p.SOS)
        assert await until(lambda: central.status.bad_frames >= 1)
        assert messages.empty() or all(
            p.peek(m.payload).device_id == DEVICE for m in list(messages._queue))
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_a_wearable_advertising_its_device_id_in_clear_is_still_served(tmp_path):
    """Firmware from before the rotating identifier: 4 bytes of device id, frames unmasked."""
    from vigil_tools.aioble_bumble import Aioble

    async def scenario():
        air = Air()
        aioble = Aioble(await air.device("F1:00:00:00:00:07"))
        messages = asyncio.Queue()
        central = await central_for(air, {DEVICE: KEY}, messages)
        task = asyncio.create_task(central.run())
        service = aioble.Service(SERVICE)
        uplink = aioble.Characteristic(service, "5649474c-0101-4000-8000-766967696c00",
                                       notify=True)
        aioble.BufferedCharacteristic(service, "5649474c-0102-4000-8000-766967696c00",
                                      write=True, capture=True, max_len=64)
        aioble.register_services(service)
        connection = await aioble.advertise(100000, services=[SERVICE],
                                            manufacturer=(COMPANY_ID, struct.pack(">I", DEVICE)),
                                            timeout_ms=5000)
        assert await until(lambda: DEVICE in central.status.connected)
        await asyncio.sleep(0.2)  # the central subscribes
        frame = p.encode(p.Alarm(DEVICE, 5, p.SOS), KEY)
        uplink.notify(connection, frame)
        message = await asyncio.wait_for(messages.get(), 5)
        assert message.payload == frame and central.status.legacy >= 1
        await central.close()
        task.cancel()
        await air.close()

    asyncio.run(scenario())


def test_a_connection_attempt_to_a_rotated_address_is_given_up_for_the_new_one():
    """The wearable rotated while the central was connecting to its old address: the attempt
    is dropped at once (it holds the one connection slot) and the new address tried without
    backoff."""

    async def scenario():
        started, cancelled = [], []

        class Hanging:
            def __init__(self, device, gone):
                started.append(device)

            async def connect(self):
                try:
                    await asyncio.Event().wait()  # the old address never answers
                except asyncio.CancelledError:
                    cancelled.append(1)
                    raise

            async def disconnect(self):
                pass

        key = p.DeviceKey(KEY)
        central = BleCentral(Topics("vigil"), lambda m: None, lambda: {DEVICE}, None,
                             Hanging, key_of={DEVICE: key}.get)
        old, new = BleKey(key).identifier(b"\x01\x02\x03"), BleKey(key).identifier(b"\x04\x05\x06")
        central._connect(DEVICE, "old address", old)
        await asyncio.sleep(0.05)
        central._connect(DEVICE, "old address", old)  # the same identifier again: nothing
        await asyncio.sleep(0.05)
        assert started == ["old address"] and cancelled == []
        central._connect(DEVICE, "new address", new)
        assert await until(lambda: cancelled == [1] and DEVICE not in central._connecting)
        assert central.status.superseded == 1 and DEVICE not in central._retry_at
        central._connect(DEVICE, "new address", new)
        await asyncio.sleep(0.05)
        assert started == ["old address", "new address"]
        await central.close()

    asyncio.run(scenario())


def test_after_an_abandoned_connection_the_central_can_connect_again(tmp_path):
    """bumble's emulated controller ignored LE Create Connection Cancel, so every connection
    after one that timed out was refused ("command disallowed"); AirController ends it."""
    from bleak import BleakClient
    from bleak.backends.device import BLEDevice
    from bumble.hci import Address
    from vigil_gateway.bleak_bumble import BumbleClient

    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path)
        central = await air.device("F0:00:00:00:00:01")
        task = asyncio.create_task(w.run())
        nobody = BLEDevice("C0:00:00:00:00:99", None,
                           Address("C0:00:00:00:00:99", Address.RANDOM_DEVICE_ADDRESS))
        client = BleakClient(nobody, backend=BumbleClient, bumble_device=central, timeout=0.3)
        try:
            await client.connect()
            raise AssertionError("connected to nobody")
        except Exception as exc:  # BleakError: timed out
            assert "timed out" in str(exc)
        assert await until(lambda: link.address is not None)
        address = Address(":".join("%02X" % b for b in link.address[1]),
                          Address.RANDOM_DEVICE_ADDRESS)
        target = BLEDevice(str(address), None, address)
        async with BleakClient(target, backend=BumbleClient, bumble_device=central,
                               timeout=5) as client:
            assert client.is_connected
        task.cancel()
        await air.close()

    asyncio.run(scenario())
