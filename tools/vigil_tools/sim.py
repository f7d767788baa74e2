"""`vigil sim`: a simulated wearable against a real broker, driven from the keyboard or a script.

The wearable is the firmware's own core (vigil_fw.app.Wearable, its MQTT link, its persistent
outbox) on a simulated board, running on the MicroPython unix port: see sim_device.py for the
commands. Its flash is a folder (default: next to the device record, `<record>.sim/`), so its
frame counters survive restarts and the gateway never sees a counter go back.

What it prints is the wearable's console, each frame followed by its decoding (as in
`vigil monitor`).
"""
import json
import os
import pathlib
import subprocess
import sys
import threading

from . import ToolError, device_config, device_record
from .firmware_build import FIRMWARE, MPY_LIB
from .micropython import PROTOCOL_DIR, executable
from .monitor import print_line

DEVICE_SCRIPT = pathlib.Path(__file__).with_name("sim_device.py")
TOOLS_DIR = pathlib.Path(__file__).parent  # traces.py, shared with the firmware tests


def default_state_dir(record_path):
    return str(record_path) + ".sim"


def settings(record, mqtt_host="127.0.0.1", mqtt_port=1883, mqtt_prefix="vigil",
             state_dir=None, quick=False, battery=90, checkin_interval_s=None,
             hardware_taps=False, echo=False, link="mqtt", ble_hci=None, gnss=False,
             wifi_scan=False, access_points=()):
    """`gnss`: the unit has a UART GNSS module (the `fix` commands feed it). `wifi_scan`: it
    scans for Wi-Fi access points before every check-in, hearing `access_points` ("BSSID,RSSI"
    each) from the start (the `ap` commands change them)."""
    if access_points and not wifi_scan:
        raise ToolError("--wifi-ap needs --wifi-scan")
    config = device_config.build(record, mqtt_host, mqtt_port, mqtt_prefix,
                                 checkin_interval_s=checkin_interval_s,
                                 gnss=device_config.gnss(rx=12, tx=13) if gnss else None,
                                 wifi_ssid="sim-net" if wifi_scan else None,
                                 wifi_scan_every=1 if wifi_scan else None)
    device_config.render(config)  # the firmware's own check, with its words
    heard = [_access_point(*given.split(",", 1)) if "," in given else _access_point(given, "")
             for given in access_points]
    if link == "ble" and not ble_hci:
        raise ToolError("--link ble needs --ble-hci (an emulated controller from `vigil ble-air`"
                        ", e.g. tcp-client:127.0.0.1:7002)")
    return {"config": config, "state_dir": str(pathlib.Path(state_dir).resolve()),
            "quick": quick, "battery": battery, "hardware_taps": hardware_taps, "echo": echo,
            "link": link, "ble_hci": ble_hci, "access_points": heard}


def _access_point(bssid, rssi):
    """(BSSID as 12 hex digits, RSSI) of an --wifi-ap value, or a ToolError saying why not."""
    digits = bssid.replace(":", "").replace("-", "").lower()
    try:
        if len(digits) != 12:
            raise ValueError
        bytes.fromhex(digits)
        level = int(rssi)
    except ValueError:
        raise ToolError("--wifi-ap %s,%s: give BSSID,RSSI, e.g. a4:b1:c2:d3:e4:f5,-52"
                        % (bssid, rssi)) from None
    if not -127 <= level <= 20:
        raise ToolError("--wifi-ap %s,%s: the RSSI is from -127 to 20 dBm" % (bssid, rssi))
    return [digits, level]


def _command_lines(script):
    """Commands from a script file ('-' for stdin), or typed at the keyboard."""
    if script and script != "-":
        try:
            with open(script) as f:
                return f.read().splitlines()
        except OSError as exc:
            raise ToolError("cannot read the script %s: %s" % (script, exc.strerror)) from None
    return sys.stdin


def run(record_path, script=None, state_dir=None, out=sys.stdout, **options):
    record = device_record.load(record_path)
    state_dir = state_dir or default_state_dir(record_path)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    config = settings(record, state_dir=state_dir, echo=script is not None, **options)
    lines = _command_lines(script)
    if script is None and sys.stdin.isatty():
        print("type commands (help lists them, quit stops)", file=out)
    if config["link"] == "ble":
        # BLE: the same core on CPython over an emulated controller (no MicroPython build here
        # has `bluetooth`).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FIRMWARE), str(TOOLS_DIR)]),
                   PYTHONUNBUFFERED="1")
        command = [sys.executable, str(DEVICE_SCRIPT)]
    else:
        env = dict(os.environ, MICROPYPATH=os.pathsep.join(
            [".frozen", str(FIRMWARE), str(PROTOCOL_DIR), str(MPY_LIB), str(TOOLS_DIR)]))
        command = [executable(), "-X", "heapsize=1m", str(DEVICE_SCRIPT)]
    proc = subprocess.Popen(command,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    reader = threading.Thread(target=_print_output, args=(proc.stdout, record.key, out),
                              daemon=True)
    reader.start()
    try:
        proc.stdin.write((json.dumps(config) + "\n").encode())
        proc.stdin.flush()
        for line in lines:
            proc.stdin.write((line.rstrip("\n") + "\n").encode())
            proc.stdin.flush()
        proc.stdin.write(b"quit\n")
        proc.stdin.close()
        status = proc.wait()
    except (BrokenPipeError, KeyboardInterrupt):
        proc.kill()
        status = proc.wait()
    reader.join(5)
    if status not in (0, -9):
        raise ToolError("the simulated wearable stopped with status %d (see its output above)"
                        % status)
    return 0


def _print_output(stream, key, out):
    for raw in iter(stream.readline, b""):
        print_line(raw.decode(errors="replace").rstrip("\n"), key, out)
