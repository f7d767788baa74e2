# The gateway service with its BLE link on: a wearable's alarm over BLE (firmware BLE link over
# bumble, the gateway's real bleak central with the bumble backend) and the same alarm over
# MQTT (a real Mosquitto) become one incident, and the RECEIVED ack reaches the wearable.
import asyncio

import paho.mqtt.client as mqtt
from bleak import BleakClient, BleakScanner

import vigil_protocol as p
from test_ble_air import KEY, wearable
from vigil_gateway import config as gateway_config
from vigil_gateway.service import Gateway
from vigil_tools.bleak_bumble import BumbleClient, BumbleScanner
from vigil_tools.bumble_air import Air

DEVICE = 0x00C0FFEE


async def until(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def test_alarm_over_ble_and_mqtt_at_once_is_one_incident(tmp_path, mosquitto):
    async def scenario():
        air = Air()
        w, board, link = await wearable(air, tmp_path / "flash")
        radio = await air.device("F0:00:00:00:00:01")
        cfg = gateway_config.load_dict(
            {"gateway": {"data_dir": str(tmp_path / "gw")},
             "mqtt": {"port": mosquitto.port, "client_id": "gw-ble-test"},
             "http": {"port": 0}, "ble": {"enabled": True, "scan_stall_s": 30.0}},
            str(tmp_path))
        factories = (lambda cb: BleakScanner(cb, backend=BumbleScanner, bumble_device=radio),
                     lambda d, gone: BleakClient(d, gone, backend=BumbleClient,
                                                 bumble_device=radio, mtu=247))
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
        client.publish("vigil/up/%08x" % DEVICE, raw, qos=1).wait_for_publish(5)
        assert await until(lambda: gateway.metrics.frames.get("retransmission") >= 1)
        client.loop_stop()
        assert len(gateway.store.incidents(device_id=DEVICE)) == 1
        healthy, checks = gateway._health()
        assert checks["ble_scanner"] is True
        assert "vigil_gateway_ble_connected 1" in gateway._metrics_page()[2]

        gateway.stop()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.wait_for(tasks[0], 10)
        await air.close()

    asyncio.run(scenario())
