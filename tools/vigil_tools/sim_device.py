# `vigil sim`'s wearable: the real firmware core (vigil_fw.app.Wearable) on a simulated board
# (vigil_fw.hal_sim) with its real MQTT link, on the MicroPython unix port; or, with
# "link": "ble", its real BLE link on CPython, as a GATT peripheral on an emulated controller
# (`vigil ble-air`; no MicroPython build here has `bluetooth`).
#
# stdin: one JSON line of settings, then one command per line (see COMMANDS). stdout: what the
# wearable does, one line each: its own log ("vigil: raised <hex>", "vigil: tx <hex>",
# "vigil: rx <hex>", "mqtt: ..."), "vigil: feedback <pattern>" for what the wearer would feel
# and see, and "sim: ..." for the simulator's own answers. Exit status 0 after "quit" or EOF.
import asyncio
import json
import sys

from vigil_fw.app import Wearable
from vigil_fw.clock import sleep_ms, ticks_ms
from vigil_fw.config import Config
from vigil_fw.gestures import DuressGesture, SosButton
from vigil_fw.hal_sim import SimBoard
from vigil_fw.outbox import Outbox

import traces

COMMANDS = (
    ("sos", "hold the SOS button until the alarm is raised"),
    ("duress", "the covert duress gesture on the hidden button"),
    ("tap", "a double tap on the wearable"),
    ("battery PCT", "set the battery level (0-100)"),
    ("fix LAT LON [HDOP]", "(--gnss) the GNSS module has a fix here (degrees), sent each second"),
    ("fix-lost", "(--gnss) the module goes on sending, without a fix"),
    ("nmea TEXT", "(--gnss) one line as it is onto the module's UART (noise, a bad sentence)"),
    ("ap BSSID RSSI", "(--wifi-scan) an access point in range from the next scan on (dBm)"),
    ("ap-gone BSSID", "(--wifi-scan) that access point is no longer heard"),
    ("wait-checkin [MS]", "until the next check-in has gone out (default 15000)"),
    ("silent", "the wearable goes silent: no traffic at all, the link is not closed"),
    ("resume", "back from silence"),
    ("wait MS", "do nothing for MS milliseconds"),
    ("wait-sent [MS]", "until every queued alarm has gone out at least once (default 10000)"),
    ("wait-acked [MS]", "until the gateway has acknowledged every queued alarm"),
    ("status", "what the wearable holds"),
    ("help", "this list"),
    ("quit", "stop"),
)


def say(text):
    print("sim: " + text)


async def until(predicate, timeout_ms, step_ms=20):
    waited = 0
    while not predicate():
        if waited >= timeout_ms:
            return False
        await sleep_ms(step_ms)
        waited += step_ms
    return True


def nmea(body):
    check = 0
    for b in body.encode():
        check ^= b
    return ("$%s*%02X\r\n" % (body, check)).encode()


def _angle(value, digits, plus, minus):
    """Degrees as NMEA's (d)ddmm.mmmm and its hemisphere."""
    e7 = int(round(abs(value) * 10000000))
    degrees = e7 // 10000000
    minutes_e4 = (e7 - degrees * 10000000) * 60 // 1000  # 1e-4 minute
    return ("%02d" if digits == 2 else "%03d") % degrees + "%02d.%04d,%s" % (
        minutes_e4 // 10000, minutes_e4 % 10000, plus if value >= 0 else minus)


class Receiver:
    """A GNSS module on the simulated board's UART: each second GGA and RMC (a fix where
    `fix` says, HDOP `hdop`), or both without a fix once it is lost."""

    def __init__(self, uart):
        self.uart = uart
        self.fix = None  # (lat, lon, hdop)
        self.utc = 12 * 3600
        self.task = None

    def start(self):
        if self.task is None:
            self.task = asyncio.create_task(self.run())

    async def run(self):
        while True:
            u = self.utc
            t = "%02d%02d%02d.00" % (u // 3600 % 24, u // 60 % 60, u % 60)
            if self.fix is not None:
                lat, lon, hdop = self.fix
                where = "%s,%s" % (_angle(lat, 2, "N", "S"), _angle(lon, 3, "E", "W"))
                self.uart.feed(nmea("GPGGA,%s,%s,1,09,%.1f,12.0,M,47.0,M,," % (t, where, hdop))
                               + nmea("GNRMC,%s,A,%s,0.0,,011226,,,A" % (t, where)))
            else:
                self.uart.feed(nmea("GPGGA,%s,,,,,0,00,99.99,,,,,," % t)
                               + nmea("GNRMC,%s,V,,,,,,,011226,,,N" % t))
            self.utc += 1
            await sleep_ms(1000)


class Simulator:
    def __init__(self, settings):
        self.settings = settings
        if settings.get("quick"):
            # The same rules on a shorter time scale, for demos and tests.
            SosButton.HOLD_MS = 300
            SosButton.CANCEL_MS = 400
            Outbox.RETRY_FIRST_MS = 500
            Outbox.RETRY_MAX_MS = 4000
        self.config = Config(settings["config"])
        self.board = SimBoard(settings["state_dir"], hardware_taps=settings.get("hardware_taps",
                                                                               False),
                              gnss=self.config.gnss, wifi_scan=self.config.wifi_scan)
        for bssid, rssi in settings.get("access_points", ()):
            self.hear(bssid, rssi)
        self.receiver = Receiver(self.board.gnss) if self.board.gnss is not None else None
        self.board.battery = settings.get("battery", 90)
        self.wearable = Wearable(self.board, self.config, [])
        self.link = None
        self.task = None

    async def open_link(self):
        if self.settings.get("link") == "ble":
            from vigil_fw.ble_link import BleLink
            from vigil_gateway.bumble_air import open_device
            from vigil_tools.aioble_bumble import Aioble
            dev = self.config.device_id
            device = await open_device(self.settings["ble_hci"], "F1:%02X:%02X:%02X:%02X:00" % (
                dev >> 24, (dev >> 16) & 255, (dev >> 8) & 255, dev & 255))
            aioble = Aioble(device)
            w = self.wearable
            self.link = BleLink(self.config, aioble, aioble.UUID,
                                urgent=w.urgent)
        else:
            from vigil_fw.mqtt_link import MqttLink
            if self.settings.get("quick"):
                MqttLink.RETRY_FIRST_MS = 100
                MqttLink.RETRY_MAX_MS = 1000
            self.link = MqttLink(self.config)
        self.wearable.links.append(self.link)

    def start(self):
        self.task = asyncio.create_task(self.wearable.run())

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.link.up = False  # no more sends; the socket stays open, as a dead radio's would

    async def watch_feedback(self):
        shown = 0
        while True:
            played = self.wearable.feedback.played
            while shown < len(played):
                print("vigil: feedback %s" % played[shown])
                shown += 1
            await sleep_ms(20)

    def hear(self, bssid, rssi):
        """The station hears access point `bssid` (hex) at `rssi` from its next scan on."""
        self.forget(bssid)
        self.board.station.access_points.append((b"sim-net", bytes.fromhex(bssid), 6, rssi, 3,
                                                 False))

    def forget(self, bssid):
        """The station no longer hears access point `bssid` (hex)."""
        mac = bytes.fromhex(bssid)
        heard = self.board.station.access_points
        heard[:] = [ap for ap in heard if ap[1] != mac]

    def access_points_heard(self):
        """[scan age s, [[short id hex, rssi], ...]] of the last scan, or None."""
        scanner = self.wearable.wifi_scanner
        heard = None if scanner is None else scanner.entries(ticks_ms())
        if heard is None:
            return None
        return [heard[0], [[sid.hex(), rssi] for sid, rssi in heard[1]]]

    async def raised_after(self, action, timeout_ms):
        stats = self.wearable.stats
        before = (stats["raised"], stats["taps_ignored"])
        await action()
        return await until(lambda: (stats["raised"], stats["taps_ignored"]) != before,
                           timeout_ms)

    async def command(self, words):
        name, args = words[0], words[1:]
        w, board = self.wearable, self.board
        if name == "sos":
            ok = await self.raised_after(lambda: board.sos_button.hold(SosButton.HOLD_MS + 100),
                                         SosButton.CANCEL_MS + 2000)
            say("SOS raised" if ok else "SOS not raised (one already open?)")
        elif name == "duress":
            ok = await self.raised_after(lambda: board.duress_button.presses(
                DuressGesture.PRESSES), 2000)
            say("duress raised" if ok else "duress not raised (one already open?)")
        elif name == "tap" and not board.accel.hardware_taps and w.alarms.prompted() is None:
            # The wearable reads its accelerometer only while a prompt is open: nothing to do.
            say("double tap ignored: no prompt is open")
        elif name == "tap":
            async def tap():
                if board.accel.hardware_taps:
                    board.accel.hw_double_tap()
                else:
                    board.accel.feed(traces.double_tap(1500))
            raised, ignored = w.stats["raised"], w.stats["taps_ignored"]
            await self.raised_after(tap, 3000)
            if w.stats["raised"] > raised:
                say("double tap sent as the answer to the prompt")
            elif w.stats["taps_ignored"] > ignored:
                say("double tap ignored: no prompt is open")
            else:
                say("double tap not detected")
        elif name == "battery":
            board.battery = max(0, min(100, int(args[0])))
            say("battery %d%%" % board.battery)
        elif name in ("fix", "fix-lost", "nmea") and self.receiver is None:
            say("no GNSS module on this unit (start the sim with --gnss)")
        elif name == "fix":
            lat, lon = float(args[0]), float(args[1])
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError
            self.receiver.fix = (lat, lon, float(args[2]) if len(args) > 2 else 0.9)
            self.receiver.start()
            got = await until(lambda: w.gnss is not None and w.gnss.fix(ticks_ms()) is not None
                              and w.gnss.fix(ticks_ms())[3] <= 1, 3000)
            say("gnss fix %s %s" % (args[0], args[1]) if got else "gnss: no fix taken")
        elif name == "fix-lost":
            self.receiver.fix = None
            self.receiver.start()
            say("gnss fix lost")
        elif name == "nmea":
            self.board.gnss.feed((" ".join(args) + "\r\n").encode())
            say("nmea line sent")
        elif name in ("ap", "ap-gone") and self.config.wifi_scan is None:
            say("this unit does not scan for Wi-Fi (start the sim with --wifi-scan)")
        elif name == "ap":
            bssid = _bssid(args[0])
            rssi = int(args[1])
            if not -127 <= rssi <= 20:
                raise ValueError
            self.hear(bssid, rssi)
            say("access point %s at %d dBm in range" % (args[0], rssi))
        elif name == "ap-gone":
            self.forget(_bssid(args[0]))
            say("access point %s gone" % args[0])
        elif name == "wait-checkin":
            sent = w.stats["checkins"]
            ok = await until(lambda: w.stats["checkins"] > sent, int(args[0]) if args else 15000)
            say("check-in sent" if ok else "no check-in in time")
        elif name == "silent":
            self.stop()
            say("silent")
        elif name == "resume":
            if self.task is None:
                self.start()
            say("resumed")
        elif name == "wait":
            await sleep_ms(int(args[0]))
        elif name == "wait-sent":
            ok = await until(lambda: all(w.outbox.attempts[i] for i in w.outbox.oldest_first()),
                             int(args[0]) if args else 10000)
            say("every alarm sent" if ok else "not every alarm sent in time")
        elif name == "wait-acked":
            ok = await until(lambda: len(w.outbox) == 0, int(args[0]) if args else 10000)
            say("every alarm acknowledged" if ok else "not every alarm acknowledged in time")
        elif name == "status":
            say(json.dumps({"device": self.config.device_hex, "link_up": self.link.up,
                            "battery": board.battery, "outbox": len(w.outbox),
                            "location": None if w.gnss is None else w.gnss.fix(ticks_ms()),
                            "wifi": self.access_points_heard(),
                            "open": w.alarms.listing(),
                            "stats": w.stats}))
        elif name == "help":
            for usage, what in COMMANDS:
                say("%-16s %s" % (usage, what))
        else:
            say("unknown command %r (try help)" % name)


def _bssid(text):
    """A BSSID typed as a4:b1:c2:d3:e4:f5 (or with dashes, or none) as 12 hex digits; a
    ValueError if it is not one."""
    digits = text.replace(":", "").replace("-", "").lower()
    if len(digits) != 12:
        raise ValueError
    bytes.fromhex(digits)
    return digits


class LineReader:
    """stdin lines without blocking the loop, on MicroPython and on CPython."""

    def __init__(self):
        self.stream = asyncio.StreamReader(sys.stdin) if sys.implementation.name == \
            "micropython" else None

    async def readline(self):
        if self.stream is not None:
            return await self.stream.readline()
        return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.readline)


async def main():
    stdin = LineReader()
    settings = json.loads(await stdin.readline())
    sim = Simulator(settings)
    await sim.open_link()
    sim.start()
    asyncio.create_task(sim.watch_feedback())
    say("device %s ready" % sim.config.device_hex)
    while True:
        line = await stdin.readline()
        if not line:
            break
        words = line.decode().split("#")[0].split()
        if not words:
            continue
        if settings.get("echo"):
            say("> " + " ".join(words))
        if words[0] == "quit":
            break
        try:
            await sim.command(words)
        except (ValueError, IndexError):
            say("bad arguments for %s (try help)" % words[0])
    sim.stop()
    await sleep_ms(50)  # last output
    say("bye")


if __name__ == "__main__":
    asyncio.run(main())
