# Downlinks beyond RECEIVED over BLE: a wearable reachable only by BLE (the firmware's BLE link
# over bumble, the gateway's real bleak central) gets its DELIVERED ack and the responder's
# prompt from the gateway's stored downlinks, and the wearable's alarm moves to PROMPTED.
import asyncio
import os
import sys


import vigil_protocol as p
from vigil_gateway import config as gateway_config
from vigil_gateway.bleak_bumble import factories as bumble_factories
from vigil_gateway.bumble_air import Air
from vigil_gateway.service import Gateway
from vigil_responder import ActionsClient, ResponderBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "ble"))
from test_ble_air import KEY, stopped, until, wearable  # noqa: E402

from vigil_fw import alarms as fw_alarms  # noqa: E402  (on the path through test_ble_air)

DEVICE = 0x00C0FFEE
SECRET = b"ble-forwarding-secret"
TOKEN = "ble-forwarding-token-0123456789"


def test_delivered_and_prompt_reach_a_ble_only_wearable(tmp_path, mosquitto):
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "tokens").write_text("responder %s\n" % TOKEN)
    for name in ("secret", "tokens"):  # secrets are refused when others can read them
        (tmp_path / name).chmod(0o600)
    backend = ResponderBackend(SECRET).start()

    async def scenario():
        air = Air()
        w, board, link = await wearable(air, tmp_path / "flash")
        radio = await air.device("F0:00:00:00:00:01")
        cfg = gateway_config.load_dict(
            {"gateway": {"data_dir": str(tmp_path / "gw")},
             "mqtt": {"port": mosquitto.port, "client_id": "gw-ble-forwarding",
                      "prefix": "fwd-ble"},  # its downlinks stay off other tests' topics
             "http": {"port": 0}, "ble": {"enabled": True, "scan_stall_s": 30.0},
             "forward": {"backoff_min_s": 0.05, "backoff_max_s": 0.5},
             "forward.webhook": {"url": backend.url, "secret_file": "secret"},
             "actions": {"tokens_file": "tokens"}}, str(tmp_path))
        factories = bumble_factories(radio)
        gateway = Gateway(cfg, ble_factories=factories)
        gateway.registry.add(DEVICE, KEY)
        tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(w.run())]
        try:
            assert await until(lambda: DEVICE in gateway.ble.status.connected)
            counter = w.raise_alarm(p.SOS)

            def state():
                return w.alarms.state(counter)

            assert await until(lambda: state() == fw_alarms.DELIVERED), state()
            incident = gateway.store.incident_for_alarm(DEVICE, counter).id
            api = ActionsClient("http://127.0.0.1:%d" % gateway.http_port, TOKEN)
            status, body = await asyncio.to_thread(api.act, incident, "prompt_double_tap")
            assert status == 200 and body["downlink"]
            assert await until(lambda: state() == fw_alarms.PROMPTED), state()
            sent = gateway.metrics.downlinks  # counted once the wearable answered the write
            assert await until(lambda: sent.get("ble", "PROMPT_DOUBLE_TAP") == 1)
            assert sent.get("ble", "DELIVERED") == 1
        finally:
            gateway.stop()
            for task in tasks[1:]:
                task.cancel()
            await stopped(tasks[0])
            await air.close()

    try:
        asyncio.run(scenario())
    finally:
        backend.stop()
