"""The wearable's supervisor on the MicroPython unix port: a task that raises (MemoryError
included) is logged, counted and started again, and the wearable keeps raising alarms."""
import json
import subprocess

from fw_harness import KEY, ROOT

# The start of every device script here (test_edge_times.py's too): the firmware core on the
# simulated board, with a link that is up and takes every frame.
HEAD = r"""
import asyncio, json, sys
sys.path.append(ROOT + "/firmware")
sys.path.append(ROOT + "/protocol")
from vigil_fw.app import Wearable
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
from vigil_protocol.frames import decode
from vigil_protocol.mac import UP
cfg = Config({"version": 1, "device_id": "00c0ffee", "key": KEY,
              "mqtt": {"host": "127.0.0.1", "port": 1, "username": "00c0ffee", "password": "x"}})
board = SimBoard(FS, hardware_taps=True)
log = []

class Link:
    # Up, takes every frame (kept in `taken`)
    name = "link"
    up = True
    status = ""
    taken = []

    async def run(self, inbox, woke):
        while True:
            await asyncio.sleep_ms(1000)

    async def send(self, frame):
        Link.taken.append(frame)
        return True
"""

SCRIPT = HEAD + r"""
class FlakyLink:
    # Up, takes every frame; its run() raises MemoryError the first time, as a task that
    # found no block for a buffer would.
    name = "flaky"
    up = True
    status = ""
    runs = 0
    taken = []

    async def run(self, inbox, woke):
        FlakyLink.runs += 1
        if FlakyLink.runs == 1:
            raise MemoryError("memory allocation failed, allocating 256 bytes")
        while True:
            await asyncio.sleep_ms(1000)

    async def send(self, frame):
        FlakyLink.taken.append(frame)
        return True

Wearable.SUPERVISE_MS = 100
w = Wearable(board, cfg, [FlakyLink()], log=log.append)

async def main():
    task = asyncio.create_task(w.run())
    await asyncio.sleep_ms(500)
    await board.duress_button.presses(4)
    await asyncio.sleep_ms(300)
    print(json.dumps({"restarts": w.stats["restarts"], "runs": FlakyLink.runs,
                      "raised": w.stats["raised"],
                      "alarms_taken": [decode(f, w.key, UP).NAME for f in FlakyLink.taken].count(
                          "alarm"),
                      "supervisor_alive": not task.done(),
                      "died": [line for line in log if "died" in line]}))
    task.cancel()

asyncio.run(main())
"""


def test_a_task_that_raises_is_restarted_and_the_wearable_goes_on(micropython, tmp_path):
    cmd, env = micropython
    script = "ROOT = %r\nFS = %r\nKEY = %r\n" % (str(ROOT), str(tmp_path), KEY.hex()) + SCRIPT
    proc = subprocess.run(cmd + ["-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["restarts"] == 1 and report["runs"] == 2 and report["supervisor_alive"]
    assert report["died"] == ["vigil: task link:flaky died (MemoryError('memory allocation "
                              "failed, allocating 256 bytes',)): restarting"]
    assert report["raised"] == 1 and report["alarms_taken"] == 1  # the duress alarm still went out


NO_MEMORY = HEAD + r"""
w = Wearable(board, cfg, [Link()], log=log.append)
# The outbox's write finds no memory FAILS times in a row (the heap as full as it gets: the
# reserve spent, a collection made), then there is room again.
add = w.outbox.add
failed = [0]
def no_room_at_first(counter, kind, frame):
    if failed[0] < FAILS:
        failed[0] += 1
        raise MemoryError("memory allocation failed, allocating 96 bytes")
    return add(counter, kind, frame)
w.outbox.add = no_room_at_first

async def main():
    task = asyncio.create_task(w.run())
    await asyncio.sleep_ms(300)
    await board.duress_button.presses(4)
    for _ in range(100):
        if w.stats["raised"]:
            break
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(200)
    print(json.dumps({"failed": failed[0], "raised": w.stats["raised"],
                      "memory_retries": w.stats["memory_retries"],
                      "restarts": w.stats["restarts"], "outbox": len(w.outbox),
                      "kinds": [decode(f, w.key, UP).kind for f in Link.taken
                                if decode(f, w.key, UP).NAME == "alarm"]}))
    task.cancel()

asyncio.run(main())
"""


def test_an_alarm_that_finds_no_memory_is_owed_and_raised_once_there_is_room(micropython,
                                                                              tmp_path):
    """The duress gesture while even the reserve cannot make room for its frame: the alarm
    is not lost with the edge that made it, and no task dies: the input task raises it
    again until it is on flash (then it goes out once)."""
    cmd, env = micropython
    script = "ROOT = %r\nFS = %r\nKEY = %r\nFAILS = 4\n" % (str(ROOT), str(tmp_path),
                                                            KEY.hex()) + NO_MEMORY
    proc = subprocess.run(cmd + ["-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["failed"] == 4 and report["restarts"] == 0, report
    assert report["raised"] == 1 and report["kinds"] == [2], report  # one DURESS, sent
    assert report["memory_retries"] >= 3, report  # each failure after the first counted
