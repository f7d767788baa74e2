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


@pytest.fixture(scope="session")
def micropython32():
    """The 32-bit MicroPython unix port with `bluetooth` and the firmware frozen in, as `make
    setup` built it for the current sources (vigil_tools.mpy32). Tests using it are skipped,
    with the reason, where it is not there: it is never built here."""
    from vigil_tools import mpy32

    exe = mpy32.executable()
    if exe is None:
        pytest.skip(mpy32.skip_reason())
    return exe


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A shared anonymous Mosquitto broker on loopback for the whole session."""
    from vigil_tools.broker import Mosquitto

    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path):
    """Start brokers with custom settings (passwords, ACL, TLS); all stopped after the test."""
    from vigil_tools.broker import Mosquitto

    brokers = []

    def make(**kwargs):
        broker = Mosquitto(tmp_path / ("broker%d" % len(brokers)), **kwargs)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()
