import os
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def micropython():
    """Command line for the MicroPython unix port, with micropython-lib on its path."""
    exe = BIN / "micropython"
    if not exe.exists():
        exe = pathlib.Path(shutil.which("micropython") or "micropython")
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(ROOT / ".venv" / "mpy-lib"),
                                                        ".frozen", ""]))
    return [str(exe)], env
