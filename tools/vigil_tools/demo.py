"""`vigil demo`: Vigil's job on its embedded defaults, told as a timeline.

Today it shows the protocol at work across the two real interpreters: the wearable's side runs
on the MicroPython unix port, the gateway's side on CPython, and every frame between them is
signed, verified and windowed exactly as the products do it.
"""
import json
import time

import vigil_protocol as p

from . import micropython

DEVICE = 0x00C0FFEE
KEY = bytes.fromhex("6b" * 32)  # demo key only: real keys come from provisioning

# The wearable's side, on MicroPython: sign uplinks, then judge downlinks handed back to it.
_WEARABLE = """
import sys, json
import vigil_protocol as p
key = p.DeviceKey(bytes.fromhex(sys.argv[1]))
dev = int(sys.argv[2])
mode = sys.argv[3]
if mode == "raise":
    c = p.CounterReservation(0, block=8)
    flash = []
    def persist(limit):
        flash.append(limit)
    out = []
    sos = c.take_with(persist)
    out.append(("SOS raised, held to confirm", p.encode(p.Alarm(dev, sos, p.SOS), key)))
    out.append(("covert duress gesture",
                p.encode(p.Alarm(dev, c.take_with(persist), p.DURESS), key)))
    out.append(("check-in, battery 76%",
                p.encode(p.CheckIn(dev, c.take_with(persist), battery=76, interval=300), key)))
    print(json.dumps({"frames": [(why, f.hex()) for why, f in out], "flash": flash}))
else:
    window = p.ReplayWindow(size=16)
    duress = int(sys.argv[4])
    for item in json.loads(sys.stdin.read()):
        why, hexframe = item
        try:
            f = p.decode(bytes.fromhex(hexframe), key, p.DOWN)
            verdict = window.accept(f.counter, f.tag)
            if verdict != p.NEW:
                shown = "again: nothing new shown"
            elif f.ref == duress:
                shown = "stops retransmitting; shows nothing (duress)"
            elif f.NAME == "ack" and f.stage == p.RECEIVED:
                shown = "one short buzz: the gateway has it (not that help is coming)"
            elif f.NAME == "ack":
                shown = "two buzzes: the responders have it"
            elif f.action == p.PROMPT_DOUBLE_TAP:
                shown = "prompt pattern: tap twice if you need help"
            else:
                shown = "pattern for " + f.code_name
            print(json.dumps([why, "accepted " + f.NAME + " " + f.code_name, shown]))
        except p.RemoteProtocolError as e:
            print(json.dumps([why, "rejected: " + e.reason, "nothing"]))
"""


def register(sub):
    demo = sub.add_parser("demo", help="Vigil end to end on its embedded defaults")
    demo.set_defaults(func=run)


class Timeline:
    def __init__(self):
        self.start = time.monotonic()

    def say(self, who, what):
        print("%7.1f ms  %-9s %s" % ((time.monotonic() - self.start) * 1000, who, what))


def run(args=None):
    t = Timeline()
    print("Vigil demo: wearable on MicroPython, gateway on CPython, one device key\n")
    raised = json.loads(micropython.run(_WEARABLE, [KEY.hex(), DEVICE, "raise"]))
    t.say("wearable", "reserved counters in flash up to %s before sending" % raised["flash"])
    frames = []
    for why, hexframe in raised["frames"]:
        data = bytes.fromhex(hexframe)
        frames.append(data)
        t.say("wearable", "%s -> %d-byte frame %s" % (why, len(data), hexframe))

    key = p.DeviceKey(KEY)
    window = p.ReplayWindow()
    rejected = {}

    def gateway_receives(data, label):
        try:
            header = p.peek(data)  # device id first: it selects the key
            frame = p.decode(data, key, p.UP)
            verdict = window.accept(frame.counter, frame.tag)
            t.say("gateway", "%s: %s %s counter %d from %08x -> %s" % (
                label, frame.NAME, getattr(frame, "kind_name", ""), frame.counter,
                header.device_id, verdict))
            return frame, verdict
        except p.RemoteProtocolError as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            t.say("gateway", "%s: rejected (%s): %s" % (label, exc.reason, exc))
            return None, None

    sos, _ = gateway_receives(frames[0], "SOS")
    duress, _ = gateway_receives(frames[1], "duress")
    gateway_receives(frames[2], "check-in")
    gateway_receives(frames[0], "SOS sent again (ack lost)")
    forged = bytearray(frames[0])
    forged[9] = p.FALL
    gateway_receives(bytes(forged), "SOS altered in transit")
    other = p.encode(p.Alarm(DEVICE, sos.counter, p.FALL), p.DeviceKey(bytes(32)))
    gateway_receives(other, "forged with a guessed key")

    downlinks = []
    dl_counter = [0]

    def downlink(frame_cls, ref, code, why):
        dl_counter[0] += 1
        data = p.encode(frame_cls(DEVICE, dl_counter[0], ref, code), key)
        downlinks.append((why, data.hex()))
        t.say("gateway", "%s -> signed %s (%d bytes)" % (why, frame_cls.NAME, len(data)))
        return data

    downlink(p.Ack, sos.counter, p.RECEIVED, "SOS on disk: RECEIVED")
    downlink(p.Ack, duress.counter, p.RECEIVED, "duress on disk: RECEIVED")
    downlink(p.Ack, sos.counter, p.DELIVERED, "responder backend accepted SOS: DELIVERED")
    again = downlink(p.Action, sos.counter, p.PROMPT_DOUBLE_TAP,
                     "responder asks the silent wearer: PROMPT_DOUBLE_TAP")
    downlinks.append(("the same prompt delivered twice", again.hex()))
    downlinks.append(("the wearable's own SOS reflected back at it", frames[0].hex()))

    replies = micropython.run(_WEARABLE, [KEY.hex(), DEVICE, "verify", duress.counter],
                              stdin=json.dumps(downlinks))
    for line in replies.splitlines():
        why, verdict, shown = json.loads(line)
        t.say("wearable", "%s: %s; %s" % (why, verdict, shown))

    answer = p.encode(p.Alarm(DEVICE, 4, p.DOUBLE_TAP, ref=sos.counter), key)
    frame, _ = gateway_receives(answer, "wearer taps twice")
    t.say("gateway", "DOUBLE_TAP answers alarm %d: the wearer confirms they need help"
          % frame.ref)
    print("\nrejected by reason: %s" % json.dumps(rejected, sort_keys=True))
    return 0
