# Start the wearable on the real board: read and check the config, then run forever.
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

    board = Board(config.wifi)
    wearable = Wearable(board, config, [MqttLink(config, board.network)])
    if config.ble:
        try:
            import aioble
            import bluetooth
        except ImportError:
            print("vigil: no BLE on this build: MQTT only")
        else:
            from .ble_link import BleLink
            wearable.links.append(BleLink(config, aioble, bluetooth.UUID,
                                          urgent=wearable.urgent))
    asyncio.run(wearable.run())
