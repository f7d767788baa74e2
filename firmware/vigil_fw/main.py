# Start the wearable on the real board: read and check the config, then run forever.
import asyncio

from . import ConfigError
from . import config as device_config


def run():
    from .hal_esp32 import Board
    from .mqtt_link import MqttLink
    from .app import Wearable
    from .flash import Flash
    from . import board as pins

    try:
        config = device_config.load(Flash(pins.FLASH_ROOT))
    except ConfigError as exc:
        # No watchdog yet: the device stays at the console so a technician can fix it.
        print("vigil: cannot start: %s" % exc)
        return
    board = Board(config.wifi)
    wearable = Wearable(board, config, [MqttLink(config, board.network)])
    asyncio.run(wearable.run())
