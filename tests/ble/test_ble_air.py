# The BLE path without a radio: the firmware's own BLE link (CPython, over the aioble adapter)
# serves the real GATT profile on one emulated bumble controller; real bleak code (BleakScanner,
# BleakClient with the bumble backend) is the central on another. No BlueZ, no kernel radio.
import asyncio
import sys
from pathlib import Path

import pytest
from bleak import BleakClient, BleakScanner

import vigil_protocol as p
from vigil_protocol.ble_id import BleKey, apply
from vigil_tools.aioble_bumble import Aioble
from vigil_gateway.bleak_bumble import BumbleClient, BumbleScanner
from vigil_gateway.bumble_air import Air

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))

from vigil_fw import ble_link  # noqa: E402
from vigil_fw.app import Wearable  # noqa: E402
from vigil_fw.config import Config  # noqa: E402
from vigil_fw.hal_sim import SimBoard  # noqa: E402,F401  (used by other BLE tests)

KEY = bytes(range(0x30, 0x50))
DEVICE = "00c0ffee"


async def wearable(air, flash_dir, address="F1:00:00:00:00:01", device=DEVICE, key=KEY):
    config = Config({"version": 1, "device_id": device, "key": key.hex(),
                     "mqtt": {"host": "unused", "username": device, "password": "x"}})
    board = SimBoard(str(flash_dir))
    w = Wearable(board, config, [], log=lambda m: None)
    aioble = Aioble(await air.device(address))
    link = ble_link.BleLink(config, aioble, aioble.UUID, urgent=w.urgent,
                            log=lambda m: None)
    w.links.append(link)
    return w, board, link


async def until(predicate, timeout=10.0):
    """Poll `predicate` on the event loop until it holds or `timeout` seconds pass."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def stopped(task, timeout=30.0):
    """Wait for a stopped gateway's run() `task` to end. It may take a while on a loaded
    machine (the MQTT link's LINK_STOP_S for publishes in flight, then every task cancelled);
    if it does not end, the failure shows where every task of the loop is waiting."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except asyncio.TimeoutError:
        import io
        where = io.StringIO()
        for other in asyncio.all_tasks():
            other.print_stack(limit=6, file=where)
        task.cancel()
        raise AssertionError("the gateway did not stop in %.0f s:\n%s"
                             % (timeout, where.getvalue()[-6000:])) from None


async def next_alarm(frames, timeout=5):
    """The next alarm frame from a queue of uplink bytes (check-ins flow in between)."""
    while True:
        data = await asyncio.wait_for(frames.get(), timeout)
        if p.decode(data, KEY, p.UP).NAME == "alarm":
            return data


async def find(central, key, timeout=5):
    """The first wearable heard whose rotating identifier resolves under `key`, with the
    identifier: (device, adv, identifier)."""
    found = asyncio.get_running_loop().create_future()
    ble = BleKey(key)

    def seen(device, adv):
        data = adv.manufacturer_data.get(ble_link.COMPANY_ID)
        if data and ble.resolves(data) and not found.done():
            found.set_result((device, adv, bytes(data)))

    scanner = BleakScanner(seen, [ble_link.SERVICE], backend=BumbleScanner,
                           bumble_device=central)
    await scanner.start()
    try:
        return await asyncio.wait_for(found, timeout)
    finally:
        await scanner.stop()


@pytest.mark.parametrize("mtu", [23, 247])
def test_scan_connect_alarm_notify_and_ack_by_write(tmp_path, mtu):
    async def scenario():
        air = Air()
        w, board, link = await wearable(air, tmp_path)
        central = await air.device("F0:00:00:00:00:01")
        task = asyncio.create_task(w.run())
        device, adv, identifier = await find(central, KEY)
        # (No name, no device id: the service and an identifier only its key resolves.)
        assert ble_link.SERVICE in adv.service_uuids and adv.local_name is None
        up, down = BleKey(KEY).masks(identifier)

        def unmasked(mask, data):
            out = bytearray(len(data))
            apply(mask, data, out)
            return bytes(out)

        notes = asyncio.Queue()
        async with BleakClient(device, backend=BumbleClient, bumble_device=central,
                               mtu=mtu) as client:
            assert client.mtu_size == mtu
            await client.start_notify(ble_link.UPLINK,
                                      lambda c, d: notes.put_nowait(unmasked(up, d)))
            # Nothing readable before the key is proved: no identity characteristic.
            readable = [c.uuid for s in client.services for c in s.characteristics
                        if "read" in c.properties and s.uuid == ble_link.SERVICE]
            assert readable == []
            await asyncio.sleep(0.1)
            counter = w.raise_alarm(p.SOS)
            frame = p.decode(await next_alarm(notes), KEY, p.UP)
            assert (frame.kind, frame.counter) == (p.SOS, counter)
            ack = p.encode(p.Ack(frame.device_id, 1, frame.counter, p.RECEIVED), KEY)
            await client.write_gatt_char(ble_link.DOWNLINK, unmasked(down, ack),
                                         response=True)
            for _ in range(100):
                if len(w.outbox) == 0:
                    break
                await asyncio.sleep(0.02)
            assert len(w.outbox) == 0
            # A v2 check-in is 20 bytes, as an alarm: it fits the default MTU. A longer frame
            # (an alarm with a location: 32 bytes) rides only on a link whose MTU was raised.
            assert await w.send_checkin(70, False) is True
            located = p.encode(p.Alarm(frame.device_id, 10 ** 6, p.FALL,
                                       location=(515000000, -1200000, 8)), KEY, 2)
            assert len(located) == 32
            assert await link.send(located) is (mtu > 23)
        task.cancel()
        await air.close()

    asyncio.run(scenario())
