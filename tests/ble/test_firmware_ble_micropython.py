# The firmware's BLE link as a wearable runs it: the 32-bit MicroPython build with `bluetooth`
# (BTstack over an H4 UART), micropython-lib's aioble and the firmware frozen in, unmodified,
# each wearable in a process of its own on a pty of the project's emulated radio
# (vigil_tools.ble_rig). The other end is the gateway's real service: its bleak central (bumble
# backend, through vigil_gateway.bleak_bumble), pipeline, store and responder actions API.
import asyncio
import struct
import time

import pytest
from bleak import BleakClient, BleakScanner

import vigil_protocol as p
from vigil_protocol.ble_id import BleKey
from vigil_gateway import config as gateway_config
from vigil_gateway.ble_central import COMPANY_ID, SERVICE
from vigil_gateway.bleak_bumble import BumbleClient, BumbleScanner
from vigil_gateway.bumble_air import open_device
from vigil_gateway.service import Gateway
from vigil_tools.ble_rig import BleRig, WearableProcess

KEY = bytes(range(0x30, 0x50))
OTHER_KEY = bytes(range(0x60, 0x80))
DEVICE = 0x00C0FFEE
OTHER = 0x0000BEEF
TOKEN = "ble-micropython-token-0123456789"
RECEIVED_STATE = 2  # vigil_fw.alarms.RECEIVED
FAST_MS, SLOW_MS = 100.0, 1000.0  # ble_link.BleLink.ADV_FAST_US / ADV_SLOW_US


@pytest.fixture
def rig():
    rig = BleRig(wearables=2).start()
    yield rig
    rig.stop()


@pytest.fixture
def wearables(micropython32, rig, tmp_path):
    """Start wearable `index` on the rig: the 32-bit build with only its frozen image on the
    path, on pty `index`."""
    started = []

    def start(index=0, device=DEVICE, **settings):
        fs = tmp_path / ("flash%d" % index)
        fs.mkdir()
        settings = dict({"device": "%08x" % device, "key": KEY.hex(), "fs": str(fs),
                         "retry_ms": 300, "adv_window_ms": 500}, **settings)
        w = WearableProcess(micropython32, rig.wearable_uart(index), settings)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def gateway_for(tmp_path, mosquitto, prefix, ble, factories=None, **sections):
    cfg = gateway_config.load_dict(dict(
        {"gateway": {"data_dir": str(tmp_path / "gw")},
         "mqtt": {"port": mosquitto.port, "client_id": "gw-" + prefix, "prefix": prefix},
         "http": {"port": 0}, "ble": dict({"enabled": True, "scan_stall_s": 30.0}, **ble)},
        **sections), str(tmp_path))
    gateway = Gateway(cfg, ble_factories=factories)
    gateway.registry.add(DEVICE, KEY)
    return gateway


async def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def call(fn, *args):
    """A blocking call to a wearable process, off the gateway's event loop."""
    return await asyncio.to_thread(fn, *args)


async def eventually(wearable, predicate, timeout=5.0):
    """The wearable's status once `predicate(status)` holds (AssertionError if it never
    does): what it shows follows a downlink through its own tasks."""
    deadline = time.monotonic() + timeout
    while True:
        status = await call(wearable.status)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


async def stop(gateway, task):
    gateway.stop()
    await asyncio.wait_for(task, 10)
    await gateway.ble.close()  # (the service leaves its BLE connections to the process's end)


def radio_factories(radio, mtu):
    """The gateway's BLE factories on bumble device `radio` (bleak with the bumble backend, as
    the service builds them for `ble.hci`), with the MTU its client asks for (23: none)."""
    return (lambda callback: BleakScanner(callback, [SERVICE], backend=BumbleScanner,
                                          bumble_device=radio),
            lambda device, gone: BleakClient(device, gone, backend=BumbleClient,
                                             bumble_device=radio, mtu=mtu))


def advertised(record):
    """(service UUID as hex, manufacturer data as (company, payload), name) of what a wearable
    asked its controller to advertise."""
    fields = {}
    for blob in (record.data, record.scan_response):
        i = 0
        while i + 1 < len(blob) and blob[i]:
            length, kind = blob[i], blob[i + 1]
            fields.setdefault(kind, bytes(blob[i + 2:i + 1 + length]))
            i += 1 + length
    maker = fields.get(0xFF)
    return (bytes(reversed(fields.get(0x07, b""))).hex(),
            maker and (struct.unpack("<H", maker[:2])[0], maker[2:]), fields.get(0x09))


@pytest.mark.parametrize("central_mtu", [247, 23])
def test_an_allowed_wearable_is_connected_and_its_alarm_acked_by_a_signed_write(
        wearables, rig, tmp_path, mosquitto, central_mtu):
    """Scan -> connect -> alarm notification -> the gateway's signed RECEIVED written back: the
    outbox empties. A wearable not on the allow-list is heard, never connected. The wearable
    asks for an MTU of 247 itself, so a central that asks for none still gets 21-byte
    check-ins."""
    a = wearables(0)
    b = wearables(1, device=OTHER, key=OTHER_KEY.hex())

    async def scenario():
        ble = {"allow": "%08x" % DEVICE}
        factories = None
        if central_mtu == 247:
            ble["hci"] = rig.gateway_transport  # the gateway opens it, as its config says
        else:
            factories = radio_factories(
                await open_device(rig.gateway_transport, "F0:00:00:00:00:01"), central_mtu)
        gateway = gateway_for(tmp_path, mosquitto, "mpble-%d" % central_mtu, ble, factories)
        gateway.registry.add(OTHER, OTHER_KEY)  # known, but not on the BLE allow-list
        task = asyncio.create_task(gateway.run())
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            # The other's rotating identifier resolves under no allowed key: never connected.
            assert await until(lambda: gateway.ble.status.unresolved > 0)
            assert await until(lambda: gateway.metrics.frames.get("new") >= 1)  # a check-in
            status = await call(a.status)
            assert status["links"] == [{"name": "ble", "up": True, "status": ""}]
            assert status["mtu"] == 247 and status["stats"]["checkins"] >= 1

            counter = await call(a.raise_alarm, p.SOS)
            assert (await call(a.acked, counter))["us"] > 0
            assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
                == [("SOS", counter)]
            status = await eventually(a, lambda s: s["feedback"] == ["received"])
            assert status["outbox"] == 0 and set(status["inbox"]) == {"ble"}
            assert status["open"] == [[counter, p.SOS, RECEIVED_STATE]]
            assert status["stats"]["rejected"] == {}

            other = await call(b.status)
            assert other["connects"] == 0 and not other["links"][0]["up"]
            assert gateway.ble.status.connected == {DEVICE}
        finally:
            await stop(gateway, task)
        # What each wearable asked its controller to advertise: the Vigil service and a
        # rotating identifier its own key resolves; no name, no device id, no scan response.
        for index, key in ((0, KEY), (1, OTHER_KEY)):
            record = rig.advertising(index)
            service, (company, identifier), name = advertised(record)
            assert (service, company, name) == (SERVICE.replace("-", ""), COMPANY_ID, None)
            assert BleKey(key).resolves(identifier) and record.scan_response == b""
            assert record.intervals()[0] == SLOW_MS

    asyncio.run(scenario())


def test_a_link_dropped_mid_alarm_reconnects_and_the_retransmission_makes_no_second_incident(
        wearables, rig, tmp_path, mosquitto):
    w = wearables(0)

    async def scenario():
        gateway = gateway_for(tmp_path, mosquitto, "mpble-drop", {"hci": rig.gateway_transport})
        gateway.ble.RETRY_FIRST_S = 0.2
        task = asyncio.create_task(gateway.run())
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            # The link drops between the alarm's notification and its ack: the ack is lost.
            real_send = gateway.ble.send
            dropped = []

            async def drop_first(device_id, frame):
                if not dropped and p.decode(frame, KEY, p.DOWN).NAME == "ack":
                    dropped.append(frame)
                    await gateway.ble._clients[device_id].disconnect()
                    return False
                return await real_send(device_id, frame)

            gateway.ble.send = drop_first
            counter = await call(w.raise_alarm, p.SOS)
            await call(w.acked, counter, 15)
            assert dropped
            status = await call(w.status)
            assert status["connects"] >= 2 and status["stats"]["sent"] >= 2
            assert gateway.metrics.frames.get("retransmission") >= 1
            assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
                == [("SOS", counter)]
        finally:
            await stop(gateway, task)
        sent = {line for line in w.log if line.startswith("vigil: tx ")}  # (only alarms are logged)
        assert len(sent) == 1  # every copy byte-identical
        # Advertising went fast once the alarm was waiting (after the drop).
        assert rig.advertising(0).intervals()[-1] == FAST_MS

    asyncio.run(scenario())


@pytest.mark.parametrize("ble_mtu", [247, 23])
def test_an_alarm_over_ble_and_mqtt_at_once_is_one_incident(
        wearables, rig, tmp_path, mosquitto, ble_mtu):
    """Both links up: the same bytes on both, one incident, one ack acted on. At MTU 247 the
    ack arrives on both paths and the second copy changes nothing. On a link held at MTU 23
    (a central whose stack goes no higher), the 20-byte alarm and the 20-byte v2 check-in
    still go over BLE; the 22-byte ack needs a long write there, which this build's
    BTstack binding hands to the app in pieces (it ignores the write offset; NimBLE, the
    board's stack, reassembles it): each piece is refused and counted, and MQTT carries the
    ack."""
    prefix = "mpble-dual-%d" % ble_mtu
    w = wearables(0, mqtt_port=mosquitto.port, mqtt_prefix=prefix)

    async def scenario():
        radio = await open_device(rig.gateway_transport, "F0:00:00:00:00:01")
        radio.gatt_server.max_mtu = ble_mtu  # what this central's stack accepts
        gateway = gateway_for(tmp_path, mosquitto, prefix, {},
                              radio_factories(radio, ble_mtu))
        task = asyncio.create_task(gateway.run())
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            status = await call(w.status)
            assert [link["up"] for link in status["links"]] == [True, True]
            assert status["mtu"] == ble_mtu
            copies = gateway.metrics.frames.get("retransmission")
            assert (await call(w.request, "checkin"))["sent"] is True  # MQTT takes it
            await asyncio.sleep(0.3)  # its acks, and its copy over BLE if the MTU lets it go
            # A v2 check-in is 20 bytes, as an alarm: over BLE at either MTU too.
            assert gateway.metrics.frames.get("retransmission") - copies == 1
            copies = gateway.metrics.frames.get("retransmission")
            before = await call(w.status)

            counter = await call(w.raise_alarm, p.DURESS)
            await call(w.acked, counter)
            assert await until(lambda: gateway.metrics.frames.get("retransmission") > copies)
            assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
                == [("DURESS", counter)]
            await asyncio.sleep(0.3)  # the ack's other copy, if any, lands meanwhile
            status = await call(w.status)
            assert status["outbox"] == 0
            assert status["played"] == [] and status["feedback"] == []  # duress: nothing shown
            # Every ack (the gateway acks each copy of the alarm) came on every path that can
            # carry it and was acted on once.
            acks = status["stats"]["downlinks"] - before["stats"]["downlinks"]
            new = {name: status["inbox"].get(name, 0) - before["inbox"].get(name, 0)
                   for name in ("ble", "mqtt")}
            refused = {reason: n - before["stats"]["rejected"].get(reason, 0)
                       for reason, n in status["stats"]["rejected"].items()}
            assert acks >= 1 and new["mqtt"] == acks
            if ble_mtu == 247:
                assert new["ble"] == acks and not any(refused.values())
            else:
                assert new["ble"] == 2 * acks and refused == {"truncated": 2 * acks}
        finally:
            await stop(gateway, task)
        sent = {line for line in w.log if line.startswith("vigil: tx ")}  # (only alarms are logged)
        assert len(sent) == 1  # one frame, the same bytes on both links

    asyncio.run(scenario())


def test_responder_actions_reach_the_wearable_over_ble_and_advertising_follows_the_alarm(
        wearables, rig, tmp_path, mosquitto):
    """A responder's prompt and resolve, through the gateway's actions API, reach a BLE-only
    wearable. Advertising: slow while idle, fast while the alarm waits and while it is open
    (after a drop), slow again once it is resolved; the advertisement itself never changes."""
    from vigil_responder import ActionsClient

    (tmp_path / "tokens").write_text("responder %s\n" % TOKEN)
    (tmp_path / "tokens").chmod(0o600)  # the gateway refuses a secret others can read
    w = wearables(0)

    async def scenario():
        gateway = gateway_for(tmp_path, mosquitto, "mpble-actions",
                              {"hci": rig.gateway_transport},
                              actions={"tokens_file": "tokens"})
        gateway.ble.RETRY_FIRST_S = 0.2
        task = asyncio.create_task(gateway.run())
        record = rig.advertising(0)
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            counter = await call(w.raise_alarm, p.SOS)
            await call(w.acked, counter)
            # Received, not resolved: the alarm is open, so after a drop it advertises fast.
            await gateway.ble._clients[DEVICE].disconnect()
            assert await until(lambda: DEVICE in gateway.ble.status.connected
                               and (record.intervals() or [0])[-1] == FAST_MS)
            api = ActionsClient("http://127.0.0.1:%d" % gateway.http_port, TOKEN)
            incident = gateway.store.incident_for_alarm(DEVICE, counter).id
            for action, pattern in (("prompt_double_tap", "prompt"), ("resolve", "resolved")):
                code, body = await asyncio.to_thread(api.act, incident, action)
                assert code == 200 and body["downlink"], body
                status = await eventually(w, lambda s: pattern in s["feedback"])
            assert status["open"] == [] and status["urgent"] is False
            # Counted once the wearable answers the write, which can come just after it acts.
            assert await until(lambda: gateway.metrics.downlinks.get("ble", "RESOLVED") == 1)
        finally:
            await stop(gateway, task)
        # The gateway has let go: the wearable advertises again, slowly, nothing open.
        assert await until(lambda: record.enabled and record.intervals()[-1] == SLOW_MS)
        intervals = record.intervals()
        assert intervals[0] == SLOW_MS and FAST_MS in intervals
        datas = {(e[2]) for e in record.events if e[1] in ("data", "scan_response")}
        assert len(datas) == 2  # one advertisement, one scan response, whatever the alarm

    asyncio.run(scenario())
