"""Gestures are judged on the times their edges happened, not on when the input task got round
to them: on the MicroPython unix port, the duress button's edges come from another thread (as
the board's IRQs come while the event loop is held, e.g. by WLAN.scan()) while the loop is
blocked; only when it is free again does the input task read them from the edge ring.

Both ways round: four presses within a second are a duress alarm although the task sees them
all at once (judged when read, they would be bounces); four presses spread over 3.6 s are not
(judged when read, they would be inside the 3 s window)."""
import json
import subprocess

from fw_harness import KEY, ROOT
from test_supervision import HEAD

SCRIPT = HEAD + r"""
import _thread, time
from vigil_fw import inputs

w = Wearable(board, cfg, [Link()], log=lambda m: None)
ring = board.inputs

def presses(gap_ms):
    # the duress button as its IRQ sees it: four presses of 60 ms, gap_ms apart
    for _ in range(4):
        ring.push(inputs.DURESS_DOWN)
        time.sleep_ms(60)
        ring.push(inputs.DURESS_UP)
        time.sleep_ms(gap_ms)

async def main():
    task = asyncio.create_task(w.run())
    await asyncio.sleep_ms(300)
    _thread.start_new_thread(presses, (GAP_MS,))
    time.sleep_ms(BLOCK_MS)  # the event loop held: no task runs
    held_for = BLOCK_MS
    waiting = ring.count  # edges in the ring when the loop was free again
    t = 0
    while not w.stats["raised"] and t < 500:
        await asyncio.sleep_ms(20)
        t += 20
    print(json.dumps({"raised": w.stats["raised"], "waiting": waiting, "held_ms": held_for,
                      "after_block_ms": t, "open": [k for _, k, _ in w.alarms.listing()],
                      "restarts": w.stats["restarts"]}))
    task.cancel()

asyncio.run(main())
"""


def run(micropython, tmp_path, gap_ms, block_ms):
    cmd, env = micropython
    script = "ROOT = %r\nFS = %r\nKEY = %r\nGAP_MS = %d\nBLOCK_MS = %d\n" % (
        str(ROOT), str(tmp_path), KEY.hex(), gap_ms, block_ms) + SCRIPT
    proc = subprocess.run(cmd + ["-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_presses_made_while_the_loop_is_held_are_a_duress_alarm(micropython, tmp_path):
    report = run(micropython, tmp_path, gap_ms=150, block_ms=1500)  # the edges take 690 ms
    assert report["waiting"] == 8, report  # every edge was in the ring, none yet read
    assert report["raised"] == 1 and report["open"] == [2], report  # one DURESS
    assert report["after_block_ms"] <= 200 and report["restarts"] == 0, report


def test_four_presses_spread_past_the_window_are_not_although_read_at_once(micropython,
                                                                          tmp_path):
    report = run(micropython, tmp_path, gap_ms=1140, block_ms=5000)  # 3.6 s first to last
    assert report["waiting"] == 8, report
    assert report["raised"] == 0 and report["open"] == [], report
