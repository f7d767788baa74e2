"""The real `vigil` command, as the tests run it (the console script beside this Python)."""
import subprocess
import sys
from pathlib import Path

VIGIL = str(Path(sys.executable).parent / "vigil")


def vigil(*args, timeout=120, **kwargs):
    """Run `vigil ARGS...`; returns the CompletedProcess (text, output captured)."""
    return subprocess.run([VIGIL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
