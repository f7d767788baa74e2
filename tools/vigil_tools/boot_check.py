"""Read a wearable's console after a reset and say how the firmware started.

The firmware prints one of (firmware/vigil_fw/main.py and app.py):
    vigil: device 1a2b3c4d up, 0 alarm(s) waiting in the outbox     -> UP
    vigil: cannot start: config: <what is wrong>                    -> CONFIG
    vigil: crashed (<the error>): resetting                         -> CRASH (it resets)
a Python traceback ends in the error's line                         -> CRASH
and a REPL banner after main.py returned without either             -> STOPPED
"""
import re
from collections import namedtuple

UP = "up"
CONFIG = "config"
CRASH = "crash"
STOPPED = "stopped"

Boot = namedtuple("Boot", "outcome detail")

_UP = re.compile(r"vigil: device ([0-9a-f]{8}) up")
_CANNOT_START = "vigil: cannot start: "
_CRASHED = "vigil: crashed ("


class BootWatch:
    """A verdict function for SerialBoard.reset_and_watch."""

    def __init__(self):
        self.in_traceback = False

    def __call__(self, line):
        if self.in_traceback:
            if line.startswith(" "):
                return None
            return Boot(CRASH, line)
        if line.startswith("Traceback"):
            self.in_traceback = True
            return None
        if line.startswith(_CRASHED):
            return Boot(CRASH, line[len(_CRASHED):].rsplit("): resetting", 1)[0])
        if line.startswith(_CANNOT_START):
            return Boot(CONFIG, line[len(_CANNOT_START):].replace("config: ", "", 1))
        match = _UP.search(line)
        if match:
            return Boot(UP, match.group(1))
        if line.startswith('Type "help()"'):
            return Boot(STOPPED, "main.py ended without starting the firmware")
        return None


def watch(board, timeout_s):
    """Soft-reset the board and return a Boot (outcome None: nothing within timeout_s)."""
    found, _lines = board.reset_and_watch(BootWatch(), timeout_s)
    return found or Boot(None, "no start-up line from the firmware within %d s" % timeout_s)
