# The device config on flash ("vigil.json"), written by provisioning, checked at boot.
#
# Every problem is reported with the key that is wrong and what it should be; secrets
# (the key, passwords) are never repeated in a message.
import json

from vigil_protocol._compat import const

from . import ConfigError

FILE = "vigil.json"


def _hex(value, digits):
    if not isinstance(value, str) or len(value) != digits:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def _need(cond, message):
    if not cond:
        raise ConfigError("config: " + message)


# man_down's bounds: falls.NoMotionDetector's (a unit test holds them equal), written here so
# that checking a config loads no detector.
_NO_MOTION_DEFAULT_S = const(120)
_NO_MOTION_MIN_S = const(30)
_NO_MOTION_MAX_S = const(1800)
_CANCEL_DEFAULT_S = const(30)
_CANCEL_MIN_S = const(10)
_CANCEL_MAX_S = const(120)


def _man_down(given):
    """(fall on, no-motion seconds or 0 for off, cancel window seconds), or None when the
    file has no man_down (a unit provisioned before man-down keeps behaving as it did)."""
    if given is None:
        return None
    _need(isinstance(given, dict), "man_down must be an object with fall, no_motion_s, cancel_s")
    for name in given:
        _need(name in ("fall", "no_motion_s", "cancel_s"), "man_down has no setting %r" % name)
    fall = given.get("fall", True)
    _need(isinstance(fall, bool), "man_down.fall must be true or false")
    still = given.get("no_motion_s", _NO_MOTION_DEFAULT_S)
    if still is False:
        still = 0
    _need(isinstance(still, int) and not isinstance(still, bool)
          and (still == 0 or _NO_MOTION_MIN_S <= still <= _NO_MOTION_MAX_S),
          "man_down.no_motion_s must be 0 (off) or from %d to %d"
          % (_NO_MOTION_MIN_S, _NO_MOTION_MAX_S))
    cancel = given.get("cancel_s", _CANCEL_DEFAULT_S)
    _need(isinstance(cancel, int) and not isinstance(cancel, bool)
          and _CANCEL_MIN_S <= cancel <= _CANCEL_MAX_S,
          "man_down.cancel_s must be from %d to %d" % (_CANCEL_MIN_S, _CANCEL_MAX_S))
    return (fall, still, cancel)


_SCAN_MIN_MS = const(300)
_SCAN_MAX_MS = const(5000)


def _beacons(given, protocol):
    """(scan ms, scan at every check-in) of the beacons setting, or None without one."""
    if given is None:
        return None
    _need(isinstance(given, dict), "beacons must be an object with scan_ms, at_checkin")
    for name in given:
        _need(name in ("scan_ms", "at_checkin"), "beacons has no setting %r" % name)
    ms = given.get("scan_ms", 1200)
    _need(isinstance(ms, int) and not isinstance(ms, bool)
          and _SCAN_MIN_MS <= ms <= _SCAN_MAX_MS,
          "beacons.scan_ms must be from %d to %d" % (_SCAN_MIN_MS, _SCAN_MAX_MS))
    at_checkin = given.get("at_checkin", False)
    _need(isinstance(at_checkin, bool), "beacons.at_checkin must be true or false")
    # Every alarm and check-in is sealed at one size (SPEC section 13): only v2 frames can be.
    _need(protocol == 2, "beacons needs protocol 2 (v1 frames cannot be sealed at one size)")
    return (ms, at_checkin)


def _checked(name, *args):
    """What check(*args) of the module config_<name> gives. The module, and the pin map if
    nothing else has loaded it, are dropped after it: a module's functions and tables are
    heap even when its code is frozen, and a unit without the setting loads neither."""
    import sys

    import vigil_fw
    drop = ["config_" + name]
    if "vigil_fw.board" not in sys.modules:
        drop.append("board")
    module = __import__("vigil_fw.config_" + name, None, None, ("check",))
    try:
        return module.check(*args)
    finally:
        for name in drop:
            sys.modules.pop("vigil_fw." + name, None)
            if hasattr(vigil_fw, name):
                delattr(vigil_fw, name)


class Config:
    def __init__(self, data):
        _need(isinstance(data, dict), "the file must hold one JSON object")
        _need(data.get("version") == 1, "version must be 1")
        dev = data.get("device_id")
        _need(_hex(dev, 8) and int(dev, 16) != 0,
              "device_id must be 8 hex digits, not all zero")
        _need(_hex(data.get("key"), 64), "key must be 64 hex digits (256 bits)")
        self.device_id = int(dev, 16)
        self.device_hex = dev.lower()
        self.key = bytes.fromhex(data["key"])

        wifi = data.get("wifi")
        _need(wifi is None or (isinstance(wifi, dict) and isinstance(wifi.get("ssid"), str)
                               and wifi["ssid"]), "wifi.ssid must be a non-empty string")
        self.wifi = wifi

        # The defaults are written out here rather than kept in a module-level dict.
        mqtt = {"port": 1883, "tls": False, "prefix": "vigil", "keepalive_s": 60,
                "ca_file": None}
        given = data.get("mqtt")
        _need(isinstance(given, dict), "mqtt must be an object with host, username, password")
        mqtt.update(given)
        _need(isinstance(mqtt.get("host"), str) and mqtt["host"], "mqtt.host must be set")
        _need(isinstance(mqtt["port"], int) and 0 < mqtt["port"] < 65536,
              "mqtt.port must be an integer from 1 to 65535")
        _need(mqtt.get("username") == self.device_hex,
              "mqtt.username must be the device id (%s)" % self.device_hex)
        _need(isinstance(mqtt.get("password"), str) and mqtt["password"],
              "mqtt.password must be set")
        _need(isinstance(mqtt["tls"], bool), "mqtt.tls must be true or false")
        _need(not mqtt["tls"] or isinstance(mqtt["ca_file"], str),
              "mqtt.ca_file must name the broker's CA file when mqtt.tls is true")
        _need(isinstance(mqtt["prefix"], str) and mqtt["prefix"] and "/" not in mqtt["prefix"]
              and "+" not in mqtt["prefix"] and "#" not in mqtt["prefix"],
              "mqtt.prefix must be one topic level without wildcards")
        _need(isinstance(mqtt["keepalive_s"], int) and 5 <= mqtt["keepalive_s"] <= 3600,
              "mqtt.keepalive_s must be from 5 to 3600")
        self.mqtt = mqtt

        interval = data.get("checkin_interval_s", 300)
        _need(isinstance(interval, int) and 10 <= interval <= 65535,
              "checkin_interval_s must be from 10 to 65535")
        self.checkin_interval_s = interval
        ble = data.get("ble", True)
        _need(isinstance(ble, bool), "ble must be true or false")
        self.ble = ble
        low = data.get("low_battery_pct", 15)
        _need(isinstance(low, int) and 0 <= low <= 100, "low_battery_pct must be 0-100")
        self.low_battery_pct = low
        # Set by provisioning when the unit's flash holds no counters but the gateway has
        # seen this device id: counters start here, not at 1, which the gateway would refuse.
        floor = data.get("counter_floor", 0)
        _need(isinstance(floor, int) and 0 <= floor <= 0xFFFFFFFF,
              "counter_floor must be from 0 to 4294967295")
        self.counter_floor = floor
        # The frame format this unit sends: 2 (sealed: nothing on the air tells an alarm's
        # kind) unless it was provisioned for a gateway that still speaks v1 only.
        protocol = data.get("protocol", 2)
        _need(protocol in (1, 2), "protocol must be 1 or 2")
        self.protocol = protocol
        self.man_down = _man_down(data.get("man_down"))
        # BLE beacon scans (scan.py): (scan ms, at every check-in), or None.
        self.beacons = _beacons(data.get("beacons"), protocol)
        # A GNSS module (config_gnss.py, loaded only for a file that names one), or None.
        self.gnss = None
        if data.get("gnss") is not None:
            self.gnss = _checked("gnss", data["gnss"], protocol)
        # Wi-Fi access points as a hint (wifiscan.py): a scan before every N-th check-in
        # (config_wifi_scan.py), or None.
        self.wifi_scan = None
        if data.get("wifi_scan") is not None:
            self.wifi_scan = _checked("wifi_scan", data["wifi_scan"], wifi, protocol)

    def topic(self, kind):
        return "%s/%s/%s" % (self.mqtt["prefix"], kind, self.device_hex)


def load(flash):
    """Read and check the config; raises ConfigError with a message for the console."""
    raw = flash.read(FILE)
    if raw is None:
        raise ConfigError("config: %s is missing: provision this device" % FILE)
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError("config: %s is not valid JSON" % FILE)
    return Config(data)
