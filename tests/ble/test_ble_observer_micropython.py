# The observer (protocol/SPEC.md sections 10 and 13): a bystander with a sniffer next to a
# wearer. The wearable is the real firmware on the 32-bit MicroPython build with `bluetooth`
# (BTstack, micropython-lib's aioble, unmodified) on the project's emulated radio
# (vigil_tools.ble_rig); the gateway is the real service with its bleak central. The observer
# is a bumble host that only scans, passively, plus a tap on the link that records every ATT
# notification and write, as a sniffer following the connections would (no radio here: the
# emulated link is the air). It must not tell an idle wearable from one whose duress alarm is
# open, nor link a wearable's identifier and address to the ones it rotates to.
import asyncio
import time

import pytest

import vigil_protocol as p
from test_firmware_ble_micropython import (
    DEVICE,
    KEY,
    SLOW_MS,
    TOKEN,
    call,
    eventually,
    gateway_for,
    stop,
    until,
)
from vigil_gateway.ble_central import SERVICE
from vigil_protocol.ble_id import BleKey
from vigil_tools.ble_rig import BleRig, WearableProcess

SERVICE_LE = bytes(reversed(bytes.fromhex(SERVICE.replace("-", ""))))
ID_AT, ID_LEN = 25, 6  # the identifier's place in the advertising data


@pytest.fixture
def rig():
    rig = BleRig(wearables=1, centrals=2).start()  # central 0: the gateway; 1: the observer
    yield rig
    rig.stop()


@pytest.fixture
def wearable(micropython32, rig, tmp_path):
    started = []

    def start(**settings):
        fs = tmp_path / "flash"
        fs.mkdir()
        settings = dict({"device": "%08x" % DEVICE, "key": KEY.hex(), "fs": str(fs),
                         "retry_ms": 300, "adv_window_ms": 500}, **settings)
        w = WearableProcess(micropython32, rig.wearable_uart(0), settings)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


def vigil_adverts(observer, since=0.0, until_=float("inf")):
    """(address, advertising data) of every Vigil advertisement heard in [since, until_)."""
    return [(a, d) for t, a, d in observer.adverts if since <= t < until_ and SERVICE_LE in d]


def blanked(data):
    """Advertising data with the rotating identifier's bytes zeroed."""
    return data[:ID_AT] + bytes(ID_LEN) + data[ID_AT + ID_LEN:]


async def away_and_back(gateway, retry_s=3.0):
    """The gateway drops the wearable and stays away for about `retry_s` (its reconnect
    backoff), so the wearable advertises meanwhile; returns once it is connected again."""
    gateway.ble.RETRY_FIRST_S = retry_s
    await gateway.ble._clients[DEVICE].disconnect()
    assert await until(lambda: DEVICE not in gateway.ble.status.connected)
    assert await until(lambda: DEVICE in gateway.ble.status.connected, 20)


async def checkins(gateway, w, n):
    """`n` check-ins received (and acknowledged), one after the other. A check-in is sent once
    and never resent, so one that meets a rotation (the link closing under it) is lost: then
    another is sent."""
    for _ in range(n):
        for attempt in range(5):
            before = gateway.metrics.frames.get("new")
            if (await call(w.request, "checkin"))["sent"] and \
                    await until(lambda: gateway.metrics.frames.get("new") > before, 5):
                break
            await asyncio.sleep(0.5)  # the link is coming up again
        else:
            raise AssertionError("no check-in got through in 5 attempts")
    await asyncio.sleep(0.3)  # the last ack's write lands


def test_an_observer_cannot_tell_an_open_duress_alarm_from_an_idle_wearable(
        wearable, rig, tmp_path, mosquitto):
    """Recorded while idle, then while a duress alarm is raised and open: the intervals the
    wearable advertises at, its advertisements (up to the rotating identifier, which does not
    rotate here) and the lengths of the frames on the link are the same. Without the change,
    an open alarm made the wearable advertise fast (100 ms) and its frames differed."""
    observer = rig.observer(1)
    w = wearable()

    async def scenario():
        gateway = gateway_for(tmp_path, mosquitto, "mpble-observer",
                              {"hci": rig.gateway_transport})
        task = asyncio.create_task(gateway.run())
        record = rig.advertising(0)
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            await checkins(gateway, w, 2)
            await away_and_back(gateway)
            await checkins(gateway, w, 2)
            raised_at = time.monotonic()
            events_idle = len(record.events)
            frames_idle = len(observer.frames)

            counter = await call(w.raise_alarm, p.DURESS)
            await call(w.acked, counter)
            await checkins(gateway, w, 1)
            await away_and_back(gateway)
            await checkins(gateway, w, 1)
            status = await eventually(w, lambda s: s["open"] != [])
            assert [a[:2] for a in status["open"]] == [[counter, p.DURESS]]
            assert status["urgent"] is False and status["rotations"] == 1
            assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
                == [("DURESS", counter)]
        finally:
            await stop(gateway, task)

        enabled, interval = [], None  # (event index, interval) of each advertising start
        for i, (_, what, value) in enumerate(record.events):
            if what == "interval":
                interval = value
            elif what == "enabled" and value:
                enabled.append((i, interval))
        idle = [v for i, v in enabled if i < events_idle]
        duress = [v for i, v in enabled if i >= events_idle]
        assert len(idle) >= 2 and len(duress) >= 2, (idle, duress)
        assert set(idle) == set(duress) == {SLOW_MS}
        # What went on the air, as the observer heard it.
        heard_idle = vigil_adverts(observer, 0, raised_at)
        heard_duress = vigil_adverts(observer, raised_at)
        assert heard_idle and heard_duress
        assert {blanked(d) for _, d in heard_idle} == {blanked(d) for _, d in heard_duress}
        assert {(a, d) for a, d in heard_idle} == {(a, d) for a, d in heard_duress}
        # Frames on the link: the same lengths each way, and no header in clear.
        lengths = [sorted({(kind, len(v)) for _, kind, _, v in part})
                   for part in (observer.frames[:frames_idle], observer.frames[frames_idle:])]
        assert lengths[0] == lengths[1], lengths
        # (2 bytes: the central's subscription, on every connection)
        assert [x for x in lengths[0] if x[1] > 2] == [("notify", 20), ("write", 22)]
        device_bytes = DEVICE.to_bytes(4, "big")
        assert not any(device_bytes in v for _, _, _, v in observer.frames)

    asyncio.run(scenario())


def test_across_rotations_nothing_links_and_alarms_acks_and_actions_still_flow(
        wearable, rig, tmp_path, mosquitto):
    """The identifier and the address rotate together (here every 5 s or a little less); the
    observer sees each identifier under one address only, never an old one again, and the
    masked headers of the frames change with them. Meanwhile the gateway resolves each new
    identifier: an alarm raised after rotations is received, acknowledged, and a responder's
    actions reach the wearable."""
    from vigil_responder import ActionsClient

    (tmp_path / "tokens").write_text("responder %s\n" % TOKEN)
    (tmp_path / "tokens").chmod(0o600)
    observer = rig.observer(1)
    w = wearable(rotate_ms=5000)

    async def scenario():
        gateway = gateway_for(tmp_path, mosquitto, "mpble-rotation",
                              {"hci": rig.gateway_transport},
                              actions={"tokens_file": "tokens"})
        gateway.ble.RETRY_FIRST_S = 0.2
        task = asyncio.create_task(gateway.run())
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected, 20)
            await checkins(gateway, w, 1)
            for rotation in (2, 3):
                # Connected again under the new identifier, then a frame on that connection.
                await eventually(w, lambda s: s["rotations"] >= rotation
                                 and s["links"][0]["up"], 20)
                await checkins(gateway, w, 1)
            counter = await call(w.raise_alarm, p.SOS)
            await call(w.acked, counter, 20)
            api = ActionsClient("http://127.0.0.1:%d" % gateway.http_port, TOKEN)
            incident = gateway.store.incident_for_alarm(DEVICE, counter).id
            for action, pattern in (("prompt_double_tap", "prompt"), ("resolve", "resolved")):
                code, body = await asyncio.to_thread(api.act, incident, action)
                assert code == 200 and body["downlink"], body
                await eventually(w, lambda s: pattern in s["feedback"], 20)
            status = await call(w.status)
            assert status["rotations"] >= 3 and status["address_stuck"] == 0
            assert status["stats"]["rejected"] == {}
            assert gateway.ble.status.bad_frames == 0 and gateway.ble.status.unresolved == 0
        finally:
            await stop(gateway, task)

        heard = vigil_adverts(observer)
        order = []  # (identifier, address) in the order first heard
        for address, data in heard:
            pair = (data[ID_AT:ID_AT + ID_LEN], address)
            if not order or order[-1] != pair:
                assert pair not in order, "an old identifier came back"
                order.append(pair)
        assert len(order) >= 3, order
        identifiers = [i for i, _ in order]
        addresses = [a for _, a in order]
        assert len(set(identifiers)) == len(order) and len(set(addresses)) == len(order)
        for identifier in identifiers:
            assert BleKey(KEY).resolves(identifier)  # ... for whoever holds the key only
        # Everything else in the advertisement is what every Vigil wearable sends.
        assert len({blanked(d) for _, d in heard}) == 1
        # Frames: the masked device id (bytes 1-4 of each notification) is one value per
        # connection, and no two connections share it.
        by_address = {}
        for _, kind, address, value in observer.frames:
            if kind == "notify" and len(value) >= 9:
                by_address.setdefault(address, set()).add(bytes(value[1:5]))
        assert len(by_address) >= 3, list(by_address)
        headers = [h for hs in by_address.values() for h in hs]
        assert all(len(hs) == 1 for hs in by_address.values())
        assert len(set(headers)) == len(headers)
        assert set(by_address) <= set(addresses)

    asyncio.run(scenario())
