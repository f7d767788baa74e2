# Vigil wearable firmware. The core runs on MicroPython (the wearable, the unix port in tests)
# and on CPython (the simulator); only hal_esp32.py touches machine, network and bluetooth.


FIRMWARE_VERSION = "0.1.0"


class ConfigError(Exception):
    """The config file on flash is missing or wrong; the message says what to fix."""
