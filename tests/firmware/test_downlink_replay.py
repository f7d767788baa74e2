"""The wearable's downlink window survives a reboot: a downlink captured once (on the air or
at the broker) and played again after the wearable restarted is refused, on the MicroPython
unix port with the firmware's real flash code."""
import json
import subprocess

import vigil_protocol as p
from fw_harness import KEY, ROOT

DEVICE = 0x00C0FFEE

SCRIPT = r"""
import json, sys
sys.path.append(ROOT + "/firmware")
sys.path.append(ROOT + "/protocol")
from vigil_fw import alarms as fsm
from vigil_fw.app import Wearable
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
S = json.loads(sys.stdin.read())
cfg = Config({"version": 1, "device_id": "00c0ffee", "key": S["key"],
              "mqtt": {"host": "127.0.0.1", "port": 1, "username": "00c0ffee", "password": "x"}})

def boot():
    return Wearable(SimBoard(S["fs"], hardware_taps=True), cfg, [], log=lambda m: None)

w = boot()
sos = w.raise_alarm(1)
states = []
receipts = []  # what on_downlink asks a receipt for
for name in ("received", "prompt", "help"):
    receipts.append(w.on_downlink(bytes.fromhex(S[name]), "mqtt"))
    states.append(fsm.STATES[w.alarms.state(sos)])
w = boot()  # a reboot: the window comes back from flash
receipts.append(w.on_downlink(bytes.fromhex(S["prompt"]), "mqtt"))  # played again
states.append(fsm.STATES[w.alarms.state(sos)])
receipts.append(w.on_downlink(bytes.fromhex(S["old"]), "mqtt"))     # below the window
print(json.dumps({"sos": sos, "states": states, "receipts": receipts,
                  "downlinks": w.stats["downlinks"],
                  "rejected": w.stats["rejected"], "played": w.feedback.queued}))
"""


def test_a_captured_downlink_played_after_a_reboot_is_refused(micropython, tmp_path):
    key = p.DeviceKey(KEY)
    sos = 1  # the first counter a new unit uses

    def down(counter, frame_cls, code):
        return p.encode(frame_cls(DEVICE, counter, sos, code), key).hex()

    settings = {"key": KEY.hex(), "fs": str(tmp_path),
                "received": down(40, p.Ack, p.RECEIVED),
                "prompt": down(41, p.Action, p.PROMPT_DOUBLE_TAP),
                "help": down(42, p.Action, p.HELP_DISPATCHED),
                "old": down(5, p.Action, p.RESOLVED)}
    cmd, env = micropython
    proc = subprocess.run(cmd + ["-c", "ROOT = %r\n" % str(ROOT) + SCRIPT], env=env,
                          input=json.dumps(settings), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["sos"] == sos
    # Without the window on flash the replayed prompt would take the alarm back to "prompted"
    # and cue the wearer again.
    assert report["states"] == ["received", "prompted", "help_dispatched", "help_dispatched"]
    assert report["downlinks"] == 0 and report["played"] == []
    assert report["rejected"] == {"stale_counter": 1}
    # A receipt for each stored downlink taken (not for a RECEIVED ack), and for the replayed
    # one too: the wearable has it, so the gateway may stop offering it; none for a refusal.
    assert report["receipts"] == [None, 41, 42, 41, None]
