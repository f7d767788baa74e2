# Beacons heard on the air, through to the responder: bumble advertisers on the project's
# emulated radio (vigil_tools.ble_rig) send an iBeacon, a second one and an Eddystone-UID; the
# wearable is the 32-bit MicroPython build with `bluetooth` (BTstack on a pty of the same
# radio) running the firmware's core on the simulated board (beacon_device.py): its real
# aioble scanner and its real MQTT link to Mosquitto. The gateway is the real one (`vigil
# gateway run`, its beacon table made by `vigil gateway beacon add`) and the webhook goes to
# the reference responder backend. Nothing is stood in for but the board (buttons, flash). The
# emulated radio gives every advertisement the same RSSI, so which of the two iBeacons is the
# strongest is not the test's to decide: either place, named by the gateway's table.
import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import jsonschema

from vigil_responder import ResponderBackend
from vigil_tools.ble_rig import BleRig

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import GatewayProcess, key_for, write_secret  # noqa: E402
from vigil_gateway.bumble_air import open_device  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
WEBHOOK_SCHEMA = json.load(open(os.path.join(ROOT, "gateway", "webhook-schema.json")))
SECRET = b"webhook-secret-for-beacons-01234"
DEV = 0x10CA7E02
KEY = key_for(DEV)
UUID = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0"
HALL, STAIRS = (UUID, 1, 2), (UUID, 1, 3)
NAMESPACE, INSTANCE = "edd1ebeac04e5defa017", "0b1c2d3e4f50"
SCAN_MS = 1500


def ibeacon(uuid, major, minor):
    raw = bytes.fromhex(uuid.replace("-", "")) + bytes((major >> 8, major & 255,
                                                         minor >> 8, minor & 255))
    return bytes.fromhex("0201061aff4c000215") + raw + b"\xc5"


def eddystone():
    return (bytes.fromhex("0201060303aafe1716aafe00ee") + bytes.fromhex(NAMESPACE)
            + bytes.fromhex(INSTANCE) + b"\0\0")


class Wearable:
    """beacon_device.py in a process of its own; its JSON lines by event name."""

    def __init__(self, exe, uart, settings):
        env = dict(os.environ, MICROPYPATH=".frozen", MICROPYBTUART=uart)
        self.proc = subprocess.Popen([str(exe), os.path.join(os.path.dirname(__file__),
                                                             "beacon_device.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, text=True)
        self.proc.stdin.write(json.dumps(settings) + "\n")
        self.proc.stdin.flush()
        self.events, self.lines = {}, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("{"):
                event = json.loads(line)
                self.events[event["ev"]] = event

    def wait(self, ev, timeout=20.0):
        deadline = time.monotonic() + timeout
        while ev not in self.events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ev in self.events, self.lines[-30:]
        return self.events[ev]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_beacons_heard_on_the_air_name_the_place_of_an_open_alarm_at_the_webhook(
        micropython32, mosquitto_factory, tmp_path):
    broker = mosquitto_factory()
    backend = ResponderBackend(SECRET).start()
    write_secret(tmp_path / "secret", SECRET)
    gw = GatewayProcess(tmp_path / "gw", broker.port,
                        forward={"backoff_min_s": 0.05, "backoff_max_s": 0.3},
                        **{"forward.webhook": {"url": backend.url,
                                               "secret_file": str(tmp_path / "secret")}})
    gw.add_device(DEV, KEY)
    gw.cli("beacon", "add", "ble", "%s:%d:%d" % HALL, "--place", "Main hall", "--floor", "G",
           "--room", "Reception")
    gw.cli("beacon", "add", "ble", "%s:%d:%d" % STAIRS, "--place", "Stairs", "--floor", "G")
    gw.start()
    rig = BleRig(wearables=1, centrals=3).start()
    wearable = loop = None
    try:
        async def air():
            devices = []
            for i, adv in enumerate((ibeacon(*HALL), ibeacon(*STAIRS), eddystone())):
                device = await open_device(rig.central_transport(i), "F0:00:00:00:0B:%02X" % i)
                # bumble's emulated controller sends only ADV_IND PDUs, so these beacons
                # advertise connectable, where real ones send ADV_NONCONN_IND: the firmware
                # reads the payload alone, whatever the PDU type
                await device.start_advertising(advertising_data=adv,
                                               advertising_interval_min=100,
                                               advertising_interval_max=100)
                devices.append(device)
            return devices

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(air(), loop).result(20)
        wearable = Wearable(micropython32, rig.wearable_uart(0), {
            "device": "%08x" % DEV, "key": KEY.hex(), "port": broker.port,
            "fs": str(tmp_path), "scan_ms": SCAN_MS, "run_ms": 15000})
        raised = backend.wait_for(lambda e: e["event"] == "raised", timeout=30)
        try:
            update = backend.wait_for(lambda e: e["event"] == "location_updated", timeout=30)
        except TimeoutError:
            raise AssertionError((wearable.lines[-30:], [e["event"] for e in backend.events]))
        jsonschema.validate(update, WEBHOOK_SCHEMA)
        # The alarm went out at once, before its scan had heard anything: no place.
        assert raised["location"] is None or raised["location"].get("place") is None, raised
        # The scan's location update names the strongest beacon the table knows.
        assert update["incident"]["alarm_counter"] == raised["incident"]["alarm_counter"]
        assert (update["location"]["source"], update["location"]["place"]) in (
            ("ble", "Main hall"), ("ble", "Stairs")), update["location"]
        # The wearable heard the three beacons (each advertisement of each counted).
        scanned = wearable.wait("scanned")
        assert scanned["beacons"] >= 3 and scanned["scans"] >= 1, scanned
        # The duress alarm raised after that scan carries what it heard: its own `raised`
        # names the place (the alarm still went at once, before its own scan).
        duress = backend.wait_for(lambda e: e["event"] == "raised"
                                  and e["incident"]["kind"] == "DURESS", timeout=30)
        jsonschema.validate(duress, WEBHOOK_SCHEMA)
        assert (duress["location"]["source"], duress["location"]["place"]) in (
            ("ble", "Main hall"), ("ble", "Stairs")), duress["location"]
    finally:
        if wearable is not None:
            wearable.close()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        rig.stop()
        gw.stop()
        backend.stop()
