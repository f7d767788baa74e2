# A wearable's MQTT side whose downlinks are judged as the firmware judges them: the
# firmware's own replay window (firmware/vigil_fw/seen.py, SeenDownlinks, on CPython over a
# flash folder), and a receipt for every stored downlink that verifies, new or a repeat, as
# the firmware's app.on_downlink sends it. For the gateway tests and the PostgreSQL ones.
import sys
import threading
from pathlib import Path

import vigil_protocol as p
from gateway_harness import Device

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware"))  # the firmware core also runs on CPython
from vigil_fw.flash import Flash  # noqa: E402
from vigil_fw.seen import SeenDownlinks  # noqa: E402,F401


class WindowWearable(Device):
    """A v2 wearable's MQTT side whose downlinks are judged by the firmware's SeenDownlinks,
    kept on a flash folder (so a second connection of the same unit keeps its window)."""

    def __init__(self, port, device_id, key, flash_dir, **kwargs):
        self.seen = SeenDownlinks(Flash(str(flash_dir)))
        self.taken = []     # every downlink the window took as NEW, in order
        self.refused = []   # (counter, reason) of every downlink the window refused
        self.receipts = []  # the counters receipts were sent for
        self.wlock = threading.RLock()  # (the paho thread answers receipts; the test sends)
        Device.__init__(self, port, device_id, key, **kwargs)

    def _on_message(self, client, userdata, message):
        raw = bytes(message.payload)
        self.raw.append(raw)
        try:
            frame = p.decode(raw, self.key, p.DOWN)
            if frame.device_id != self.device_id:
                raise p.BadField("not for me")
            verdict = self.seen.check(frame.counter, frame.tag)
        except p.RemoteProtocolError as exc:
            counter = int.from_bytes(raw[5:9], "big") if len(raw) >= 9 else None
            with self.wlock:
                self.refused.append((counter, exc.reason))
            return
        stored = not (isinstance(frame, p.Ack) and frame.stage == p.RECEIVED)
        if verdict == p.NEW:
            with self.wlock:
                self.taken.append(frame)
                if not stored:
                    with self.lock:
                        self.acked[frame.ref] = self.acked.get(frame.ref, 0) + 1
            self.seen.record(frame.counter, frame.tag)
            self.downlinks.put(frame)
        if stored:  # a repeat too (app.on_downlink): its receipt may have been lost
            with self.wlock:
                self.receipts.append(frame.counter)
                receipt = p.encode(p.Receipt(self.device_id, self.next_counter(),
                                             frame.counter), self.key, 2)
            client.publish(self.up, receipt, qos=1)

    def next_counter(self):
        with self.wlock:
            self.counter += 1
            return self.counter

    def checkin2(self):
        return p.encode(p.CheckIn(self.device_id, self.next_counter(), 80, 0, 0), self.key, 2)

    def alarm2(self, kind=p.SOS):
        return p.encode(p.Alarm(self.device_id, self.next_counter(), kind), self.key, 2)

    def actions_taken(self):
        with self.wlock:
            return [f for f in self.taken if isinstance(f, p.Action)]
