# The gateway's BLE central (real bleak, bumble backend) against simulated wearables running the
# firmware's own BLE link over bumble: no radio, a real (emulated) Bluetooth host stack.
import asyncio

from bleak import BleakScanner

import vigil_protocol as p
from test_ble_air import KEY, until, wearable
from vigil_gateway.ble_central import BleCentral
from vigil_gateway.topics import Topics
from vigil_gateway.bleak_bumble import BumbleScanner, factories as bumble_factories
from vigil_gateway.bumble_air import Air


OTHER_KEY = bytes(range(0x60, 0x80))
KEYS = {0x00C0FFEE: p.DeviceKey(KEY), 0x0000BEEF: p.DeviceKey(OTHER_KEY)}


async def central_for(air, allowed, messages, **kwargs):
    """A central serving `allowed`, resolving rotating identifiers with the devices' keys."""
    device = await air.device("F0:00:00:00:00:01")
    central = BleCentral(
        Topics("vigil"), messages.put_nowait, lambda: allowed,
        *bumble_factories(device), key_of=KEYS.get, **kwargs)
    return central


async def next_message(messages, timeout=5):
    """The next pipeline message carrying an alarm (check-ins flow in between)."""
    while True:
        message = await asyncio.wait_for(messages.get(), timeout)
        if p.decode(message.payload, KEY, p.UP).NAME == "alarm":
            return message


def test_allowed_wearable_is_connected_and_its_alarm_arrives_as_a_message(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path / "a")
        other, _, _ = await wearable(air, tmp_path / "b", address="F1:00:00:00:00:02",
                                     device="0000beef", key=OTHER_KEY)
        messages = asyncio.Queue()
        central = await central_for(air, {0x00C0FFEE}, messages)
        tasks = [asyncio.create_task(t) for t in (w.run(), other.run(), central.run())]
        assert await until(lambda: 0x00C0FFEE in central.status.connected)
        counter = w.raise_alarm(p.DURESS)
        message = await next_message(messages)
        assert message.topic == "vigil/up/00c0ffee" and message.token == ("ble", 0x00C0FFEE)
        frame = p.decode(message.payload, KEY, p.UP)
        assert (frame.kind, frame.counter) == (p.DURESS, counter)
        # The ack goes back by write (masked by the central); the wearable stops
        # retransmitting.
        ack = p.encode(p.Ack(frame.device_id, 1, counter, p.RECEIVED), KEY)
        assert await central.send(0x00C0FFEE, ack)
        assert await until(lambda: len(w.outbox) == 0)
        # The other wearable is not on the allow-list: its identifier resolves under none of
        # the allowed keys; heard, counted, never connected.
        assert central.status.unresolved > 0 and central.status.connected == {0x00C0FFEE}
        assert not await central.send(0x0000BEEF, ack)
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_link_drop_mid_alarm_reconnects_and_the_alarm_comes_again(tmp_path):
    async def scenario():
        air = Air()
        w, _, link = await wearable(air, tmp_path)
        messages = asyncio.Queue()
        central = await central_for(air, {0x00C0FFEE}, messages)
        central.RETRY_FIRST_S = 0.2
        tasks = [asyncio.create_task(t) for t in (w.run(), central.run())]
        assert await until(lambda: link.up)
        w.raise_alarm(p.SOS)
        first = await next_message(messages)
        await central._clients[0x00C0FFEE].disconnect()  # the link drops before any ack
        assert await until(lambda: link.connects == 2, 15)
        again = await next_message(messages, 15)  # the wearable's retransmission
        assert again.payload == first.payload
        assert central.status.connect_failures == 0
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_at_most_max_connections_wearables_are_held(tmp_path):
    async def scenario():
        air = Air()
        a, _, _ = await wearable(air, tmp_path / "a")
        b, _, _ = await wearable(air, tmp_path / "b", address="F1:00:00:00:00:02",
                                 device="0000beef", key=OTHER_KEY)
        messages = asyncio.Queue()
        central = await central_for(air, {0x00C0FFEE, 0x0000BEEF}, messages,
                                    max_connections=1)
        tasks = [asyncio.create_task(t) for t in (a.run(), b.run(), central.run())]
        assert await until(lambda: len(central.status.connected) == 1)
        await asyncio.sleep(1.0)
        assert len(central.status.connected) == 1
        await central.close()
        for t in tasks:
            t.cancel()
        await air.close()

    asyncio.run(scenario())


def test_scanner_watchdog_restarts_a_failed_or_silent_scanner(tmp_path):
    from bleak.exc import BleakError

    async def scenario():
        air = Air()
        device = await air.device("F0:00:00:00:00:01")
        attempts = []

        class FlakyScanner:
            """BlueZ's 'InProgress' on the first start, then bleak's scanner."""

            def __init__(self, callback):
                attempts.append(1)
                self.inner = BleakScanner(callback, backend=BumbleScanner,
                                          bumble_device=device)
                self.first = len(attempts) == 1

            async def start(self):
                if self.first:
                    raise BleakError("org.bluez.Error.InProgress")
                await self.inner.start()

            async def stop(self):
                await self.inner.stop()

        central = BleCentral(Topics("vigil"), lambda m: None, lambda: set(),
                             scanner_factory=FlakyScanner, client_factory=None,
                             scan_stall_s=0.4)
        central.RETRY_FIRST_S = 0.1
        task = asyncio.create_task(central.run())
        # No wearable in the air: the scanner hears nothing and is restarted.
        assert await until(lambda: central.status.scanner_restarts >= 2, 10)
        assert central.status.scanner_errors == 1 and len(attempts) >= 3
        task.cancel()
        await air.close()

    asyncio.run(scenario())
