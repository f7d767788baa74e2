# Finding the board when no --port is given: pyserial's port listing, USB bridges of boards
# first, and a clear word when it is not one obvious port.
from types import SimpleNamespace

import pytest
import serial.tools.list_ports

from vigil_tools import ToolError
from vigil_tools.serial_board import find_port


def port(device, vid, description="USB serial"):
    return SimpleNamespace(device=device, vid=vid, description=description)


@pytest.fixture
def ports(monkeypatch):
    listed = []
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: listed)
    return listed


def test_the_one_board_is_found_among_other_ports(ports):
    ports += [port("/dev/ttyS0", None), port("/dev/ttyUSB3", 0x1234, "a modem"),
              port("/dev/ttyACM0", 0x303A, "ESP32-S3")]
    assert find_port() == "/dev/ttyACM0"


def test_no_board_plugged_in(ports):
    ports.append(port("/dev/ttyS0", None))
    with pytest.raises(ToolError, match="no board found on USB serial"):
        find_port()


def test_two_boards_ask_for_a_choice(ports):
    ports += [port("/dev/ttyACM0", 0x303A), port("/dev/ttyACM1", 0x303A)]
    with pytest.raises(ToolError, match="/dev/ttyACM0.*/dev/ttyACM1.*--port"):
        find_port()
