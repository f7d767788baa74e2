"""The wearable's config file, /vigil/vigil.json, made from a device record and site settings.

It is checked here with the firmware's own rules (firmware/vigil_fw/config.py) before anything
touches the board, so a wrong setting is refused with the same words the wearable would print
at boot. The text is canonical (sorted keys, no spaces): the same inputs give the same bytes,
which is what lets a second provisioning see that nothing needs rewriting.
"""
import json
import sys

from . import ToolError
from .device_record import device_hex
from .firmware_build import FIRMWARE

BOARD_DIR = "/vigil"            # the firmware's FLASH_ROOT (firmware/vigil_fw/board.py)
BOARD_PATH = BOARD_DIR + "/vigil.json"
BOARD_CA_PATH = BOARD_DIR + "/broker-ca.pem"


def firmware_config_class():
    if str(FIRMWARE) not in sys.path:
        sys.path.append(str(FIRMWARE))
    from vigil_fw import ConfigError
    from vigil_fw.config import Config

    return Config, ConfigError


def man_down(on=True, fall=True, no_motion_s=None, cancel_s=None):
    """The man_down settings a provisioned unit gets: fall and no-motion on with the
    firmware's defaults (no motion for 120 s, a 30 s cancel window) unless told otherwise;
    None (no man_down in the file: no fall or no-motion alarm) when `on` is false. Written
    out in full, so the file says what the unit does."""
    if not on:
        return None
    return {"fall": fall, "no_motion_s": 120 if no_motion_s is None else no_motion_s,
            "cancel_s": 30 if cancel_s is None else cancel_s}


def gnss(rx=None, tx=None, uart=None, baud=None):
    """The gnss setting of a unit with a UART GNSS module: its receive and transmit pins
    (both or neither), the UART (default 1) and the baud rate (default 9600, what most NMEA
    modules start at); None (no gnss in the file: no GNSS, nothing of it loaded) when no pin is
    given. Written out in full, so the file says what the unit does. The firmware's own check
    (render()) judges the values."""
    if rx is None and tx is None and uart is None and baud is None:
        return None
    if rx is None or tx is None:
        raise ToolError("a GNSS module needs both --gnss-rx and --gnss-tx (the GPIOs its TX and "
                        "RX lines are wired to)")
    return {"uart": 1 if uart is None else uart, "rx": rx, "tx": tx,
            "baud": 9600 if baud is None else baud}


def beacons(scan_ms=None, at_checkin=False):
    """The beacons setting of a unit that scans for BLE beacons (indoor location): each scan's
    length in ms and whether every check-in scans too (false: only alarms, and check-ins while
    one is open); None (no beacons in the file: no scans, nothing of them loaded) without a scan
    length. Written out in full, so the file says what the unit does. The firmware's own check
    (render()) judges the values."""
    if scan_ms is None:
        if at_checkin:
            raise ToolError("--beacons-at-checkin needs --beacons-scan-ms MS (the length of "
                            "each scan, 300-5000)")
        return None
    return {"scan_ms": scan_ms, "at_checkin": bool(at_checkin)}


def build(record, mqtt_host, mqtt_port=1883, mqtt_prefix="vigil", mqtt_tls=False,
          mqtt_ca=False, wifi_ssid=None, wifi_password=None, checkin_interval_s=None,
          low_battery_pct=None, keepalive_s=None, ble=None, counter_floor=None,
          man_down=None, gnss=None, beacons=None, wifi_scan_every=None):
    """The config as a dict (secrets included: never print it). `man_down`: the settings
    of man_down() (None: none in the file); `gnss`: gnss()'s (None: none in the file);
    `beacons`: beacons()'s (None: none in the file); `wifi_scan_every`: scan for Wi-Fi access
    points before every N-th check-in (None: no wifi_scan in the file)."""
    if record.mqtt_password is None:
        raise ToolError("the device record has no mqtt_password: make a new one with "
                        "`vigil keygen`")
    device = device_hex(record.device_id)
    mqtt = {"host": mqtt_host, "port": mqtt_port, "username": device,
            "password": record.mqtt_password, "prefix": mqtt_prefix, "tls": mqtt_tls}
    if mqtt_tls and mqtt_ca:
        mqtt["ca_file"] = BOARD_CA_PATH
    if keepalive_s is not None:
        mqtt["keepalive_s"] = keepalive_s
    data = {"version": 1, "device_id": device, "key": record.key.hex(), "mqtt": mqtt}
    if wifi_ssid is not None:
        data["wifi"] = {"ssid": wifi_ssid}
        if wifi_password:
            data["wifi"]["password"] = wifi_password
    if checkin_interval_s is not None:
        data["checkin_interval_s"] = checkin_interval_s
    if low_battery_pct is not None:
        data["low_battery_pct"] = low_battery_pct
    if ble is not None:
        data["ble"] = ble
    if counter_floor:
        data["counter_floor"] = counter_floor
    if man_down is not None:
        data["man_down"] = dict(man_down)
    if gnss is not None:
        data["gnss"] = dict(gnss)
    if beacons is not None:
        data["beacons"] = dict(beacons)
    if wifi_scan_every is not None:
        if wifi_ssid is None:
            raise ToolError("--wifi-scan-every needs --wifi-ssid (the scan is the Wi-Fi "
                            "station's)")
        data["wifi_scan"] = {"every": wifi_scan_every}
    return data


def render(data):
    """Canonical bytes of a config, after the firmware's own check."""
    config_class, config_error = firmware_config_class()
    try:
        config_class(data)
    except config_error as exc:
        # The firmware's messages name the setting and never repeat a secret.
        raise ToolError("the device config would be refused by the wearable: %s"
                        % str(exc).replace("config: ", "", 1)) from None
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
