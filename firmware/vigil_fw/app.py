# The wearable: inputs -> alarms -> persistent outbox -> links, and downlinks -> feedback.
#
# Rules:
#   a raised alarm is on flash (counter reserved, frame in the outbox, state saved) before
#     any link sees it, and before anything else the input task does can fail
#   every alarm goes out on every link that is up, and is retransmitted until a verified
#     downlink names its counter
#   downlinks count only once verified: MAC, direction, device id, replay window; the window
#     is kept on flash (seen.py), so a captured downlink is refused after a reboot too
#   a stored downlink (DELIVERED ack, responder action) that verifies is answered with a v2
#     receipt on every link that is up, a repeat too (its receipt may have been lost): the
#     gateway offers it again until one arrives
#   feedback is whatever alarms.py allows, and nothing at all while a duress alarm is open
#   the board's IRQs only record edges (inputs.EdgeRing); one input task judges the gestures
#     on the times the edges happened
#   the accelerometer's INT1 only sets a flag; the motion task then reads every sample in
#     the part's FIFO into buffers allocated at boot and feeds the man-down detectors (and the
#     software double-tap detector while a prompt is open). While the wearer is still it
#     sleeps until the part itself sees movement, or until the no-motion time is up
#   man-down (mandown.py): a fall or no motion starts a pre-alarm the wearer feels and
#     cancels with an SOS press (nothing sent); uncancelled, FALL or NO_MOTION is raised and
#     goes as an SOS goes. None starts while a FALL or NO_MOTION alarm is open. While a
#     duress alarm is open it runs and raises unfelt and unshown (the duress silence rule)
#   a task with nothing to do waits on a Flag with no timeout (parked); the sender sleeps
#     until its next retransmission is due; nothing polls, so an idle wearable can sleep
#   GNSS (gnss in the config, nmea.py): its task waits on the module's UART (a stream: it
#     sleeps in the scheduler until bytes come) and feeds nmea.Nmea; every alarm and check-in
#     carries the latest fix with its true age (extension 0x04; none before a first fix), and
#     with GNSS configured every one of them is sealed at 48 bytes, fix or none (SPEC
#     sections 4 and 13): a frame's size tells nothing. GNSS never cues the wearer, in duress
#     or not. Without gnss in the config nothing of it is loaded
#   beacons (beacons in the config, scan.py): an alarm goes out at once with what the last
#     scan heard and its true age, then its scan ends in a check-in, the open incident's
#     location update; a check-in while an alarm is open scans first. A unit with GNSS or
#     beacons configured seals every alarm and check-in at 48 bytes (one flag, _size)
#   Wi-Fi access points (wifi_scan in the config, wifiscan.py): the check-in task scans before
#     every N-th check-in, and nothing else starts a scan (an alarm never does: the ESP32's
#     scan sends probe requests). A frame with neither a fix nor a beacon carries the last
#     scan's access points (extension 0x06). wifi_scan too seals everything at 48 bytes
#   an alarm that finds no memory even after the reserve is spent is owed, not lost: the
#     input task raises it again every _OWED_RETRY_MS until it is on flash
#   a task that raises (MemoryError included) is logged, counted and started again; the
#     supervisor feeds the watchdog only while no task has been busy without progress for
#     STALL_MS (a parked task is healthy)
import asyncio
import gc
from array import array

import vigil_protocol
from vigil_protocol._compat import const
from vigil_protocol.frames import (
    ACKNOWLEDGED,
    DOUBLE_TAP,
    DURESS,
    FALL,
    FLAG_ALARM_OPEN,
    FLAG_LOW_BATTERY,
    FLAG_OUTBOX_PENDING,
    LOW_BATTERY,
    NO_MOTION,
    RECEIVED,
    SOS,
    Alarm,
    CheckIn,
    Receipt,
    decode,
    encode,
)
from vigil_protocol.mac import DOWN, UP, DeviceKey
from vigil_protocol.window import NEW

from . import FIRMWARE_VERSION, gestures, inputs
from . import alarms as fsm
from .clock import Flag, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_for
from .counters import CounterStore
from .feedback import Feedback
from .link import Inbox
from .outbox import Outbox
from .seen import SeenDownlinks

_WATCHDOG_MS = const(30000)
_DEBOUNCE_MS = const(20)
_LOW_BATTERY_HYSTERESIS = const(5)
_CHECKIN_RETRY_MS = const(2000)
_RESERVE_BYTES = const(1024)
_OWED_RETRY_MS = const(200)  # an alarm owed for want of memory is raised again this soon
# A DOUBLE_TAP names its alarm within this many counters: v2 (10 bits), v1 (16 bits).
_MAX_TAP_GAP2 = const(1023)
_MAX_TAP_GAP1 = const(0xFFFF)
_TASKS = ("input", "motion", "sender", "downlink", "checkin", "feedback")  # (+ gnss, scan)
# What the accelerometer's INT1 signals (lis3dh.ON_*, written here so that the app loads no
# driver on the simulated board).
_ON_NOTHING = const(0)
_ON_MOVEMENT = const(1)
_ON_BATCH = const(2)
_FIFO_SAMPLES = const(32)
_SAMPLE_MS = const(10)  # 100 Hz
# mandown.py's events and outputs (it is loaded only when man-down is on)
_MD_CANCEL = const(2)
_MD_NONE = const(45)
_MD_CUE = const(99)
_MD_CANCELLED = const(120)
_MD_RAISE_FALL = const(102)
_MD_RAISE_NO_MOTION = const(110)
# With a source of location on, every alarm and check-in is sealed at this size (SPEC 13).
_LOCATED_SIZE = const(48)


class Wearable:
    # Tests shorten these; the fixed timings above are const(): no heap.
    SUPERVISE_MS = 2000
    STALL_MS = 10000      # a task busy this long without progress stops the watchdog being fed
    # The watchdog arms this long after boot: a technician who stops the firmware at the
    # console right after a reset (as provisioning does) is not reset in the middle of a copy.
    # A machine.WDT cannot be stopped once started.
    WATCHDOG_ARM_MS = 20000
    BATTERY_CHECK_MS = 60000  # between check-ins, how often a low battery is looked for
    HEALTHY_MS = 60000        # up this long: not a crash loop (on_healthy)

    def __init__(self, board, config, links, log=print):
        self.board = board
        self.config = config
        self.links = links
        self.log = log
        flash = board.flash
        # Man-down and the software tap detector read the accelerometer in the motion task.
        # First, and collected after: its modules' objects then lie low with the others.
        self.man_down = None
        accel = board.accel
        if config.man_down is not None and accel.present and (
                config.man_down[0] or config.man_down[1]):
            from .mandown import ManDown
            self.man_down = ManDown(*config.man_down)
        elif config.man_down is not None:
            log("vigil: man-down off: %s" % ("no accelerometer answers" if not accel.present
                                            else "fall and no-motion both off in the config"))
        self._motion = accel.present and (self.man_down is not None or not accel.hardware_taps)
        # x, y, z of each sample the FIFO holds, filled in place by accel.read_mg()
        self._samples = array("h", bytes(6 * _FIFO_SAMPLES)) if self._motion else None
        self._still_due = None  # when no motion is up if nothing moves (the motion task sleeps)
        # GNSS: configured, every alarm and check-in is sealed at one size (_LOCATED_SIZE),
        # whether the module answers or not: the size must not tell a fix from none, nor a
        # unit whose module failed. Its task (nmea.read_uart) runs only where there is a UART
        # to read. self.gnss is the parser, which keeps the latest fix.
        self.gnss = None
        if config.gnss is not None:
            from .nmea import Nmea
            self.gnss = Nmea()
            if board.gnss is None:
                log("vigil: gnss off: the module's UART did not open (%s)"
                    % getattr(board, "gnss_error", None))
        # Beacon scans: a Scanner (scan.py) given by main.py where the build has BLE; the
        # frame size follows the config alone, as for GNSS.
        self.scanner = None
        self.wifi_scanner = None
        if config.wifi_scan is not None:
            from .wifiscan import WifiScanner
            self.wifi_scanner = WifiScanner(board.wifi_scan, config.wifi_scan, log)
        # One flag for every source of location: configured, every alarm and check-in is
        # sealed at _LOCATED_SIZE (0: the sizes of SPEC section 2).
        self._size = _LOCATED_SIZE if (config.gnss is not None or config.beacons is not None
                                       or config.wifi_scan is not None) else 0
        gc.collect()
        # The heap is decided here, at boot: fixed tables first, then a reserve that the
        # alarm path may spend if the heap turns out too fragmented when an alarm is raised.
        self.key = DeviceKey(config.key)
        self.version = config.protocol  # of the frames this unit seals
        self.counters = CounterStore(flash, config.counter_floor)
        self.outbox = Outbox(flash)
        # Reading flash makes garbage: collected here, what is allocated next fills the holes
        # it leaves instead of landing above them (where it would split the free space).
        gc.collect()
        self.alarms = fsm.Alarms(flash)
        self.feedback = Feedback(board)
        self.inbox = Inbox()
        self.seen = SeenDownlinks(flash)  # the replay window, kept across reboots
        gc.collect()
        self.sos = gestures.SosButton()
        self.duress = gestures.DuressGesture()
        self.wake = Flag()      # the sender: a new alarm, or a link came up
        self._link_came_up = False
        self._down = bytearray(2)     # SOS, duress: 1 while pressed (debounced)
        self._edge_at = [0, 0]  # type: list  # when each button last changed
        # task name -> since when (ticks_ms) it has been busy without progress; None: parked
        self.beats = {}  # type: dict
        for name in _TASKS:
            self.beats[name] = None
        self.stats = {"raised": 0, "sent": 0, "checkins": 0, "downlinks": 0,
                      "taps_ignored": 0, "restarts": 0, "memory_retries": 0, "receipts": 0,
                      "prealarms": 0, "prealarms_cancelled": 0, "accel_reads": 0,
                      "rejected": {}}  # type: dict
        self.low_battery_reported = False
        self.use_watchdog = True   # safe mode (bootguard.py) runs without one
        self.on_healthy = None     # called once the wearable has run HEALTHY_MS
        self._reconcile()
        # By kind: ref + 1 of an alarm raised but not stored for want of memory (0: none).
        self._owed = array("L", [0] * (NO_MOTION + 1))
        gc.collect()
        self._reserve = bytearray(_RESERVE_BYTES)  # type: bytearray | None

    # -- state --------------------------------------------------------------------------------

    def _reconcile(self):
        """After a reboot: every alarm in the outbox has a lifecycle entry, and duress silence
        holds if a duress alarm is still open."""
        outbox = self.outbox
        for i in outbox.oldest_first():
            counter = outbox.counters[i]
            if outbox.kinds[i] != DOUBLE_TAP and counter not in self.alarms.open:
                self.alarms.add(counter, outbox.kinds[i])
        self._update_silence()

    def _update_silence(self):
        self.feedback.duress_open = self.alarms.any_of_kind(DURESS)

    def urgent(self):
        """An alarm other than a duress alarm is waiting to be sent or is still open: links
        should be reachable fast (the BLE link advertises quickly), so acks and responder
        actions get through. A duress alarm never makes it true: while one is open the radio
        is an idle wearable's (SPEC section 10), and acks reach it at the idle cadence."""
        outbox = self.outbox
        for i in range(len(outbox.used)):
            if outbox.used[i] and outbox.kinds[i] != DURESS:
                return True
        for alarm in self.alarms.open.values():
            if alarm >> 8 != DURESS:
                return True
        return False

    def _busy(self, name):
        self.beats[name] = ticks_ms()

    def _park(self, name):
        self.beats[name] = None

    def raise_alarm(self, kind, ref=0):
        """Make an alarm durable, then wake the sender. Returns its counter (None when the
        outbox is full of alarms that may not be evicted)."""
        try:
            stored = self._store(kind, ref)
        except MemoryError:
            # Too fragmented for this alarm just now: spend the reserve and try once more.
            self._spend_reserve()
            try:
                stored = self._store(kind, ref)
            except MemoryError:
                # Still no room: owed, never lost. The input task raises it again shortly,
                # once other tasks (restarted, or done) have let go of theirs.
                self._owed[kind] = ref + 1
                self.stats["memory_retries"] += 1
                self.board.inputs.flag.set()
                return None
        if stored is None:
            self.log("vigil: alarm not queued: outbox full of undelivered alarms")
            return None
        counter, kind, frame = stored
        try:
            self.alarms.add(counter, kind)
        except MemoryError:
            self._spend_reserve()
            self.alarms.add(counter, kind)
        self._update_silence()
        self.stats["raised"] += 1
        self.wake.set()
        if self.scanner is not None:
            self.scanner.wake.set()  # the alarm goes now; where the wearer is follows
        self.log("vigil: raised %s" % frame.hex())
        return counter

    def _store(self, kind, ref):
        """(counter, kind, frame) once the alarm is in the outbox on flash; None if it is
        full."""
        counter = self.counters.next()
        gap = _MAX_TAP_GAP2 if self.version == 2 else _MAX_TAP_GAP1
        if kind == DOUBLE_TAP and counter - ref > gap:
            # Too far from its alarm for the frame to name it (a long-open prompt, reboots):
            # the wearer is asking for help, so that is what goes out, as an alarm of its own.
            self.log("vigil: double tap %d counters after its alarm: raised as SOS"
                     % (counter - ref))
            kind, ref = SOS, 0
        now = ticks_ms()
        fix = self._fix(now)
        heard = self._heard(now, fix)
        frame = encode(Alarm(self.config.device_id, counter, kind, ref=ref, location=fix,
                             beacons=heard, wifi=self._access_points(now, fix, heard)),
                       self.key, self.version, self._size)
        if not self.outbox.add(counter, kind, frame):
            return None
        return counter, kind, frame

    def _pay_owed(self):
        """Raise every alarm owed for want of memory (it owes itself again if there is still
        none)."""
        owed = self._owed
        for kind in range(len(owed)):
            if owed[kind]:
                ref = owed[kind] - 1
                owed[kind] = 0
                self.raise_alarm(kind, ref)

    def _spend_reserve(self):
        self._reserve = None
        self.stats["memory_retries"] += 1
        gc.collect()

    # -- inputs -------------------------------------------------------------------------------

    async def input_task(self):
        """Every button edge and tap-engine interrupt, in the order and at the time it
        happened. Sleeps until the next edge, or until the SOS hold or cancel time is up."""
        ring = self.board.inputs
        man_down = self.man_down
        while True:
            due = self.sos.due_at()
            if man_down is not None:
                pre = man_down.due_at()  # the pre-alarm's next cue, or the end of its window
                if pre is not None and (due is None or ticks_diff(pre, due) < 0):
                    due = pre
            if any(self._owed):  # an alarm raised but not yet stored (no memory)
                soon = ticks_add(ticks_ms(), _OWED_RETRY_MS)
                if due is None or ticks_diff(soon, due) < 0:
                    due = soon
            self._park("input")
            if due is None:
                await ring.flag.wait()
            else:
                await wait_for(ring.flag, max(0, ticks_diff(due, ticks_ms())))
            self._busy("input")
            while True:
                code = ring.pop()
                if code < 0:
                    break
                self._on_edge(code, ring.time)
            self._on_sos(self.sos.feed(gestures.TICK, ticks_ms()))
            if man_down is not None:
                self._on_man_down(man_down.tick(ticks_ms()))
            self._pay_owed()

    def _on_edge(self, code, t):
        if code == inputs.TAP:
            if self.board.accel.double_tapped():
                self.on_double_tap()
            return
        button = code >> 1  # 0: SOS, 1: duress
        down = 1 - (code & 1)
        if down == self._down[button] or ticks_diff(t, self._edge_at[button]) < _DEBOUNCE_MS:
            return  # no change of level, or a bounce
        self._down[button] = down
        self._edge_at[button] = t
        if button == 0:
            if down and self.man_down is not None:
                # A press cancels a pre-alarm; held on, it is an SOS as ever.
                self._on_man_down(self.man_down.step(_MD_CANCEL, t))
            self._on_sos(self.sos.feed(gestures.DOWN if down else gestures.UP, t))
        elif down and self.duress.press(t):
            # No cue of any kind, and nothing on the device can cancel it.
            if self.alarms.pending_kind(DURESS) is None:
                self.raise_alarm(DURESS)

    def _on_sos(self, out):
        if out == "armed":
            self.feedback.show("sos_armed")
        elif out == "cancelled":
            self.feedback.show("sos_cancelled")
        elif out == "raise":
            if self.alarms.pending_kind(SOS) is None:
                self.raise_alarm(SOS)
            self.feedback.show("sos_raised")

    # -- the accelerometer: man-down and the software tap detector ------------------------------

    async def motion_task(self):
        """Woken by the accelerometer's INT1 (its FIFO watermark, or movement after a still
        spell), or by the app (a prompt opened, a pre-alarm cancelled): reads every sample
        waiting in the part's FIFO into buffers allocated at boot and feeds the detectors,
        then says what INT1 should signal next. Nothing is allocated per batch."""
        accel = self.board.accel
        man_down = self.man_down
        out = self._samples
        if out is None:
            return  # (never: the task runs only where the buffers were made)
        accel.start()
        mode = -1
        read_at = ticks_ms()
        taps = None
        while True:
            self._busy("motion")
            n = accel.read_mg(out)
            now = ticks_ms()
            self.stats["accel_reads"] += 1
            if mode == _ON_MOVEMENT and man_down is not None:
                # The part took samples all along; those no longer in its FIFO were still
                # (it would have said otherwise): they count towards no motion.
                unseen = ticks_diff(now, read_at) // _SAMPLE_MS - n
                if unseen > 0:
                    self._man_down_report(man_down.skip(unseen))
            read_at = now
            prompted = not accel.hardware_taps and self.alarms.prompted() is not None
            if not prompted:
                taps = None
            i = 0
            while i < 3 * n:  # (a range() would be an object per batch)
                x, y, z = out[i], out[i + 1], out[i + 2]
                if man_down is not None:
                    self._man_down_report(man_down.feed(x, y, z))
                if taps is not None and taps.feed(x, y, z):
                    self.on_double_tap()
                i += 3
            if prompted and taps is None:
                # Afresh for each prompt, from the next batch on: the answer is a double tap
                # after the prompt, never one from before it.
                from .taps import DoubleTapDetector  # (loaded only by a part without
                taps = DoubleTapDetector()           # a tap engine, once prompted)
            if taps is not None or man_down is not None and not man_down.resting():
                want = _ON_BATCH
            else:
                want = _ON_NOTHING if man_down is None else _ON_MOVEMENT
            if want != mode:
                accel.wake_on(want)
                mode = want
                if want == _ON_MOVEMENT and accel.moving():
                    continue  # it moved as INT1 was switched: no edge would come
            # While still, the no-motion time is kept by the supervisor's round (run()), not
            # by a timeout here: a wait with a timeout holds two tasks' worth of heap for as
            # long as the wearer keeps still.
            self._still_due = None
            if mode == _ON_MOVEMENT and man_down is not None:
                left = man_down.still_left_ms()
                if left is not None:
                    self._still_due = ticks_add(now, left)
            self._park("motion")
            await accel.flag.wait()

    def _man_down_report(self, event):
        """A detector reported (event >= 0): the pre-alarm starts, unless one is on already or
        a FALL or NO_MOTION alarm is open."""
        man_down = self.man_down
        if event < 0 or man_down is None or self.alarms.any_of_kind(FALL) or \
                self.alarms.any_of_kind(NO_MOTION):
            return
        out = man_down.step(event, ticks_ms())
        if out != _MD_NONE:
            self.stats["prealarms"] += 1
            self.log("vigil: man-down pre-alarm (%s)" % ("fall" if event == 0 else "no motion"))
            self._on_man_down(out)
            self.board.inputs.flag.set()  # the input task keeps the pre-alarm's time

    def _on_man_down(self, out):
        if out == _MD_CUE:
            self.feedback.show("prealarm")
        elif out == _MD_CANCELLED:
            self.stats["prealarms_cancelled"] += 1
            self.log("vigil: man-down pre-alarm cancelled")
            self.feedback.show("sos_cancelled")
            self.board.accel.flag.set()  # the detectors start afresh: read on
        elif out == _MD_RAISE_FALL or out == _MD_RAISE_NO_MOTION:
            kind = FALL if out == _MD_RAISE_FALL else NO_MOTION
            if self.alarms.pending_kind(kind) is None:
                self.raise_alarm(kind)
            self.feedback.show("sos_raised")

    def on_double_tap(self):
        counter = self.alarms.prompted()
        if counter is None:
            self.stats["taps_ignored"] += 1  # no prompt open: a tap must never raise anything
            return
        self.raise_alarm(DOUBLE_TAP, ref=counter)
        self.feedback.show(self.alarms.apply(counter, fsm.EV_DOUBLE_TAP))

    async def feedback_task(self):
        while True:
            self._park("feedback")
            await self.feedback.ready.wait()
            self._busy("feedback")
            await self.feedback.play_queued()

    # -- links --------------------------------------------------------------------------------

    def _a_link_is_up(self):
        for link in self.links:
            if link.up:
                return True
        return False

    def _link_up(self):
        """Called by a link each time it comes up: everything waiting goes out now."""
        self._link_came_up = True
        self.wake.set()

    async def sender_task(self):
        outbox = self.outbox
        while True:
            self._busy("sender")
            wait_ms = None  # parked until an alarm is raised or a link comes up
            if self._a_link_is_up():
                if self._link_came_up:
                    self._link_came_up = False
                    outbox.all_due()
                await self._send_due()
                wait_ms = outbox.wait_ms()
            self._park("sender")
            if wait_ms is None or not self._a_link_is_up():
                await self.wake.wait()
            else:
                await wait_for(self.wake, wait_ms)

    async def _send_due(self):
        outbox = self.outbox
        for i in outbox.due():
            if not self._a_link_is_up():
                return  # nothing could take it: leave the frame on flash unread
            self._busy("sender")  # progress: one frame at a time
            counter = outbox.counters[i]
            frame = outbox.frame(i)
            if frame is None:
                self.log("vigil: outbox entry %d unreadable on flash" % counter)
                outbox.sent(i)  # try again after its backoff
                continue
            if outbox.fresh[i]:
                frame = self._seal_age(i, frame)
            took = False
            for link in self.links:
                if link.up and await link.send(frame):
                    took = True
            outbox.sent(i)  # sent or not, the next try waits its backoff (or a link coming up)
            if took:
                self.stats["sent"] += 1
                self.log("vigil: tx %s" % frame.hex())
                self.feedback.show(self.alarms.apply(counter, fsm.EV_SENT))

    def _seal_age(self, i, frame):
        """An alarm about to be offered to a link for the first time: if it waited on the
        wearable (no link was up), seal it again with its age, so the gateway can tell the
        responder it is late. Nobody has seen its first sealing, so its counter is still
        unused on the air. An alarm from before a reboot keeps its frame (it may have gone
        out); its age then says 0, a lower bound like every age."""
        outbox = self.outbox
        outbox.fresh[i] = 0
        waited_ms = ticks_diff(ticks_ms(), outbox.raised_at[i])
        age = waited_ms // 1000
        if age < 1 or self.version != 2:
            return frame
        try:
            alarm = decode(frame, self.key, UP)
        except vigil_protocol.RemoteProtocolError:
            return frame  # (cannot happen to a frame this unit sealed; send it as it is)
        alarm.age = age
        # The fix and the scans it was raised with, as old as they are now (rounded up, as
        # every such age): never made to look newer than they are.
        late = (waited_ms + 999) // 1000
        fix = alarm.location
        if fix is not None and len(fix) == 4:
            alarm.location = (fix[0], fix[1], fix[2], fix[3] + late)
        if alarm.beacons is not None:
            alarm.beacons = (alarm.beacons[0] + late, alarm.beacons[1])
        if alarm.wifi is not None:
            alarm.wifi = (alarm.wifi[0] + late, alarm.wifi[1])
        frame = encode(alarm, self.key, 2, self._size)
        outbox.replace(i, frame)
        return frame

    async def downlink_task(self):
        inbox = self.inbox
        while True:
            self._park("downlink")
            await inbox.ready.wait()
            self._busy("downlink")
            for frame, link_name in inbox.take():
                taken = self.on_downlink(frame, link_name)
                if taken is not None:
                    await self._send_receipt(taken)

    def _reject(self, reason):
        self.stats["rejected"][reason] = self.stats["rejected"].get(reason, 0) + 1
        self.log("vigil: rx rejected (%s)" % reason)

    def on_downlink(self, data, link_name):
        """Verify and apply one downlink. Returns the counter of a stored downlink (not a
        RECEIVED ack) to answer with a receipt, or None."""
        try:
            frame = decode(data, self.key, DOWN)
            if frame.device_id != self.config.device_id:
                self._reject("device_mismatch")
                return
            verdict = self.seen.check(frame.counter, frame.tag)
        except vigil_protocol.RemoteProtocolError as exc:  # loads the error classes if need be
            self._reject(exc.reason)
            return
        stored = frame.NAME != "ack" or frame.stage != RECEIVED
        if verdict != NEW:
            # The same downlink again: nothing new to show, but the gateway offers a stored
            # one again only when it has no receipt for it.
            return frame.counter if stored and self.version == 2 else None
        self.stats["downlinks"] += 1
        self.log("vigil: rx %s" % data.hex())
        # Any verified downlink naming a counter proves the gateway has that frame.
        self.outbox.remove(frame.ref)
        # Stages and actions are numbered in the order of their lifecycle events (alarms.py).
        if frame.NAME == "ack":
            event = fsm.EV_RECEIVED + frame.stage - RECEIVED
        else:
            event = fsm.EV_ACKNOWLEDGED + frame.action - ACKNOWLEDGED
        was_prompted = self.alarms.prompted() is not None
        pattern = self.alarms.apply(frame.ref, event)
        self.seen.record(frame.counter, frame.tag)  # after its effect: see seen.py
        self._update_silence()
        self.feedback.show(pattern)
        if not was_prompted and self.alarms.prompted() is not None:
            # A prompt opened: the software tap detector reads the accelerometer from now on
            # (the answer is a double tap after the prompt, never one from before it).
            if not self.board.accel.hardware_taps:
                self.board.accel.flag.set()
        return frame.counter if stored and self.version == 2 else None

    async def _send_receipt(self, downlink):
        """Best effort, like a check-in: never stored, never retransmitted."""
        frame = encode(Receipt(self.config.device_id, self.counters.next(), downlink),
                       self.key, 2)
        for link in self.links:
            if link.up:
                await link.send(frame)
        self.stats["receipts"] += 1

    # -- check-ins and battery ----------------------------------------------------------------

    async def checkin_task(self):
        while True:
            self._busy("checkin")
            battery = self.board.battery_percent()
            low = battery <= self.config.low_battery_pct
            if low and not self.low_battery_reported:
                self.low_battery_reported = True
                if self.alarms.pending_kind(LOW_BATTERY) is None:
                    self.raise_alarm(LOW_BATTERY)
                    self.feedback.show("low_battery")
            elif battery > self.config.low_battery_pct + _LOW_BATTERY_HYSTERESIS:
                self.low_battery_reported = False
            scanner = self.scanner
            if scanner is not None and (scanner.at_checkin or self.alarms.open) \
                    and self._a_link_is_up():
                await scanner.scan()  # a fresher place, above all while an alarm is open
            if self.wifi_scanner is not None and self._a_link_is_up():
                self.wifi_scanner.at_checkin()  # on the schedule only (wifiscan.py)
            # No link yet: try again soon rather than a whole interval later.
            wait_ms = self.config.checkin_interval_s * 1000
            if not await self.send_checkin(battery, low):
                wait_ms = min(wait_ms, _CHECKIN_RETRY_MS)
            self._park("checkin")
            end = ticks_add(ticks_ms(), wait_ms)
            while True:
                left = ticks_diff(end, ticks_ms())
                if left <= 0:
                    break
                await sleep_ms(min(left, self.BATTERY_CHECK_MS))
                # Crossing the threshold is news: raise it now, not an interval later.
                if not self.low_battery_reported and \
                        self.board.battery_percent() <= self.config.low_battery_pct:
                    break

    def _fix(self, now):
        return None if self.gnss is None else self.gnss.fix(now)

    def _heard(self, now, fix):
        """The last scan's beacons, as many as fit beside `fix` (SPEC section 4), or None."""
        return None if self.scanner is None else self.scanner.entries(now, fix is not None)

    def _access_points(self, now, fix, heard):
        """The last Wi-Fi scan's access points where the frame has neither a fix nor a
        beacon (a hint: SPEC section 4), or None."""
        wifi = self.wifi_scanner
        return None if wifi is None or fix is not None or heard is not None \
            else wifi.entries(now)

    async def scan_task(self):
        """A scan for each alarm raised (scan.py), then a check-in with what it heard: the
        open incident's location update. The alarm itself never waits for it."""
        scanner = self.scanner
        assert scanner is not None  # (the task runs only with one)
        while True:
            self._park("scan")
            await scanner.wake.wait()
            self._busy("scan")
            if await scanner.scan() and self.alarms.open:
                battery = self.board.battery_percent()
                await self.send_checkin(battery, battery <= self.config.low_battery_pct)

    async def send_checkin(self, battery, low):
        """Best effort: a check-in that finds no link up is skipped, never stored."""
        if not self._a_link_is_up():
            return False
        flags = ((FLAG_ALARM_OPEN if self.alarms.open else 0)
                 | (FLAG_OUTBOX_PENDING if len(self.outbox) else 0)
                 | (FLAG_LOW_BATTERY if low else 0))
        now = ticks_ms()
        fix = self._fix(now)
        heard = self._heard(now, fix)
        frame = encode(CheckIn(self.config.device_id, self.counters.next(), battery=battery,
                               flags=flags, interval=self.config.checkin_interval_s,
                               location=fix, beacons=heard,
                               wifi=self._access_points(now, fix, heard)),
                       self.key, self.version, self._size)
        sent = False
        for link in self.links:
            if link.up and await link.send(frame):
                sent = True
        if sent:
            self.stats["checkins"] += 1
        return sent

    # -- supervision --------------------------------------------------------------------------

    def tasks(self):
        """Every task the wearable runs: the name of each of its own (a constant string), then
        each link. Only these are kept for the supervisor's restarts, not a (function, args)
        tuple and a bound method per task: on a 45 KB heap that was ~450 bytes."""
        names = ["input", "sender", "downlink", "checkin", "feedback"]  # type: list
        if self._motion:
            names.append("motion")
        if self.gnss is not None and self.board.gnss is not None:
            names.append("gnss")
        if self.scanner is not None:
            names.append("scan")
        return names + self.links

    def _coroutine(self, task):
        """A fresh coroutine of `task` (one of tasks()), to start it or start it again."""
        if not isinstance(task, str):
            return task.run(self.inbox, self._link_up)  # a link
        if task == "input":
            return self.input_task()
        if task == "sender":
            return self.sender_task()
        if task == "downlink":
            return self.downlink_task()
        if task == "checkin":
            return self.checkin_task()
        if task == "feedback":
            return self.feedback_task()
        if task == "motion":
            return self.motion_task()
        if task == "scan":
            return self.scan_task()
        from .nmea import read_uart  # "gnss"
        return read_uart(self.board.gnss, self.gnss, self)

    async def run(self):
        """Start every task, then supervise them: a task that ended (they all run for ever)
        is logged, counted and started again; the watchdog is fed only while no task is
        stalled. Cancelling run() cancels every task. One loop here, checked once a period:
        gather, or a supervisor task of its own, would keep more on the heap."""
        self.log("vigil: firmware %s" % FIRMWARE_VERSION)
        self.log("vigil: device %s up, %d alarm(s) waiting in the outbox"
                 % (self.config.device_hex, len(self.outbox)))
        if hasattr(gc, "threshold"):
            # A collection after each quarter of the free heap allocated (the threshold counts
            # bytes allocated since the last collection, not a level of the heap). Garbage is
            # swept before it spreads over the free space, so what is made to last after boot
            # (a replay-window tag, a link's status) lands low, beside what lives already,
            # and the free space stays one block. Collected only when full, such objects
            # ended up strewn across it: 2-3.5 KB the largest free block, of 21 KB free.
            gc.collect()
            gc.threshold(gc.mem_free() // 4)
        specs = self.tasks()
        tasks = [None] * len(specs)  # type: list  # (appending would over-allocate the list)
        for i in range(len(specs)):
            tasks[i] = asyncio.create_task(self._coroutine(specs[i]))
        arm_at = ticks_add(ticks_ms(), self.WATCHDOG_ARM_MS)
        healthy_at = ticks_add(ticks_ms(), self.HEALTHY_MS)
        armed = False
        try:
            while True:
                await sleep_ms(self.SUPERVISE_MS)
                try:
                    for i in range(len(tasks)):
                        if tasks[i].done():
                            tasks[i] = await self._restart(tasks[i], specs[i])
                    if self._reserve is None:
                        self._reserve = bytearray(_RESERVE_BYTES)  # spent: take it back
                except MemoryError:
                    gc.collect()  # try again next period; the watchdog still decides below
                now = ticks_ms()
                due = self._still_due
                if due is not None and ticks_diff(now, due) >= 0:
                    self._still_due = None
                    self.board.accel.flag.set()  # the motion task reads, and finds it so
                if self.on_healthy is not None and ticks_diff(now, healthy_at) >= 0:
                    self.on_healthy()
                    self.on_healthy = None
                if not self.use_watchdog:
                    continue
                if not armed:
                    if ticks_diff(now, arm_at) < 0:
                        continue
                    self.board.watchdog_start(_WATCHDOG_MS)
                    armed = True
                stalled = None
                for name, since in self.beats.items():
                    if since is not None and ticks_diff(now, since) > self.STALL_MS:
                        stalled = name
                if stalled is None:
                    self.board.watchdog_feed()
                else:
                    self.log("vigil: stalled %s: watchdog will reset" % stalled)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise

    async def _restart(self, task, spec):
        name = spec if isinstance(spec, str) else "link:" + spec.name
        try:
            await task
            why = "returned"
        except Exception as exc:  # noqa: BLE001 - whatever it was, the task starts again
            why = repr(exc)
        self.stats["restarts"] += 1
        if name in self.beats:
            self.beats[name] = None
        gc.collect()
        self.log("vigil: task %s died (%s): restarting" % (name, why))
        return asyncio.create_task(self._coroutine(spec))
