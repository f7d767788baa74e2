# Start the wearable on the real board: read and check the config, then run forever. Anything
# that escapes the app resets the board; a crash loop boots into safe mode (bootguard.py).
import asyncio

from . import ConfigError
from . import board as pins
from . import config as device_config
from .flash import Flash


def run(flash_root=pins.FLASH_ROOT):
    try:
        config = device_config.load(Flash(flash_root))
    except ConfigError as exc:
        # No watchdog yet: the device waits at the console so a technician can fix it.
        print("vigil: cannot start: %s" % exc)
        return False
    # Only now touch the hardware: a config problem must be reported on any board.
    from .app import Wearable
    from .hal_esp32 import Board
    from .mqtt_link import MqttLink

    import machine

    from .bootguard import BootGuard
    guard = BootGuard(Flash(flash_root))
    board = Board(config.wifi, config.gnss)
    wearable = Wearable(board, config, [MqttLink(config, board.network)])
    wearable.on_healthy = guard.healthy
    if guard.safe:
        # Alarms still go out over MQTT; no BLE, and no watchdog to reset a technician's
        # session. A run that stays up ends safe mode at the next boot.
        print("vigil: safe mode after %d boots that did not last: MQTT only, no watchdog"
              % guard.fast_boots)
        wearable.use_watchdog = False
    elif config.ble:
        try:
            import aioble
            import bluetooth
        except ImportError:
            print("vigil: no BLE on this build: MQTT only")
        else:
            from .ble_link import BleLink
            wearable.links.append(BleLink(config, aioble, bluetooth.UUID,
                                          urgent=wearable.urgent))
    if config.beacons is not None and not guard.safe:
        # Beacon scans need the BLE radio, not the BLE link (ble may be off). Frames keep
        # their 48 bytes either way: the size follows the config.
        try:
            import aioble
        except ImportError:
            print("vigil: beacons off: no BLE on this build")
        else:
            from .scan import Scanner
            wearable.scanner = Scanner(aioble, *config.beacons)
    try:
        asyncio.run(wearable.run())
    except Exception as exc:  # noqa: BLE001 - nothing may leave the wearable stopped
        print("vigil: crashed (%r): resetting" % (exc,))
        machine.reset()
