"""The tests' Mosquitto: the same local broker the tools use (vigil_tools.broker)."""
from vigil_tools.broker import Mosquitto, free_port  # noqa: F401
