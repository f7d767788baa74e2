# Start the wearable on the real board: read and check the config, then run forever.
#
# Rules:
#   a config that is missing or wrong is said in one console line and the device waits at
#     the console (no watchdog, no reset) for a technician to fix it
#   anything else that fails, from the config load on (a flash error, a MemoryError while
#     the wearable is built, anything escaping the app), is said in one console line
#     ("vigil: crashed (...): resetting") and resets the board: a wearable left stopped sends
#     no alarm. A Ctrl-C at the console is no failure: it reaches the REPL
#   the boot is counted first (BootGuard), before anything that can fail, so that a crash
#     loop is seen whatever fails
#   safe mode (bootguard.py: a crash loop) loads only what sends the outbox over MQTT and
#     takes provisioning: no BLE link, no beacon or Wi-Fi scans, no man-down, no GNSS, no
#     watchdog; the console says so. Alarms, their outbox and the duress silence rule are the
#     same
import asyncio

from . import ConfigError
from . import board as pins
from . import config as device_config
from .flash import Flash


def run(flash_root=pins.FLASH_ROOT):
    try:
        config = device_config.load(Flash(flash_root))
        from .bootguard import BootGuard
        guard = BootGuard(Flash(flash_root))
        if guard.safe:
            # Whatever normal mode loads may be what failed (a full outbox leaves no heap for
            # the rest): only the MQTT link and the alarm path. Without a source of location
            # new frames take SPEC section 2's sizes, alarms and check-ins still alike.
            config.man_down = config.gnss = config.beacons = config.wifi_scan = None
            print("vigil: safe mode after %d boots that did not last: MQTT only (BLE, beacons,"
                  " Wi-Fi scans, man-down and GNSS off), no watchdog" % guard.fast_boots)
        # Only now touch the hardware: a config problem must be reported on any board.
        from .app import Wearable
        from .hal_esp32 import Board
        from .mqtt_link import MqttLink

        board = Board(config.wifi, config.gnss)
        wearable = Wearable(board, config, [MqttLink(config, board.network)])
        wearable.on_healthy = guard.healthy
        if guard.safe:
            # No watchdog to reset a technician's session; a run that stays up HEALTHY_MS
            # ends safe mode at the next boot.
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
        if config.beacons is not None:
            # Beacon scans need the BLE radio, not the BLE link (ble may be off). Frames keep
            # their 48 bytes either way: the size follows the config.
            try:
                import aioble
            except ImportError:
                print("vigil: beacons off: no BLE on this build")
            else:
                from .scan import Scanner
                wearable.scanner = Scanner(aioble, *config.beacons)
        asyncio.run(wearable.run())
    except ConfigError as exc:
        # Only the config check raises it (config.py). No watchdog yet: the device waits at
        # the console so a technician can fix it.
        print("vigil: cannot start: %s" % exc)
        return False
    except Exception as exc:  # noqa: BLE001 - nothing may leave the wearable stopped
        import machine
        try:
            print("vigil: crashed (%r): resetting" % (exc,))
        finally:
            machine.reset()  # even if there was no heap left for the line
