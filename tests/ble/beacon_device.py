# A wearable for test_beacons_air.py on the 32-bit MicroPython build with `bluetooth` (BTstack
# on the emulated radio): the firmware's core on the simulated board, its real MQTT link to the
# test's Mosquitto and its real beacon scanner over micropython-lib's aioble, as main.py gives
# it. Settings as one JSON line on stdin; it raises an SOS once its link is up, and a duress
# alarm once the SOS's scan is over, prints a JSON line per thing the test waits for, and ends
# when told on stdin or after S["run_ms"].
import json
import sys

import asyncio
import aioble

from vigil_fw.app import Wearable
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
from vigil_fw.mqtt_link import MqttLink
from vigil_fw.outbox import Outbox
from vigil_fw.scan import Scanner

S = json.loads(sys.stdin.readline())
Outbox.RETRY_FIRST_MS = 300
Outbox.RETRY_MAX_MS = 1000


def say(**event):
    print(json.dumps(event))


async def main():
    cfg = Config({"version": 1, "device_id": S["device"], "key": S["key"],
                  "checkin_interval_s": 60,
                  "mqtt": {"host": "127.0.0.1", "port": S["port"], "username": S["device"],
                           "password": "unused"},
                  "beacons": {"scan_ms": S["scan_ms"]}})
    board = SimBoard(S["fs"])
    w = Wearable(board, cfg, [MqttLink(cfg, log=lambda m: None)], log=print)
    w.scanner = Scanner(aioble, *cfg.beacons)
    run = asyncio.create_task(w.run())
    t = 0
    while not w.links[0].up and t < 10000:
        await asyncio.sleep_ms(20)
        t += 20
    say(ev="ready", up=w.links[0].up)
    counter = w.raise_alarm(1)  # SOS
    say(ev="raised", counter=counter)
    t = 0
    while (w.scanner.scans < 1 or w.stats["checkins"] < 2) and t < S["run_ms"]:
        await asyncio.sleep_ms(50)
        t += 50
    heard = w.scanner.heard
    say(ev="scanned", scans=w.scanner.scans, checkins=w.stats["checkins"],
        adverts=heard.adverts, beacons=heard.beacons, other=heard.other,
        played=board.played, outbox=len(w.outbox))
    # A second alarm: it goes at once too, now with what that scan heard.
    say(ev="raised2", counter=w.raise_alarm(2))  # DURESS
    await asyncio.sleep_ms(S.get("linger_ms", 1000))
    run.cancel()
    say(ev="done")


asyncio.run(main())
