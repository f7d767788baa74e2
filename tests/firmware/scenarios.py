# Firmware scenarios on the MicroPython unix port, driven by tests/firmware/test_scenarios.py.
#
#   micropython tests/firmware/scenarios.py < settings.json
#
# settings: {"scenario": name, "port": broker port, "fs": flash folder, "device": 8 hex,
#            "key": 64 hex, ...}. The script runs the real firmware core on a simulated board
# (buttons, accelerometer, battery, motor/LED, watchdog, flash in a host folder) and its real
# MQTT link against the broker, performs the scenario, and prints one line
# "REPORT <json>" with what the wearable did. The test plays the gateway on the broker side.
import json
import sys
import time

ROOT = __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else "."
sys.path.append(ROOT + "/firmware")
sys.path.append(ROOT + "/protocol")
sys.path.append(ROOT + "/tests/firmware")
sys.path.append(ROOT + "/tools/vigil_tools")  # traces.py

import asyncio  # noqa: E402

from vigil_fw import alarms as fsm  # noqa: E402
from vigil_fw.app import Wearable  # noqa: E402
from vigil_fw.config import Config  # noqa: E402
from vigil_fw.falls import NoMotionDetector  # noqa: E402
from vigil_fw.flash import Flash  # noqa: E402
from vigil_fw.gestures import SosButton  # noqa: E402
from vigil_fw.hal_sim import SimBoard  # noqa: E402
from vigil_fw.mqtt_link import MqttLink  # noqa: E402
from vigil_fw.outbox import Outbox  # noqa: E402
import traces  # noqa: E402

S = json.loads(sys.stdin.read())

# Short tunables: the same rules, on a test's time scale.
Outbox.RETRY_FIRST_MS = S.get("retry_ms", 300)
Outbox.RETRY_MAX_MS = 1000
SosButton.HOLD_MS = 300
SosButton.CANCEL_MS = 400
Wearable.BATTERY_CHECK_MS = 200
MqttLink.RETRY_FIRST_MS = 100
MqttLink.RETRY_MAX_MS = 500
for _name, _value in S.get("mqtt_timing", {}).items():  # e.g. {"ACK_MS": 1000}
    setattr(MqttLink, _name, _value)


def config(device):
    mqtt = {"host": "127.0.0.1", "port": S["port"], "username": device,
            "password": S.get("password", "unused"), "keepalive_s": S.get("keepalive_s", 30)}
    if S.get("ca_file"):
        mqtt.update(tls=True, ca_file=S["ca_file"])
    data = {"version": 1, "device_id": device, "key": S["key"],
            "checkin_interval_s": S.get("checkin_interval_s", 60), "mqtt": mqtt}
    if "man_down" in S:
        data["man_down"] = S["man_down"]
    if "gnss" in S:
        data["gnss"] = S["gnss"]
    if "beacons" in S:
        data["beacons"] = S["beacons"]
    if "wifi_scan" in S:
        data["wifi"] = {"ssid": "site-net", "password": "unused"}
        data["wifi_scan"] = S["wifi_scan"]
    return Config(data)


def boot(device, fs_dir, flash=None, links=True, log=None):
    """`log`: a list that gets (ticks_ms, line) for every console line (none are kept
    otherwise)."""
    cfg = config(device)
    # "uart_fails": a board whose GNSS UART did not open (the config still names the module)
    board = SimBoard(fs_dir, hardware_taps=S.get("hardware_taps", False), flash=flash,
                     gnss=None if S.get("uart_fails") else cfg.gnss, wifi_scan=cfg.wifi_scan)
    say = (lambda m: None) if log is None else (lambda m: log.append((time.ticks_ms(), m)))
    link_list = [MqttLink(cfg, log=say)] if links else []
    wearable = Wearable(board, cfg, link_list, log=say)
    if cfg.beacons is not None:  # as main.py gives it where the build has BLE
        from vigil_fw.scan import Scanner
        wearable.scanner = Scanner(Air(), *cfg.beacons)
    md = wearable.man_down
    if md is not None:
        # The same rules on a test's time scale: a cancel window and a no-motion time of a
        # few seconds (the config allows 10 s and 30 s at the least).
        md.cancel_ms = S.get("cancel_ms", md.cancel_ms)
        md.REPEAT_MS = S.get("repeat_ms", md.REPEAT_MS)
        if S.get("no_motion_test_s"):
            NoMotionDetector.MIN_S = 1
            md.still = NoMotionDetector(S["no_motion_test_s"])
    return wearable, board


async def until(predicate, timeout_ms=8000, step_ms=20):
    waited = 0
    while not predicate():
        if waited >= timeout_ms:
            return False
        await asyncio.sleep_ms(step_ms)
        waited += step_ms
    return True


def report(**fields):
    print("REPORT " + json.dumps(fields))


async def with_running(wearable, body):
    task = asyncio.create_task(wearable.run())
    await until(lambda: all(link.up for link in wearable.links), 5000)
    try:
        return await body()
    finally:
        task.cancel()
        for link in wearable.links:
            link._drop("scenario over")
        await asyncio.sleep_ms(10)


# -- scenarios ---------------------------------------------------------------------------------

async def duress():
    w, board = boot(S["device"], S["fs"])

    async def body():
        await board.duress_button.presses(4)
        acked = await until(lambda: len(w.outbox) == 0)
        await asyncio.sleep_ms(300)  # any late feedback would show up here
        return acked

    acked = await with_running(w, body)
    report(acked=acked, played=board.played, feedback=w.feedback.played, stats=w.stats,
           open=[(c, k, fsm.STATES[st]) for c, k, st in w.alarms.listing()])


async def duress_three_presses():
    w, board = boot(S["device"], S["fs"])

    async def body():
        await board.duress_button.presses(3)
        await asyncio.sleep_ms(800)

    await with_running(w, body)
    report(stats=w.stats, outbox=len(w.outbox))


async def retransmit():
    w, board = boot(S["device"], S["fs"])

    async def body():
        await board.sos_button.hold(400)
        raised = await until(lambda: w.stats["raised"] == 1)
        done = await until(lambda: len(w.outbox) == 0, S.get("wait_ms", 6000))
        # The ack may be handled before the sender is back from the send it answers (the
        # MQTT link does not block the loop while the PUBACK comes): let that send count. A
        # retransmission is at least 225 ms away, so none hides in these 50.
        await asyncio.sleep_ms(50)
        sent_at_ack = w.stats["sent"]
        await asyncio.sleep_ms(1500)  # would retransmit at least once more if not acked
        return raised, done, sent_at_ack

    raised, done, sent_at_ack = await with_running(w, body)
    report(raised=raised, acked=done, sent_at_ack=sent_at_ack, sent_after=w.stats["sent"],
           rejected=w.stats["rejected"], feedback=w.feedback.played,
           open=[(c, k, fsm.STATES[st]) for c, k, st in w.alarms.listing()])


async def prompt_and_double_tap():
    w, board = boot(S["device"], S["fs"])

    async def body():
        # A double tap with no alarm open: nothing may be sent.
        board.accel.feed(traces.double_tap(1500))
        await asyncio.sleep_ms(1200)
        ignored = w.stats["taps_ignored"]
        raised_before = w.stats["raised"]
        await board.sos_button.hold(400)
        prompted = await until(lambda: w.alarms.prompted() is not None)
        sos_counter = w.alarms.prompted()
        board.accel.feed(traces.double_tap(1500))
        confirmed = await until(lambda: sos_counter is not None
                                and w.alarms.state(sos_counter) == fsm.CONFIRMED)
        answered = await until(lambda: len(w.outbox) == 0)
        return ignored, raised_before, prompted, sos_counter, confirmed, answered

    ignored, raised_before, prompted, sos_counter, confirmed, answered = \
        await with_running(w, body)
    report(ignored_without_prompt=ignored, raised_before_sos=raised_before, prompted=prompted,
           sos_counter=sos_counter, confirmed=confirmed, answered=answered,
           feedback=w.feedback.played, stats=w.stats)


class PowerCut(Exception):
    pass


class FaultyFlash(Flash):
    """Cuts the power at flash operation number `cut_at` (1-based). A write that is cut
    leaves its first `keep` bytes on flash, as a torn page would."""

    def __init__(self, root, cut_at, keep, fat=False):
        Flash.__init__(self, root)
        self.ops = 0
        self.cut_at = cut_at
        self.keep = keep
        self.fat = fat  # rename over a file as unlink + rename, as FAT does
        self.log = []

    def _step(self, what):
        self.ops += 1
        self.log.append(what)
        return self.ops == self.cut_at

    def write(self, name, data):
        if self._step("write " + name):
            Flash.write(self, name, data[:self.keep(len(data))])
            raise PowerCut()
        Flash.write(self, name, data)

    def rename(self, old, new):
        if self.fat and self.read(new) is not None:
            if self._step("unlink " + new):
                raise PowerCut()
            Flash.remove(self, new)
        if self._step("rename " + new):
            raise PowerCut()
        Flash.rename(self, old, new)

    def remove(self, name):
        if self._step("remove " + name):
            raise PowerCut()
        Flash.remove(self, name)


async def power_cuts():
    """For every flash operation of raising alarm B (after alarm A) and of clearing A's ack:
    cut the power there, reboot, and let the rebooted wearable deliver what it holds."""
    results = []
    keeps = {"nothing": lambda n: 0, "half": lambda n: n // 2, "all": lambda n: n}
    case = 0
    for keep_name, fat in (("nothing", False), ("half", False), ("all", False), ("all", True)):
        cut_at = 1
        while True:
            case += 1
            device = "%08x" % (0x100 + case)
            fs_dir = S["fs"] + "/" + device
            # Boot 1: raise A cleanly, then B with the power cut at operation `cut_at`.
            w, _ = boot(device, fs_dir, links=False)
            a = w.raise_alarm(1)  # SOS
            flash = FaultyFlash(fs_dir, cut_at, keeps[keep_name], fat)
            w, _ = boot(device, fs_dir, flash=flash, links=False)
            b = None
            cut = False
            try:
                b = w.raise_alarm(2)  # DURESS
                w.outbox.remove(a)    # as if A's ack had arrived
            except PowerCut:
                cut = True
            ops = flash.log
            # Boot 2: power back, real link, deliver everything in the outbox.
            w2, _ = boot(device, fs_dir)

            async def body():
                c = w2.raise_alarm(4)  # FALL: a new alarm after the reboot
                await until(lambda: len(w2.outbox) == 0, 4000)
                return c

            c = await with_running(w2, body)
            results.append({"device": device, "keep": keep_name, "fat": fat,
                            "cut_at": cut_at, "cut": cut, "ops": ops, "a": a, "b": b,
                            "c": c, "left": len(w2.outbox)})
            if not cut:
                break
            cut_at += 1
    report(cases=results)


async def hardware_tap():
    """The accelerometer's own tap engine (LIS3DH interrupt) answers a prompt too."""
    w, board = boot(S["device"], S["fs"])

    async def body():
        board.accel.hw_double_tap()
        await asyncio.sleep_ms(300)
        ignored = w.stats["taps_ignored"]
        await board.sos_button.hold(400)
        prompted = await until(lambda: w.alarms.prompted() is not None)
        board.accel.hw_double_tap()
        answered = await until(lambda: w.stats["raised"] == 2 and len(w.outbox) == 0)
        return ignored, prompted, answered

    ignored, prompted, answered = await with_running(w, body)
    report(ignored=ignored, prompted=prompted, answered=answered, feedback=w.feedback.played)


async def battery():
    """Check-ins carry the battery level; crossing the threshold raises LOW_BATTERY once."""
    w, board = boot(S["device"], S["fs"])
    board.battery = 64

    async def body():
        await until(lambda: w.stats["checkins"] >= 1)
        board.battery = 9
        await until(lambda: w.stats["checkins"] >= 2, 8000)
        return w.stats["raised"]

    raised = await with_running(w, body)
    report(raised=raised, stats=w.stats, feedback=w.feedback.played)


class StalledLink:
    """A link that takes a frame and never returns: the sender is stuck mid-send."""
    name = "stalled"
    up = True
    status = ""

    async def run(self, inbox, woke):
        while True:
            await asyncio.sleep_ms(1000)

    async def send(self, frame):
        while True:
            await asyncio.sleep_ms(1000)


async def watchdog():
    Wearable.SUPERVISE_MS = 100
    Wearable.STALL_MS = 500
    Wearable.WATCHDOG_ARM_MS = 50
    w, board = boot(S["device"], S["fs"], links=False)
    task = asyncio.create_task(w.run())
    await asyncio.sleep_ms(2000)
    healthy = board.watchdog_feeds
    task.cancel()
    w2, board2 = boot(S["device"], S["fs"], links=False)
    w2.links = [StalledLink()]
    task = asyncio.create_task(w2.run())
    await asyncio.sleep_ms(200)
    w2.raise_alarm(1)  # the sender takes it to the stalled link and never comes back
    await asyncio.sleep_ms(1000)  # well past STALL_MS: feeding has stopped by now
    fed_soon_after = board2.watchdog_feeds
    await asyncio.sleep_ms(1000)
    report(healthy=healthy, timeout=board.watchdog_timeout, fed_soon_after=fed_soon_after,
           fed_later=board2.watchdog_feeds)
    task.cancel()


async def boot_config():
    """main.run() with a missing, then a broken config: a clear console message, no crash."""
    from vigil_fw import main
    root = S["fs"]
    print("missing:", main.run(root))
    with open(root + "/vigil.json", "w") as f:
        f.write(json.dumps({"version": 1, "device_id": "00c0ffee", "key": S["key"],
                            "mqtt": {"host": "h", "username": "00c0ffee", "password": "p",
                                     "port": 99999}}))
    print("broken:", main.run(root))
    # A wrong man-down setting stops the start in one line too, as does a wrong wifi_scan.
    good = {"version": 1, "device_id": "00c0ffee", "key": S["key"],
            "mqtt": {"host": "h", "username": "00c0ffee", "password": "p"}}
    for name, setting in (("man_down", {"fall": True, "no_motion_s": 20, "cancel_s": 30}),
                          ("wifi_scan", {"every": 0})):
        with open(root + "/vigil.json", "w") as f:
            f.write(json.dumps(dict(good, wifi={"ssid": "site-net"}, **{name: setting})))
        print(name + ":", main.run(root))
    report(done=True)




# -- the MQTT link against brokers that stall, garble or refuse -------------------------------

def link_lines(log):
    return [m for _, m in log if m.startswith("mqtt: ")]


def raised_at(log, since_ms):
    """When the first "vigil: raised" line at or after since_ms was logged, and its frame."""
    for t, m in log:
        if m.startswith("vigil: raised ") and time.ticks_diff(t, since_ms) >= 0:
            return t, m.split()[-1]
    return None, None


# mqtt_link.py's slot of link.n naming the packet a connection waits for (its private const
# _DUE): 2 while CONNACK is awaited, 9 while SUBACK is, 0 once the link is up.
LINK_DUE = 5


async def stall():
    """Buttons during a broker stall (S["port"] is the test's stalling proxy): a duress
    gesture while CONNACK is held (or, with "duress_when": "suback", once CONNACK is in and
    SUBACK is held), an SOS while a PUBACK is held. Reports how long after each gesture was
    complete its alarm was on flash, what the link awaited at the duress gesture, and what
    the wearable raised."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    link = w.links[0]
    task = asyncio.create_task(w.run())
    await asyncio.sleep_ms(S.get("first_press_ms", 300))
    if S.get("duress_when") == "suback":
        await until(lambda: link.n[LINK_DUE] == 9, 5000, 5)
    up_at_duress = link.up
    awaiting_at_duress = link.n[LINK_DUE]
    await board.duress_button.presses(3)
    done = time.ticks_ms()  # the gesture is complete at the fourth press
    await board.duress_button.hold(60)
    await until(lambda: w.stats["raised"] == 1, 3000, 5)
    up_after_duress = link.up  # still waiting for the packet held, if the stall held
    t, duress_frame = raised_at(log, done)
    duress_ms = None if t is None else time.ticks_diff(t, done)
    # Once a send is waiting for its PUBACK (held by the proxy), the SOS.
    busy = await until(lambda: link.n[0] or link.n[1], S.get("wait_up_ms", 15000),
                       5)
    inflight_at_sos = bool(link.n[0] > 0 or link.n[1] > 0)
    pressed = time.ticks_ms()
    await board.sos_button.hold(SosButton.HOLD_MS + 100)
    done = time.ticks_add(pressed, SosButton.HOLD_MS + SosButton.CANCEL_MS)
    await until(lambda: w.stats["raised"] == 2, 3000, 5)
    t, sos_frame = raised_at(log, pressed)
    sos_ms = None if t is None else time.ticks_diff(t, done)
    acked = await until(lambda: len(w.outbox) == 0, S.get("settle_ms", 30000))
    task.cancel()
    link._drop("scenario over")
    await asyncio.sleep_ms(10)
    report(up_at_duress=up_at_duress, awaiting_at_duress=awaiting_at_duress,
           up_after_duress=up_after_duress,
           busy=bool(busy), inflight_at_sos=inflight_at_sos,
           duress_ms=duress_ms, sos_ms=sos_ms, raised=[duress_frame, sos_frame], acked=acked,
           stats=w.stats, mqtt=link_lines(log), played=board.played)


async def garbled():
    """A broker whose first connections answer garbage (the test's proxy): the link says why
    in one line each time and connects again; the app carries on and its alarm goes out."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    link = w.links[0]
    task = asyncio.create_task(w.run())
    up = await until(lambda: link.connects >= S.get("connects", 1), S.get("wait_up_ms", 15000))
    counter = w.raise_alarm(1)  # SOS
    acked = await until(lambda: len(w.outbox) == 0, 10000)
    task.cancel()
    link._drop("scenario over")
    await asyncio.sleep_ms(10)
    report(up=up, counter=counter, acked=acked, restarts=w.stats.get("restarts", 0),
           mqtt=link_lines(log), status=link.status, connects=link.connects)


def count_wakeups():
    """Count every resumption of every task created from now on, by the name of its
    coroutine function: the scheduler's core and the asyncio package both start tasks."""
    wakes = {}
    core = asyncio.core
    make = core.create_task

    def counted(coro, name):
        value = None
        error = None
        while True:
            wakes[name] = wakes.get(name, 0) + 1
            try:
                out = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            error = None
            try:
                value = yield out
            except BaseException as exc:  # noqa: B036 - cancellation goes to the coroutine
                error = exc

    def create_task(coro, name=None):
        if name is None:
            name = str(coro).split("'")[1] if "'" in str(coro) else str(coro)
        return make(counted(coro, name))

    core.create_task = create_task
    asyncio.create_task = create_task
    return wakes


async def idle():
    """The wearable idle with its MQTT link up: how often each task wakes in S["idle_ms"],
    and how many keepalive pings went out meanwhile."""
    from vigil_fw import mqtt_packets
    wakes = count_wakeups()
    pings = [0]
    control = mqtt_packets.control

    def counted(buf, b, pid=0, topic=None):
        if b == 0xC0:  # PINGREQ
            pings[0] += 1
        return control(buf, b, pid, topic)

    mqtt_packets.control = counted
    w, board = boot(S["device"], S["fs"])
    task = asyncio.create_task(w.run(), "Wearable.run")  # the link's own run() is "run"
    up = await until(lambda: w.links[0].up, 5000)
    if S.get("gnss_talks"):
        Receiver(board, S["gnss_talks"])  # a module sending its burst each second
    await asyncio.sleep_ms(1500)  # the first check-in and its PUBACK
    before = dict(wakes)
    pings_before = pings[0]
    await asyncio.sleep_ms(S.get("idle_ms", 10000))
    during = {}
    for name, n in wakes.items():
        if n - before.get(name, 0):
            during[name] = n - before.get(name, 0)
    task.cancel()
    w.links[0]._drop("scenario over")
    await asyncio.sleep_ms(10)
    report(up=up, wakes=during, pings=pings[0] - pings_before, stats=w.stats)


async def link_diagnostics():
    """The MQTT link alone against each case of S["cases"] ({"host", "port", "password",
    "ca_file", "send"}): the console lines of its first attempt, and its status."""
    from vigil_fw.link import Inbox
    out = []
    for case in S["cases"]:
        mqtt = {"host": case.get("host", "127.0.0.1"), "port": case["port"],
                "username": S["device"], "password": case.get("password", "unused"),
                "keepalive_s": 30}
        if case.get("ca_file"):
            mqtt.update(tls=True, ca_file=case["ca_file"])
        cfg = Config({"version": 1, "device_id": S["device"], "key": S["key"], "mqtt": mqtt})
        lines = []
        link = MqttLink(cfg, log=lines.append)
        status_before = link.status
        task = asyncio.create_task(link.run(Inbox()))
        await until(lambda: lines, 15000)
        sent = None
        if link.up and case.get("send"):
            sent = await link.send(b"frame")
            await until(lambda: len(lines) >= 2, 5000)
        status = link.status
        task.cancel()
        await asyncio.sleep_ms(10)
        link._drop(None)
        out.append({"lines": lines, "status": status, "before": status_before, "sent": sent})
    report(cases=out)


async def waited():
    """A duress alarm raised while no link is up, sent 2.5 s later when one comes up."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    await board.duress_button.presses(4)
    task = asyncio.create_task(w.input_task())
    await until(lambda: w.stats["raised"] == 1, 3000, 5)
    task.cancel()
    await asyncio.sleep_ms(2500)
    slot = next(w.outbox.oldest_first())
    fresh_before = w.outbox.fresh[slot]

    async def body():
        acked = await until(lambda: len(w.outbox) == 0)
        return acked

    acked = await with_running(w, body)
    report(acked=acked, fresh_before=fresh_before,
           raised=[m.split()[-1] for _, m in log if m.startswith("vigil: raised ")],
           tx=[m.split()[-1] for _, m in log if m.startswith("vigil: tx ")],
           played=board.played)


# -- man-down ----------------------------------------------------------------------------------

def lying_double_tap(lying, seed=1):
    """A double tap on the wearable of a wearer lying as `lying` (the last sample of a fall)."""
    out = []
    for x, y, z in traces.double_tap(1800, seed=seed):
        out.append((x + lying[0], y + lying[1], z - 1000 + lying[2]))
    return out


async def answer_prompt(w, board, lying):
    """Once the gateway's prompt is open, the wearer lying as `lying` taps twice: (prompted,
    the prompted alarm's counter, confirmed)."""
    prompted = await until(lambda: w.alarms.prompted() is not None)
    counter = w.alarms.prompted()
    await asyncio.sleep_ms(300)
    board.accel.feed(lying_double_tap(lying))
    confirmed = await until(lambda: counter is not None
                            and w.alarms.state(counter) == fsm.CONFIRMED)
    return prompted, counter, confirmed


def man_down_report(w, board, log, **fields):
    report(feedback=w.feedback.played, played=len(board.played), stats=w.stats,
           outbox=len(w.outbox), state=w.man_down.state if w.man_down else None,
           lines=[m for _, m in log if "man-down" in m],
           open=[(c, k, fsm.STATES[st]) for c, k, st in w.alarms.listing()], **fields)


async def fall_cancelled():
    """A fall, its pre-alarm felt, an SOS press in the window: nothing is sent."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        await asyncio.sleep_ms(500)
        board.accel.feed(traces.forward_fall(seed=S.get("seed", 1)))
        started = await until(lambda: w.stats["prealarms"] == 1, 10000)
        await asyncio.sleep_ms(S.get("press_after_ms", 300))
        await board.sos_button.hold(60)
        await asyncio.sleep_ms(w.man_down.cancel_ms + 1000)  # past the window: nothing raised
        return started

    started = await with_running(w, body)
    man_down_report(w, board, log, started=started)


async def fall_alarm():
    """A fall and no press: FALL is raised; the gateway prompts; the wearer, lying, taps
    twice and DOUBLE_TAP answers the FALL alarm."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    fall = traces.side_fall(seed=S.get("seed", 2))

    async def body():
        await asyncio.sleep_ms(500)
        board.accel.feed(fall)
        started = await until(lambda: w.stats["prealarms"] == 1, 10000)
        raised = await until(lambda: w.stats["raised"] == 1, w.man_down.cancel_ms + 3000)
        prompted, counter, confirmed = await answer_prompt(w, board, fall[-1])
        answered = await until(lambda: len(w.outbox) == 0)
        return started, raised, prompted, counter, confirmed, answered

    started, raised, prompted, counter, confirmed, answered = await with_running(w, body)
    man_down_report(w, board, log, started=started, raised=raised, prompted=prompted,
                    counter=counter, confirmed=confirmed, answered=answered)


async def no_motion():
    """A wearer who stops moving: after the no-motion time the pre-alarm, after the window
    NO_MOTION. Reports when each came, and how often the accelerometer was read meanwhile;
    then, as for a fall, the gateway's prompt is answered by a double tap of the still
    wearer."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    walk = list(traces.walking(2, seed=3))

    async def body():
        await asyncio.sleep_ms(500)
        board.accel.feed(walk)
        moved_at = time.ticks_add(time.ticks_ms(), 2000)  # the walk's last step
        await asyncio.sleep_ms(2500)
        reads_before = w.stats["accel_reads"]  # from half a second after it
        started = await until(lambda: w.stats["prealarms"] == 1, 15000)
        pre_ms = time.ticks_diff(time.ticks_ms(), moved_at)
        reads = w.stats["accel_reads"] - reads_before
        raised = await until(lambda: w.stats["raised"] == 1, w.man_down.cancel_ms + 3000)
        prompted, counter, confirmed = await answer_prompt(w, board, walk[-1])
        acked = await until(lambda: len(w.outbox) == 0)
        return started, pre_ms, reads, raised, prompted, counter, confirmed, acked

    started, pre_ms, reads, raised, prompted, counter, confirmed, acked = await with_running(
        w, body)
    man_down_report(w, board, log, started=started, pre_ms=pre_ms, reads=reads, raised=raised,
                    prompted=prompted, counter=counter, confirmed=confirmed, acked=acked)


async def duress_then_fall():
    """A duress alarm open, then a fall: the pre-alarm runs and FALL is raised, and nothing
    of either is felt or seen."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        await board.duress_button.presses(4)
        await until(lambda: w.stats["raised"] == 1, 3000)
        board.accel.feed(traces.backward_fall(seed=S.get("seed", 3)))
        started = await until(lambda: w.stats["prealarms"] == 1, 10000)
        raised = await until(lambda: w.stats["raised"] == 2, w.man_down.cancel_ms + 3000)
        acked = await until(lambda: len(w.outbox) == 0)
        await asyncio.sleep_ms(300)  # any late feedback would show up here
        return started, raised, acked

    started, raised, acked = await with_running(w, body)
    man_down_report(w, board, log, started=started, raised=raised, acked=acked,
                    board_played=board.played)


async def double_taps_with_man_down():
    """Double taps beside the fall detector: with no prompt open, nothing; with one, the
    answer. Neither starts a pre-alarm."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        await asyncio.sleep_ms(500)
        for seed in range(1, 4):
            board.accel.feed(traces.wrist_double_tap(seed=seed))
            await asyncio.sleep_ms(1500)
        await asyncio.sleep_ms(3500)  # a fall would have been reported by now
        before = w.stats["prealarms"]
        await board.sos_button.hold(400)
        prompted = await until(lambda: w.alarms.prompted() is not None)
        counter = w.alarms.prompted()
        await asyncio.sleep_ms(300)
        board.accel.feed(traces.wrist_double_tap(seed=7))
        answered = await until(lambda: w.stats["raised"] == 2 and len(w.outbox) == 0)
        await asyncio.sleep_ms(3500)
        return before, prompted, counter, answered

    before, prompted, counter, answered = await with_running(w, body)
    man_down_report(w, board, log, before_prompt=before, prompted=prompted, counter=counter,
                    answered=answered)


async def accel_wakeups():
    """How often the motion task reads the accelerometer: while the wearer walks, and while
    still (after settling)."""
    w, board = boot(S["device"], S["fs"])

    async def body():
        await asyncio.sleep_ms(1000)
        board.accel.feed(traces.walking(6, seed=5))
        await asyncio.sleep_ms(500)
        before = w.stats["accel_reads"]
        await asyncio.sleep_ms(5000)
        walking = w.stats["accel_reads"] - before
        await asyncio.sleep_ms(1500)  # the walk ends; the sampler settles
        before = w.stats["accel_reads"]
        await asyncio.sleep_ms(5000)
        still = w.stats["accel_reads"] - before
        board.accel.feed(traces.bumps(11, seed=6))  # desk work: a knock every ~3 s
        await asyncio.sleep_ms(500)
        before = w.stats["accel_reads"]
        await asyncio.sleep_ms(10000)
        desk = w.stats["accel_reads"] - before
        return walking, still, desk

    walking, still, desk = await with_running(w, body)
    report(walking_per_s=walking / 5, still_per_s=still / 5, desk_per_s=desk / 10,
           stats=w.stats)


# -- GNSS ----------------------------------------------------------------------------------------

def nmea(body):
    check = 0
    for b in body.encode():
        check ^= b
    return ("$%s*%02X\r\n" % (body, check)).encode()


def epoch(utc_s, fix):
    """What a u-blox style receiver sends once a second: GGA, GSA, GSV, RMC; with a fix
    (51.50078 N, 0.12757 W, HDOP 0.9: 5 m) or without one (after losing it)."""
    t = "%02d%02d%02d.00" % (utc_s // 3600 % 24, utc_s // 60 % 60, utc_s % 60)
    if fix:
        gga = "GPGGA,%s,5130.0468,N,00007.6542,W,1,09,0.9,12.4,M,47.0,M,," % t
        rmc = "GNRMC,%s,A,5130.0468,N,00007.6542,W,0.02,,011226,,,A" % t
    else:
        gga = "GPGGA,%s,,,,,0,00,99.99,,,,,," % t
        rmc = "GNRMC,%s,V,,,,,,,011226,,,N" % t
    return (nmea(gga) + nmea("GNGSA,A,3,28,31,,,,,,,,,,,1.6,0.9,1.3")
            + nmea("GPGSV,3,1,12,28,76,017,38,31,45,120,41") + nmea(rmc))


class Receiver:
    """A GNSS module on the simulated board's UART: one burst a second, a fix or not, each
    burst fed in chunks of `chunk` bytes as a UART's receive interrupt would hand them over.
    `noise`: bytes put before each burst (a receiver's start-up junk, line noise)."""

    def __init__(self, board, chunk=32):
        self.board = board
        self.fix = True
        self.utc = 12 * 3600
        self.chunk = chunk
        self.noise = b""
        self.bursts = 0
        self.task = asyncio.create_task(self.run())

    async def run(self):
        while True:
            data = self.noise + epoch(self.utc, self.fix)
            for i in range(0, len(data), self.chunk):
                self.board.gnss.feed(data[i:i + self.chunk])
                await asyncio.sleep_ms(2)
            self.bursts += 1
            self.utc += 1
            await asyncio.sleep_ms(1000 - 2 * ((len(data) + self.chunk - 1) // self.chunk))

    def stop(self):
        self.task.cancel()


def fix(w):
    """The fix every frame sealed now would carry, or None."""
    return None if w.gnss is None else w.gnss.fix(time.ticks_ms())


def raised_lines(log):
    return [(t, m.split()[-1]) for t, m in log if m.startswith("vigil: raised ")]


def gnss_report(w, board, log, **fields):
    g = None if w.gnss is None else w.gnss.stats()
    report(stats=w.stats, played=board.played, feedback=w.feedback.played,
           raised=raised_lines(log), outbox=len(w.outbox),
           lines=[m for _, m in log if "gnss" in m],
           counters=None if g is None else {
               "sentences": g["sentences"], "bad_checksum": g["bad_checksum"],
               "bad_sentence": g["bad_sentence"], "overflow": g["overflow"],
               "ignored": g["ignored"]},
           **fields)


async def gnss_fix():
    """A fix on the UART, an SOS; the fix lost, a LOW_BATTERY alarm and a check-in with the
    old fix; the fix back, a check-in with a fresh one. Reports when the fix's epoch was
    first heard (ticks) before each frame, and when each alarm was raised."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    fixes = []  # (what, ticks when sealed, the parser's fix_ms then)

    async def body():
        rx = Receiver(board, S.get("chunk", 32))
        got = await until(lambda: fix(w) is not None, 3000, 5)
        await asyncio.sleep_ms(1200)
        fixes.append(("sos", w.gnss.fix_ms))
        await board.sos_button.hold(SosButton.HOLD_MS + 100)
        await until(lambda: w.stats["raised"] == 1, 3000, 5)
        rx.fix = False  # lost: the receiver goes on sending, without a fix
        await asyncio.sleep_ms(3500)
        fixes.append(("low_battery", w.gnss.fix_ms))
        board.battery = 9
        await until(lambda: w.stats["raised"] == 2, 3000, 5)
        at = time.ticks_ms()
        await w.send_checkin(9, True)
        fixes.append(("checkin_stale", w.gnss.fix_ms, at))
        rx.fix = True
        back = await until(lambda: fix(w)[3] <= 1, 3000, 5)
        at = time.ticks_ms()
        await w.send_checkin(9, True)
        fixes.append(("checkin_fresh", w.gnss.fix_ms, at))
        acked = await until(lambda: len(w.outbox) == 0)
        rx.stop()
        return got, back, acked

    got, back, acked = await with_running(w, body)
    gnss_report(w, board, log, got=got, back=back, acked=acked, fixes=fixes)


async def gnss_garbage():
    """Line noise, cut and overlong sentences and bad checksums around the receiver's bursts;
    an SOS before any fix (no location), then, once a fix got through, a duress alarm."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        bad = nmea("GPGGA,120000.00,5130.0468,N,00007.6542,W,1,09,0.9,12.4,M,47.0,M,,")
        junk = (b"\x00\xff\xfe$GPGGA,12" + b"\x55" * 40 + b"$GPRMC," + b"9" * 120 + b"\r\n"
                + bad[:-4] + b"00\r\n" + b"$$$**\r\n" + bytes([i * 7 % 256 for i in range(37)]))
        rx = Receiver(board, 7)
        rx.fix = False
        rx.noise = junk
        await asyncio.sleep_ms(2500)
        await board.sos_button.hold(SosButton.HOLD_MS + 100)
        raised = await until(lambda: w.stats["raised"] == 1, 3000, 5)
        no_fix = fix(w)
        rx.fix = True
        got = await until(lambda: fix(w) is not None, 3000, 5)
        await board.duress_button.presses(4)
        raised2 = await until(lambda: w.stats["raised"] == 2, 3000, 5)
        acked = await until(lambda: len(w.outbox) == 0)
        rx.stop()
        return raised, no_fix, got, raised2, acked

    raised, no_fix, got, raised2, acked = await with_running(w, body)
    gnss_report(w, board, log, raised_ok=raised, no_fix=no_fix, got=got, raised2=raised2,
                acked=acked)


async def gnss_duress():
    """A duress alarm with the receiver sending fixes all along, then a fix lost and found:
    nothing is felt or seen, ever; the frame carries the fix."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        rx = Receiver(board)
        await until(lambda: fix(w) is not None, 3000, 5)
        await board.duress_button.presses(4)
        raised = await until(lambda: w.stats["raised"] == 1, 3000, 5)
        acked = await until(lambda: len(w.outbox) == 0)
        rx.fix = False
        await asyncio.sleep_ms(2200)
        rx.fix = True
        await asyncio.sleep_ms(2200)
        await w.send_checkin(90, False)
        rx.stop()
        await asyncio.sleep_ms(300)  # any late feedback would show up here
        return raised, acked

    raised, acked = await with_running(w, body)
    gnss_report(w, board, log, raised_ok=raised, acked=acked)


async def gnss_restart():
    """The UART's read fails: the gnss task dies, is restarted by the supervisor, and reads
    the fixes that come after."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        board.gnss.fail(OSError(5))
        restarted = await until(lambda: w.stats["restarts"] >= 1, 5000, 5)
        rx = Receiver(board)
        got = await until(lambda: fix(w) is not None, 3000, 5)
        await board.sos_button.hold(SosButton.HOLD_MS + 100)
        acked = await until(lambda: w.stats["raised"] == 1 and len(w.outbox) == 0)
        rx.stop()
        return restarted, got, acked

    restarted, got, acked = await with_running(w, body)
    gnss_report(w, board, log, restarted=restarted, got=got, acked=acked,
                died=[m for _, m in log if m.startswith("vigil: task ")])


async def gnss_waited():
    """An SOS raised with a fix while no link is up, sent 3 s later when one comes up (the
    fix lost meanwhile): it goes sealed again with its age, and its fix as old as it is then."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    from vigil_fw.nmea import read_uart
    tasks = [asyncio.create_task(w.input_task()),
             asyncio.create_task(read_uart(board.gnss, w.gnss, w))]
    rx = Receiver(board)
    await until(lambda: fix(w) is not None, 3000, 5)
    await asyncio.sleep_ms(1100)
    fix_ms = w.gnss.fix_ms
    await board.sos_button.hold(SosButton.HOLD_MS + 100)
    await until(lambda: w.stats["raised"] == 1, 3000, 5)
    at_raise = fix(w)
    rx.fix = False
    await asyncio.sleep_ms(3000)
    for task in tasks:
        task.cancel()

    async def body():
        return await until(lambda: len(w.outbox) == 0)

    acked = await with_running(w, body)
    rx.stop()
    report(acked=acked, fix_ms=fix_ms, at_raise=at_raise,
           raised=[(t, m.split()[-1]) for t, m in log if m.startswith("vigil: raised ")],
           tx=[(t, m.split()[-1]) for t, m in log if m.startswith("vigil: tx ")])


# -- BLE beacons ---------------------------------------------------------------------------------
# The unix port has no `bluetooth`: Air stands in for aioble behind the part of its public
# interface the firmware uses, aioble.scan(duration_ms, interval_us, window_us, active) as an
# async context manager whose results (.adv_data, .rssi) come as an async iterator until the
# duration is over (micropython-lib's aioble/central.py). The beacons in BEACONS advertise every
# 100 ms (S["beacons_in_range"]: payloads as hex, with their RSSI); every scan is recorded (its
# arguments, when it ran).

BEACONS = []  # (advertising payload, rssi) of what is in range now
SCANS = []  # (ticks at start, ticks at end, duration_ms, interval_us, window_us, active)


class _Result:
    def __init__(self, adv_data, rssi):
        self.adv_data = adv_data
        self.rssi = rssi


class _Scan:
    def __init__(self, duration_ms, interval_us, window_us, active):
        self.args = (duration_ms, interval_us, window_us, active)
        self.started = 0
        self.sent = 0

    async def __aenter__(self):
        self.started = time.ticks_ms()
        return self

    async def __aexit__(self, *exc):
        SCANS.append((self.started, time.ticks_ms()) + self.args)

    def __aiter__(self):
        return self

    async def __anext__(self):
        # each beacon once every 100 ms, a little weaker each time, until the duration is up
        while True:
            if time.ticks_diff(time.ticks_ms(), self.started) >= self.args[0]:
                raise StopAsyncIteration
            if BEACONS:
                adv, rssi = BEACONS[self.sent % len(BEACONS)]
                self.sent += 1
                if self.sent % len(BEACONS) == 0:
                    await asyncio.sleep_ms(100)
                return _Result(adv, rssi - self.sent // 7)
            await asyncio.sleep_ms(100)


class Air:
    def scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        return _Scan(duration_ms, interval_us, window_us, active)


def beacons_report(w, board, log, **fields):
    report(stats=w.stats, played=board.played, feedback=w.feedback.played, scans=SCANS,
           raised=raised_lines(log), outbox=len(w.outbox),
           tx=[(t, m.split()[-1]) for t, m in log if m.startswith("vigil: tx ")],
           heard={"adverts": w.scanner.heard.adverts, "beacons": w.scanner.heard.beacons,
                  "other": w.scanner.heard.other, "scans": w.scanner.scans}, **fields)


async def beacons_alarm():
    """Beacons in range; an SOS (or, with S["duress"], a duress alarm): it goes out at once
    with nothing heard yet, then the scan it started ends in a check-in with what it heard;
    a LOW_BATTERY alarm raised later carries that scan with its age; the beacons gone, a scan
    and a check-in say nothing was heard."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    for adv, rssi in S["beacons_in_range"]:
        BEACONS.append((bytes.fromhex(adv), rssi))

    async def body():
        if S.get("duress"):
            await board.duress_button.presses(4)
        else:
            await board.sos_button.hold(SosButton.HOLD_MS + 100)
        raised = await until(lambda: w.stats["raised"] == 1, 3000, 5)
        scanned = await until(lambda: w.scanner.scans >= 1 and w.stats["checkins"] >= 2,
                              S["beacons"]["scan_ms"] + 3000, 5)
        await asyncio.sleep_ms(1200)
        board.battery = 9
        raised2 = await until(lambda: w.stats["raised"] == 2, 3000, 5)
        acked = await until(lambda: len(w.outbox) == 0)
        BEACONS.clear()
        await until(lambda: not w.scanner.running, S["beacons"]["scan_ms"] + 3000, 5)
        await w.scanner.scan()  # as a check-in while an alarm is open does
        before = w.stats["checkins"]
        await w.send_checkin(9, True)
        sent = w.stats["checkins"] > before
        await asyncio.sleep_ms(300)
        return raised, scanned, raised2, acked, sent

    raised, scanned, raised2, acked, sent = await with_running(w, body)
    beacons_report(w, board, log, raised_ok=raised, scanned=scanned, raised2=raised2,
                   acked=acked, sent=sent)


async def duress_and_checkin():
    """A duress alarm, then a check-in: two frames, of whatever size this unit seals."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)

    async def body():
        await board.duress_button.presses(4)
        acked = await until(lambda: w.stats["raised"] == 1 and len(w.outbox) == 0)
        sent = await w.send_checkin(90, False)
        return acked, sent

    acked, sent = await with_running(w, body)
    tasks = [t if isinstance(t, str) else "link:" + t.name for t in w.tasks()]
    report(acked=acked, sent=sent, location=fix(w), played=board.played,
           lines=[m for _, m in log if "gnss" in m], tasks=tasks)


# -- Wi-Fi access points as a hint ---------------------------------------------------------------

async def wifi_hint():
    """A unit with wifi_scan every 2 check-ins, check-ins every S["checkin_test_s"] (the config
    allows 10 at the least), three access points in range (S["access_points"]: BSSID hex,
    RSSI): check-ins go out on their schedule; an SOS, then a duress alarm, are raised between
    them; then the access points go. Every scan the board made is recorded with its time."""
    log = []
    w, board = boot(S["device"], S["fs"], log=log)
    w.config.checkin_interval_s = S["checkin_test_s"]
    for bssid, rssi in S["access_points"]:
        board.station.access_points.append((b"site-net", bytes.fromhex(bssid), 6, rssi, 3,
                                            False))
    at_duress = [0]

    async def body():
        first = await until(lambda: w.stats["checkins"] >= 1, 3000, 5)
        await board.sos_button.hold(SosButton.HOLD_MS + 100)
        sos = await until(lambda: w.stats["raised"] == 1, 3000, 5)
        await board.duress_button.presses(4)
        duress = await until(lambda: w.stats["raised"] == 2, 3000, 5)
        at_duress[0] = len(board.played)
        acked = await until(lambda: len(w.outbox) == 0)
        await until(lambda: w.stats["checkins"] >= 4, 8000, 5)
        board.station.access_points.clear()
        await until(lambda: w.stats["checkins"] >= 6, 8000, 5)
        return first, sos, duress, acked

    first, sos, duress, acked = await with_running(w, body)
    wifi = w.wifi_scanner
    report(first=first, sos=sos, duress=duress, acked=acked, stats=w.stats,
           scans=board.station.scans, scheduled=wifi.checkins, scanned=wifi.scans,
           every=wifi.every, played=board.played, played_at_duress=at_duress[0],
           raised=raised_lines(log),
           tx=[(t, m.split()[-1]) for t, m in log if m.startswith("vigil: tx ")])


def boot_gnss():
    """main.run() with the config S gives (its gnss setting among it)."""
    from vigil_fw import main
    with open(S["fs"] + "/vigil.json", "w") as f:
        f.write(json.dumps({"version": 1, "device_id": S["device"], "key": S["key"],
                            "mqtt": {"host": "h", "username": S["device"], "password": "p"},
                            "gnss": S["gnss"]}))
    main.run(S["fs"])


SCENARIOS = {"beacons_alarm": beacons_alarm, "wifi_hint": wifi_hint,
             "gnss_fix": gnss_fix, "gnss_garbage": gnss_garbage, "gnss_duress": gnss_duress,
             "gnss_restart": gnss_restart, "gnss_waited": gnss_waited,
             "duress_and_checkin": duress_and_checkin,
"fall_cancelled": fall_cancelled, "fall_alarm": fall_alarm, "no_motion": no_motion,
             "duress_then_fall": duress_then_fall,
             "double_taps_with_man_down": double_taps_with_man_down,
             "accel_wakeups": accel_wakeups,
"waited": waited, "duress": duress, "duress_three_presses": duress_three_presses,
             "retransmit": retransmit, "prompt_and_double_tap": prompt_and_double_tap,
             "power_cuts": power_cuts, "hardware_tap": hardware_tap, "battery": battery,
             "watchdog": watchdog, "boot_config": boot_config, "stall": stall, "garbled": garbled,
             "link_diagnostics": link_diagnostics, "idle": idle}

if S["scenario"] == "boot_gnss":
    boot_gnss()
else:
    asyncio.run(SCENARIOS[S["scenario"]]())
sys.exit(0)
