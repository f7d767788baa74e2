# The wearable: inputs -> alarms -> persistent outbox -> links, and downlinks -> feedback.
#
# Rules:
#   a raised alarm is on flash (counter reserved, frame in the outbox, state saved) before
#     any link sees it
#   every alarm goes out on every link that is up, and is retransmitted until a verified
#     downlink names its counter
#   downlinks count only once verified: MAC, direction, device id, replay window
#   feedback is whatever alarms.py allows, and nothing at all while a duress alarm is open
#   every task reports progress; the supervisor feeds the watchdog only while all progress
#   the board's IRQs only set flags; these tasks do the work
import asyncio

import vigil_protocol
from vigil_protocol._compat import const
from vigil_protocol.frames import (
    ACKNOWLEDGED,
    DOUBLE_TAP,
    DURESS,
    FLAG_ALARM_OPEN,
    FLAG_LOW_BATTERY,
    FLAG_OUTBOX_PENDING,
    LOW_BATTERY,
    RECEIVED,
    SOS,
    Alarm,
    CheckIn,
    decode,
    encode,
)
from vigil_protocol.mac import DOWN, DeviceKey
from vigil_protocol.window import NEW, ReplayWindow

from . import FIRMWARE_VERSION, gestures
from . import alarms as fsm
from .clock import Flag, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_event
from .counters import CounterStore
from .feedback import Feedback
from .link import Inbox
from .outbox import Outbox
from .taps import DoubleTapDetector

_WATCHDOG_MS = const(30000)
_SENDER_IDLE_MS = const(200)
_BUTTON_TICK_MS = const(50)
_LOW_BATTERY_HYSTERESIS = const(5)
_CHECKIN_RETRY_MS = const(2000)


class Wearable:
    # Tests shorten these three; the fixed timings above are const(): no heap.
    SUPERVISE_MS = 1000
    STALL_MS = 10000      # a task silent this long stops the watchdog being fed
    # The watchdog arms this long after boot: a technician who stops the firmware at the
    # console right after a reset (as provisioning does) is not reset in the middle of a copy.
    # A machine.WDT cannot be stopped once started.
    WATCHDOG_ARM_MS = 20000

    def __init__(self, board, config, links, log=print):
        self.board = board
        self.config = config
        self.links = links
        self.log = log
        flash = board.flash
        self.key = DeviceKey(config.key)
        self.counters = CounterStore(flash, config.counter_floor)
        self.outbox = Outbox(flash)
        self.alarms = fsm.Alarms(flash)
        self.feedback = Feedback(board)
        self.inbox = Inbox()
        self.window = ReplayWindow(size=32)
        self.sos = gestures.SosButton()
        self.duress = gestures.DuressGesture()
        self.taps = DoubleTapDetector()
        self.wake = Flag()
        self.beats = {}  # type: dict  # task name -> when (ticks_ms) it last showed progress
        self.stats = {"raised": 0, "sent": 0, "checkins": 0, "downlinks": 0,
                      "taps_ignored": 0, "rejected": {}}  # type: dict
        self.low_battery_reported = False
        self._reconcile()

    # -- state --------------------------------------------------------------------------------

    def _reconcile(self):
        """After a reboot: every alarm in the outbox has a lifecycle entry, and duress silence
        holds if a duress alarm is still open."""
        for entry in self.outbox.oldest_first():
            if entry.kind != DOUBLE_TAP and entry.counter not in self.alarms.open:
                self.alarms.add(entry.counter, entry.kind)
        self._update_silence()

    def _update_silence(self):
        self.feedback.duress_open = self.alarms.any_of_kind(DURESS)

    def urgent(self):
        """An alarm is waiting to be sent or is still open: links should be reachable fast
        (the BLE link advertises quickly), so acks and responder actions get through."""
        return len(self.outbox) > 0 or bool(self.alarms.open)

    def beat(self, name):
        self.beats[name] = ticks_ms()

    def raise_alarm(self, kind, ref=0):
        """Make an alarm durable, then wake the sender. Returns its counter."""
        counter = self.counters.next()
        frame = encode(Alarm(self.config.device_id, counter, kind, ref=ref), self.key)
        if not self.outbox.add(counter, kind, frame):
            self.log("vigil: alarm not queued: outbox full of undelivered alarms")
            return None
        self.alarms.add(counter, kind)
        self._update_silence()
        self.stats["raised"] += 1
        self.log("vigil: raised %s" % frame.hex())
        self.wake.set()
        return counter

    # -- inputs -------------------------------------------------------------------------------

    async def sos_task(self):
        button = self.board.sos_button
        while True:
            self.beat("sos")
            event = await button.event(_BUTTON_TICK_MS)
            if event is None:
                out = self.sos.feed(gestures.TICK, ticks_ms())
            else:
                out = self.sos.feed(event[0], event[1])
            if out == "armed":
                await self.feedback.show("sos_armed")
            elif out == "cancelled":
                await self.feedback.show("sos_cancelled")
            elif out == "raise":
                if self.alarms.pending_kind(SOS) is None:
                    self.raise_alarm(SOS)
                await self.feedback.show("sos_raised")

    async def duress_task(self):
        button = self.board.duress_button
        while True:
            self.beat("duress")
            event = await button.event(1000)
            if event is not None and event[0] == gestures.DOWN and self.duress.press(event[1]):
                # No cue of any kind, and nothing on the device can cancel it.
                if self.alarms.pending_kind(DURESS) is None:
                    self.raise_alarm(DURESS)

    async def tap_task(self):
        accel = self.board.accel
        if accel.hardware_taps:
            while True:
                self.beat("taps")
                if await accel.double_tap(1000):
                    await self.on_double_tap()
        period = 1000 // self.taps.ODR_HZ
        while True:
            self.beat("taps")
            for sample in accel.samples():
                if self.taps.feed(sample[0], sample[1], sample[2]):
                    await self.on_double_tap()
            await sleep_ms(period)

    async def on_double_tap(self):
        counter = self.alarms.prompted()
        if counter is None:
            self.stats["taps_ignored"] += 1  # no prompt open: a tap must never raise anything
            return
        self.raise_alarm(DOUBLE_TAP, ref=counter)
        await self.feedback.show(self.alarms.apply(counter, fsm.EV_DOUBLE_TAP))

    # -- links --------------------------------------------------------------------------------

    def _a_link_is_up(self):
        for link in self.links:
            if link.up:
                return True
        return False

    async def sender_task(self):
        while True:
            self.beat("sender")
            for entry in self.outbox.due():
                if not self._a_link_is_up():
                    break  # nothing could take it: leave the frame on flash unread
                frame = self.outbox.frame(entry)
                if frame is None:
                    self.log("vigil: outbox entry %d unreadable on flash" % entry.counter)
                    self.outbox.sent(entry)  # try again after its backoff
                    continue
                took = False
                for link in self.links:
                    if link.up and await link.send(frame):
                        took = True
                if took:
                    self.outbox.sent(entry)
                    self.stats["sent"] += 1
                    self.log("vigil: tx %s" % frame.hex())
                    await self.feedback.show(self.alarms.apply(entry.counter, fsm.EV_SENT))
            await wait_event(self.wake, _SENDER_IDLE_MS)
            self.wake.clear()

    async def downlink_task(self):
        while True:
            self.beat("downlink")
            if not await wait_event(self.inbox.frames, 1000):
                continue
            for frame, link_name in self.inbox.take():
                await self.on_downlink(frame, link_name)

    def _reject(self, reason):
        self.stats["rejected"][reason] = self.stats["rejected"].get(reason, 0) + 1
        self.log("vigil: rx rejected (%s)" % reason)

    async def on_downlink(self, data, link_name):
        try:
            frame = decode(data, self.key, DOWN)
            if frame.device_id != self.config.device_id:
                self._reject("device_mismatch")
                return
            verdict = self.window.check(frame.counter, frame.tag)
        except vigil_protocol.RemoteProtocolError as exc:  # loads the error classes if need be
            self._reject(exc.reason)
            return
        self.window.record(frame.counter, frame.tag)
        if verdict != NEW:
            return  # the same downlink again: nothing new to show
        self.stats["downlinks"] += 1
        self.log("vigil: rx %s" % data.hex())
        # Any verified downlink naming a counter proves the gateway has that frame.
        self.outbox.remove(frame.ref)
        # Stages and actions are numbered in the order of their lifecycle events (alarms.py).
        if frame.NAME == "ack":
            event = fsm.EV_RECEIVED + frame.stage - RECEIVED
        else:
            event = fsm.EV_ACKNOWLEDGED + frame.action - ACKNOWLEDGED
        pattern = self.alarms.apply(frame.ref, event)
        self._update_silence()
        await self.feedback.show(pattern)

    # -- check-ins and battery ----------------------------------------------------------------

    async def checkin_task(self):
        while True:
            self.beat("checkin")
            battery = self.board.battery_percent()
            low = battery <= self.config.low_battery_pct
            if low and not self.low_battery_reported:
                self.low_battery_reported = True
                if self.alarms.pending_kind(LOW_BATTERY) is None:
                    self.raise_alarm(LOW_BATTERY)
                    await self.feedback.show("low_battery")
            elif battery > self.config.low_battery_pct + _LOW_BATTERY_HYSTERESIS:
                self.low_battery_reported = False
            # No link yet: try again soon rather than a whole interval later.
            wait_ms = self.config.checkin_interval_s * 1000
            if not await self.send_checkin(battery, low):
                wait_ms = min(wait_ms, _CHECKIN_RETRY_MS)
            start = ticks_ms()
            while ticks_diff(ticks_ms(), start) < wait_ms:
                self.beat("checkin")
                await sleep_ms(min(1000, wait_ms))
                # Crossing the threshold is news: raise it now, not an interval later.
                if not self.low_battery_reported and \
                        self.board.battery_percent() <= self.config.low_battery_pct:
                    break

    async def send_checkin(self, battery, low):
        """Best effort: a check-in that finds no link up is skipped, never stored."""
        up = False
        for link in self.links:
            if link.up:
                up = True
        if not up:
            return False
        flags = ((FLAG_ALARM_OPEN if self.alarms.open else 0)
                 | (FLAG_OUTBOX_PENDING if len(self.outbox) else 0)
                 | (FLAG_LOW_BATTERY if low else 0))
        frame = encode(CheckIn(self.config.device_id, self.counters.next(), battery=battery,
                               flags=flags, interval=self.config.checkin_interval_s), self.key)
        sent = False
        for link in self.links:
            if link.up and await link.send(frame):
                sent = True
        if sent:
            self.stats["checkins"] += 1
        return sent

    # -- supervision --------------------------------------------------------------------------

    def tasks(self):
        coros = [self.sos_task(), self.duress_task(), self.tap_task(), self.sender_task(),
                 self.downlink_task(), self.checkin_task()]
        for link in self.links:
            coros.append(link.run(self.inbox))
        return coros

    async def run(self):
        """Start every task, then supervise them: feed the watchdog only while every task and
        link shows progress, and raise the exception of a task that has ended (they all run
        for ever), as asyncio.gather would. Cancelling run() cancels every task. One loop
        here, checked once a period: gather, or a supervisor task of its own, would keep
        more on the heap."""
        self.log("vigil: firmware %s" % FIRMWARE_VERSION)
        self.log("vigil: device %s up, %d alarm(s) waiting in the outbox"
                 % (self.config.device_hex, len(self.outbox)))
        tasks = []
        for coro in self.tasks():
            tasks.append(asyncio.create_task(coro))
        progress = {}  # type: dict[str, int]  # link -> its progress count when last seen
        arm_at = ticks_add(ticks_ms(), self.WATCHDOG_ARM_MS)
        armed = False
        try:
            while True:
                await sleep_ms(self.SUPERVISE_MS)
                for task in tasks:
                    if task.done():
                        await task
                now = ticks_ms()
                if not armed:
                    if ticks_diff(now, arm_at) < 0:
                        continue
                    self.board.watchdog_start(_WATCHDOG_MS)
                    armed = True
                for link in self.links:  # a link shows progress by its count growing
                    name = "link:" + link.name
                    if progress.get(name) != link.progress:
                        progress[name] = link.progress
                        self.beats[name] = now
                stalled = []
                for name, when in self.beats.items():
                    if ticks_diff(now, when) > self.STALL_MS:
                        stalled.append(name)
                if stalled:
                    self.log("vigil: stalled %s: watchdog will reset" % ",".join(stalled))
                else:
                    self.board.watchdog_feed()
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
