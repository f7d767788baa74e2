# A wearable on the 32-bit MicroPython build with `bluetooth` (vigil_tools.mpy32): the real
# firmware core (vigil_fw.app.Wearable) on a simulated board with the LIS3DH's tap engine, and
# its real BLE link over micropython-lib's aioble as frozen into the build, unmodified, on
# BTstack through the H4 UART $MICROPYBTUART (a pty of vigil_tools.ble_rig). With "mqtt_port"
# in the settings, the real MQTT link to that broker too. It runs on MicroPython only.
#
#   MICROPYPATH=.frozen MICROPYBTUART=<pty> micropython ble_device.py
#
# stdin: one JSON line of settings (device, key, fs; optional mqtt_port, mqtt_prefix,
# retry_ms, adv_window_ms, rotate_ms, checkin_interval_s, protocol), then one command per
# line:
#   raise KIND          raise an alarm of that kind (1 SOS, 2 DURESS, 4 FALL ...) at once;
#                       the reply says how long raising it took ("us")
#   checkin             send a check-in now (21 bytes: over BLE only once the MTU was raised)
#   wait-up MS          until the BLE link is up (a central is connected)
#   wait-acked MS       until the outbox is empty
#   status              what the wearable holds
#   quit
# stdout: one JSON object per line. {"ev": "ready"} once the link is built, a reply per command
# ({"ev": "<command>", ...}), and {"ev": "acked", "counter", "us"} when a verified downlink
# takes an alarm out of the outbox, "us" being the time since it was raised. The firmware's own
# log lines are printed as they are ("vigil: ...").
import asyncio
import gc
import json
import sys
import time

import aioble
import bluetooth
from vigil_fw.app import Wearable
from vigil_fw.ble_link import BleLink
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
from vigil_fw.outbox import Outbox


def emit(ev, **fields):
    fields["ev"] = ev
    print(json.dumps(fields))


async def until(predicate, timeout_ms, step_ms=10):
    waited = 0
    while not predicate():
        if waited >= timeout_ms:
            return False
        await asyncio.sleep_ms(step_ms)
        waited += step_ms
    return True


class Device:
    def __init__(self, settings):
        s = settings
        Outbox.RETRY_FIRST_MS = s.get("retry_ms", Outbox.RETRY_FIRST_MS)
        Outbox.RETRY_MAX_MS = max(Outbox.RETRY_FIRST_MS, s.get("retry_max_ms", 4000))
        BleLink.ADV_WINDOW_MS = s.get("adv_window_ms", BleLink.ADV_WINDOW_MS)
        BleLink.ROTATE_MS = s.get("rotate_ms", BleLink.ROTATE_MS)
        mqtt = {"host": "127.0.0.1", "port": s.get("mqtt_port", 1883), "username": s["device"],
                "password": "unused", "prefix": s.get("mqtt_prefix", "vigil")}
        self.config = Config({"version": 1, "device_id": s["device"], "key": s["key"],
                              "checkin_interval_s": s.get("checkin_interval_s", 300),
                              "protocol": s.get("protocol", 2),
                              "mqtt": mqtt})
        self.board = SimBoard(s["fs"], hardware_taps=True)
        log = print if s.get("log", True) else (lambda m: None)
        self.wearable = w = Wearable(self.board, self.config, [], log=log)
        if s.get("mqtt_port"):
            from vigil_fw.mqtt_link import MqttLink
            MqttLink.RETRY_FIRST_MS = 100
            MqttLink.RETRY_MAX_MS = 500
            w.links.append(MqttLink(self.config, log=log))
        self.ble = BleLink(self.config, aioble, bluetooth.UUID, urgent=w.urgent, log=log)
        w.links.append(self.ble)
        self.raised_at = {}
        remove = w.outbox.remove

        def removed(counter):
            # A verified downlink names `counter`: the alarm is acknowledged.
            remove(counter)
            at = self.raised_at.pop(counter, None)
            if at is not None:
                emit("acked", counter=counter, us=time.ticks_diff(time.ticks_us(), at))

        w.outbox.remove = removed
        self.inbox = {}  # link name -> downlink frames it handed over (verified or not)
        put = w.inbox.put

        def counted(frame, link_name):
            self.inbox[link_name] = self.inbox.get(link_name, 0) + 1
            put(frame, link_name)

        w.inbox.put = counted

    def status(self):
        w = self.wearable
        connection = self.ble.connection
        links = []
        for link in w.links:
            links.append({"name": link.name, "up": link.up, "status": link.status})
        return {"outbox": len(w.outbox), "stats": w.stats, "links": links,
                "connects": self.ble.connects, "rotations": self.ble.rotations,
                "identifier": self.ble.identifier.hex(),
                "address": self.ble.address and self.ble.address[1].hex(),
                "address_stuck": self.ble.address_stuck,
                "mtu": connection.mtu if connection is not None else None,
                "open": w.alarms.listing(), "feedback": w.feedback.played,
                "inbox": self.inbox,
                "played": self.board.played, "urgent": w.urgent(),
                "heap_free": gc.mem_free(), "heap_alloc": gc.mem_alloc()}

    async def command(self, words):
        name, args = words[0], words[1:]
        w = self.wearable
        if name == "raise":
            at = time.ticks_us()
            counter = w.raise_alarm(int(args[0]))
            took = time.ticks_diff(time.ticks_us(), at)
            if counter is not None:
                self.raised_at[counter] = at
            emit("raise", counter=counter, us=took)  # on flash, the sender woken
        elif name == "checkin":
            emit(name, sent=await w.send_checkin(80, False))
        elif name == "wait-up":
            emit(name, ok=await until(lambda: self.ble.up, int(args[0])))
        elif name == "wait-acked":
            emit(name, ok=await until(lambda: len(w.outbox) == 0, int(args[0])))
        elif name == "status":
            emit(name, **self.status())
        else:
            emit("error", error="unknown command %r" % name)


async def main():
    stdin = asyncio.StreamReader(sys.stdin)
    device = Device(json.loads(await stdin.readline()))
    task = asyncio.create_task(device.wearable.run())
    emit("ready", device=device.config.device_hex)
    while True:
        line = await stdin.readline()
        if not line:
            break
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "quit":
            break
        await device.command(words)
    task.cancel()
    await asyncio.sleep_ms(20)
    emit("bye")


asyncio.run(main())
