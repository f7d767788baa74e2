# The gateway service with its BLE link on: a wearable's alarm over BLE (firmware BLE link over
# bumble, the gateway's real bleak central with the bumble backend) and the same alarm over
# MQTT (a real Mosquitto) become one incident, and the RECEIVED ack reaches the wearable.
import asyncio

import paho.mqtt.client as mqtt

import vigil_protocol as p
from test_ble_air import KEY, stopped, until, wearable
from vigil_gateway import config as gateway_config
from vigil_gateway.service import Gateway
from vigil_gateway.bleak_bumble import factories as bumble_factories
from vigil_gateway.bumble_air import Air

DEVICE = 0x00C0FFEE
# A topic prefix of their own: the session broker is shared with suites that use the same
# device id under other keys.
PREFIX = "vigil-ble-tests"


def test_alarm_over_ble_and_mqtt_at_once_is_one_incident(tmp_path, mosquitto):
    async def scenario():
        air = Air()
        w, board, link = await wearable(air, tmp_path / "flash")
        radio = await air.device("F0:00:00:00:00:01")
        cfg = gateway_config.load_dict(
            {"gateway": {"data_dir": str(tmp_path / "gw")},
             "mqtt": {"port": mosquitto.port, "client_id": "gw-ble-test", "prefix": PREFIX},
             "http": {"port": 0}, "ble": {"enabled": True, "scan_stall_s": 30.0}},
            str(tmp_path))
        factories = bumble_factories(radio)
        gateway = Gateway(cfg, ble_factories=factories)
        gateway.registry.add(DEVICE, KEY)
        tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(w.run())]
        assert await until(lambda: DEVICE in gateway.ble.status.connected)
        assert await until(lambda: gateway.link.connected.is_set())

        counter = w.raise_alarm(p.SOS)
        assert await until(lambda: len(w.outbox) == 0)  # the ack came back over BLE
        stored = gateway.store.incidents(device_id=DEVICE)
        assert [(i.kind, i.counter) for i in stored] == [("SOS", counter)]

        # The same bytes over MQTT, as the wearable's other link would send them.
        raw = gateway.store.conn.execute(
            "SELECT payload FROM frames WHERE device_id=? AND counter=?",
            (DEVICE, counter)).fetchone()[0]
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-copy")
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        client.publish("%s/up/%08x" % (PREFIX, DEVICE), raw, qos=1).wait_for_publish(5)
        assert await until(lambda: gateway.metrics.frames.get("retransmission") >= 1)
        client.loop_stop()
        assert len(gateway.store.incidents(device_id=DEVICE)) == 1
        healthy, checks = gateway._health()
        assert checks["ble_scanner"] is True
        assert "vigil_gateway_ble_connected 1" in gateway._metrics_page()[2]

        gateway.stop()
        for task in tasks[1:]:
            task.cancel()
        await stopped(tasks[0])
        await air.close()

    asyncio.run(scenario())


def test_gateway_reaches_wearables_on_an_emulated_radio_in_another_process(tmp_path, mosquitto):
    """`vigil ble-air` hosts the controllers; the gateway opens its own through ble.hci."""
    import subprocess

    from vigil_cli import VIGIL
    from vigil_gateway.bumble_air import open_device
    from vigil_tools.aioble_bumble import Aioble
    from vigil_tools.broker import free_port

    from test_ble_air import Config, SimBoard, Wearable, ble_link

    ports = [free_port(), free_port()]
    air = subprocess.Popen([VIGIL, "ble-air"] + ["tcp-server:127.0.0.1:%d" % p for p in ports],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert "emulated BLE air" in air.stdout.readline()

        async def scenario():
            cfg = gateway_config.load_dict(
                {"gateway": {"data_dir": str(tmp_path / "gw")},
                 "mqtt": {"port": mosquitto.port, "client_id": "gw-ble-hci", "prefix": PREFIX},
                 "http": {"port": 0},
                 "ble": {"enabled": True, "hci": "tcp-client:127.0.0.1:%d" % ports[0]}},
                str(tmp_path))
            gateway = Gateway(cfg)
            gateway.registry.add(DEVICE, KEY)
            config = Config({"version": 1, "device_id": "%08x" % DEVICE, "key": KEY.hex(),
                             "mqtt": {"host": "-", "username": "%08x" % DEVICE,
                                      "password": "-"}})
            w = Wearable(SimBoard(str(tmp_path / "flash")), config, [], log=lambda m: None)
            aioble = Aioble(await open_device("tcp-client:127.0.0.1:%d" % ports[1],
                                              "F1:00:00:00:00:09"))
            w.links.append(ble_link.BleLink(config, aioble, aioble.UUID, log=lambda m: None,
                                            urgent=w.urgent))
            tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(w.run())]
            assert await until(lambda: DEVICE in gateway.ble.status.connected, 20)
            counter = w.raise_alarm(p.DURESS)
            assert await until(lambda: len(w.outbox) == 0)
            assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
                == [("DURESS", counter)]
            gateway.stop()
            tasks[1].cancel()
            await stopped(tasks[0])

        (tmp_path / "flash").mkdir()
        asyncio.run(scenario())
    finally:
        air.terminate()
        air.wait(10)


def test_link_drop_mid_alarm_brings_a_retransmission_and_no_second_incident(tmp_path, mosquitto):
    async def scenario():
        air = Air()
        w, board, link = await wearable(air, tmp_path / "flash")
        w.outbox.RETRY_FIRST_MS = 300
        radio = await air.device("F0:00:00:00:00:01")
        cfg = gateway_config.load_dict(
            {"gateway": {"data_dir": str(tmp_path / "gw")},
             "mqtt": {"port": mosquitto.port, "client_id": "gw-ble-drop", "prefix": PREFIX},
             "http": {"port": 0}, "ble": {"enabled": True}}, str(tmp_path))
        factories = bumble_factories(radio)
        gateway = Gateway(cfg, ble_factories=factories)
        gateway.ble.RETRY_FIRST_S = 0.2
        gateway.registry.add(DEVICE, KEY)
        tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(w.run())]
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
        counter = w.raise_alarm(p.SOS)
        assert await until(lambda: dropped, 10)
        assert await until(lambda: link.connects >= 2, 20)       # reconnected
        assert await until(lambda: len(w.outbox) == 0, 20)        # the retransmission's ack
        assert gateway.metrics.frames.get("retransmission") >= 1
        assert [(i.kind, i.counter) for i in gateway.store.incidents(device_id=DEVICE)] \
            == [("SOS", counter)]

        gateway.stop()
        tasks[1].cancel()
        await stopped(tasks[0])
        await air.close()

    asyncio.run(scenario())
