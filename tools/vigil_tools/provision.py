"""Flash and provision a wearable over USB serial.

`flash`: build the firmware bundle (mpy-cross), write its ROMFS image where the board has a
ROMFS partition, copy the files that differ, verify, reset, watch it start.
`provision`: the same, plus the device config (/vigil/vigil.json) and the broker's CA file, then
register the device with the gateway.

Order, and why:
  1. everything that can be checked without the board is checked first (device record, config
     against the firmware's rules, the gateway registry), so a mistake costs no flash writes;
  2. files land whole (temp file + rename) and are verified by hash, so an interrupted run
     leaves nothing torn and the next run copies only what is still missing;
  3. the board is soft-reset and its console read until the firmware says it is up, or why not;
  4. the gateway learns the device last, once the wearable is known to start with its config.
"""
import pathlib
import sys
import tempfile
import time

from . import ToolError, board_sync, boot_check, device_config, device_record
from . import gateway_registration
from .firmware_build import build, build_romfs
from .progress import Progress
from .serial_board import SerialBoard, find_port

BOOT_TIMEOUT_S = 20


class Firmware:
    """The firmware, freshly compiled (mpy-cross output is stable, so an unchanged firmware
    gives unchanged files): `files` {board path: bytes}, and `image`, the ROMFS image of its
    /lib part for boards with a ROMFS partition."""

    def __init__(self):
        with tempfile.TemporaryDirectory(prefix="vigil-bundle-") as workdir:
            bundle = pathlib.Path(workdir) / "bundle"
            build(bundle)
            build_romfs(bundle, pathlib.Path(workdir) / "firmware.romfs")
            self.files = board_sync.bundle_files(bundle)
            self.image = (pathlib.Path(workdir) / "firmware.romfs").read_bytes()


def _place_lib(board, firmware, files, out, err):
    """Put the firmware's /lib part into the board's ROMFS partition when it has one that is
    big enough (MicroPython runs it in place there: about 30 kB less heap); returns the files
    still to copy to the filesystem."""
    size = board.romfs_size()
    if size is None or size < len(firmware.image):
        _say(out, "no ROMFS partition for the firmware (%s): it goes to /lib as files and needs "
                  "about 30 kB more heap" % ("%d kB, image %d kB" % (
                      size / 1000, len(firmware.image) / 1000) if size else "none on the board"))
        return files
    digest = board_sync.sha256_hex(firmware.image)
    if board.romfs_hash(len(firmware.image)) == digest:
        _say(out, "ROMFS: firmware image already right (%.1f kB)" % (len(firmware.image) / 1000))
    else:
        bar = Progress(len(firmware.image), "writing ROMFS", err)
        board.write_romfs(firmware.image,
                          progress=lambda done, _total: bar.update(done, "firmware image"))
        bar.item_done(len(firmware.image), "firmware image")
        bar.finish()
        if board.romfs_hash(len(firmware.image)) != digest:
            raise ToolError("verification failed: the ROMFS partition differs from the image "
                            "sent; run the same command again")
        _say(out, "ROMFS: firmware image written and verified (%.1f kB)"
             % (len(firmware.image) / 1000))
    # Copies left in /lib from a flash without ROMFS go as stale files (/rom comes first on
    # sys.path anyway).
    return {path: data for path, data in files.items() if not path.startswith("/lib/")}


def _say(out, text):
    print(text, file=out)
    out.flush()


def _describe(summary):
    parts = ["%d file(s) copied (%.1f kB)" % (summary.copied, summary.bytes_copied / 1000)
             if summary.copied else "nothing to copy",
             "%d already right" % summary.unchanged]
    if summary.removed:
        parts.append("%d stale removed" % summary.removed)
    return ", ".join(parts)


def _install(port, firmware, files, boot_timeout_s, out, err, first=None):
    """Install `firmware` (ROMFS where the board has it) and sync `files` (the firmware's and
    any others) to the board on `port`, reset it and return (summary, Boot).
    `first(board)`, if given, runs before anything is written."""
    port = port or find_port()
    _say(out, "board on %s" % port)
    try:
        with SerialBoard(port) as board:
            if first is not None:
                first(board)
            files = _place_lib(board, firmware, files, out, err)
            summary = board_sync.sync(board, files, stream=err)
            _say(out, "files verified: %s" % _describe(summary))
            _say(out, "restarting the board...")
            boot = boot_check.watch(board, boot_timeout_s)
    except KeyboardInterrupt:
        _say(err, "\ninterrupted: no file is left half-written; run the same command again to "
                  "finish")
        raise
    return summary, boot


def flash(port=None, boot_timeout_s=BOOT_TIMEOUT_S, out=sys.stdout, err=sys.stderr):
    firmware = Firmware()
    _summary, boot = _install(port, firmware, firmware.files, boot_timeout_s, out, err)
    if boot.outcome == boot_check.UP:
        _say(out, "firmware installed; device %s is up" % boot.detail)
        return 0
    if boot.outcome == boot_check.CONFIG:
        _say(out, "firmware installed; the board is not provisioned yet (%s): run "
                  "`vigil provision`" % boot.detail)
        return 0
    raise ToolError("firmware installed but it does not start: %s" % boot.detail)


def provision(record_path, mqtt_host, port=None, mqtt_port=1883, mqtt_prefix="vigil",
              mqtt_ca_path=None, wifi_ssid=None, wifi_password=None, checkin_interval_s=None,
              low_battery_pct=None, ble=None, gateway_config=None, broker_files=None,
              replace=False, man_down=None, gnss=None, beacons=None, wifi_scan_every=None,
              boot_timeout_s=BOOT_TIMEOUT_S, out=sys.stdout, err=sys.stderr):
    """`man_down`: device_config.man_down()'s settings (None: the defaults, on; False: off).
    `gnss`: device_config.gnss()'s (None: no GNSS module). `beacons`: device_config.beacons()'s
    (None: no beacon scans). `wifi_scan_every`: N, a Wi-Fi scan before every N-th check-in
    (None: none)."""
    started = time.monotonic()
    if man_down is None:
        man_down = device_config.man_down()
    record = device_record.load(record_path)
    name = device_record.device_hex(record.device_id)
    ca = _read_ca(mqtt_ca_path) if mqtt_ca_path else None
    config = device_config.build(
        record, mqtt_host, mqtt_port, mqtt_prefix, mqtt_tls=ca is not None, mqtt_ca=ca is not None,
        wifi_ssid=wifi_ssid, wifi_password=wifi_password, checkin_interval_s=checkin_interval_s,
        low_battery_pct=low_battery_pct, ble=ble, man_down=man_down or None, gnss=gnss,
        beacons=beacons, wifi_scan_every=wifi_scan_every)
    config_bytes = device_config.render(config)
    floor = 0
    if gateway_config:
        gateway_registration.check(gateway_config, record)
        floor = gateway_registration.counter_floor(gateway_config, record)

    firmware = Firmware()
    files = dict(firmware.files)
    files[device_config.BOARD_PATH] = config_bytes
    if ca is not None:
        files[device_config.BOARD_CA_PATH] = ca
    _say(out, "provisioning device %s" % name)
    started_over = {}  # "at": the counter a unit starting over as this device begins from

    def claim(board):
        # A unit's flash holds its identity's state: counters, and alarms signed with its key
        # that may still be waiting to go out. Another identity starts from a clean flash,
        # and only when the technician says so.
        current, board_floor = board.provisioned_as(device_config.BOARD_PATH)
        if current is not None and current != name:
            if not replace:
                raise ToolError("the board is provisioned as device %s: to make it device %s, "
                                "give --replace (its state as %s, unsent alarms included, is "
                                "erased)" % (current, name, current))
            board.remove_tree(device_config.BOARD_DIR)
            _say(out, "erased the state of device %s" % current)
        # Counters: a unit that already is this device keeps its own (and the floor it was
        # given); one that starts over as this device id starts past what the gateway has seen.
        start = board_floor if current == name else floor
        if current != name:
            started_over["at"] = floor
        if start:
            config["counter_floor"] = start
            files[device_config.BOARD_PATH] = device_config.render(config)
            if current != name:
                _say(out, "counters start at %d: the gateway has seen this device id before"
                     % start)

    _summary, boot = _install(port, firmware, files, boot_timeout_s, out, err, first=claim)
    if boot.outcome == boot_check.CONFIG:
        raise ToolError("the wearable refuses its config: %s" % boot.detail)
    if boot.outcome != boot_check.UP:
        raise ToolError("the firmware does not start: %s" % boot.detail)
    if boot.detail != name:
        raise ToolError("the board started as device %s, not %s" % (boot.detail, name))
    _say(out, "device %s is up with its config" % name)

    if gateway_config:
        # A unit started over here: the gateway knows where its counters begin, so its alarms
        # that come late (after later ones) are taken, not refused as replays.
        outcome = gateway_registration.register(gateway_config, record, checkin_interval_s,
                                                started_over.get("at"))
        _say(out, "gateway: device %s %s" % (name, outcome))
        if broker_files:
            gateway_registration.write_broker_files(gateway_config, broker_files)
            _say(out, "broker password and ACL files rewritten in %s (reload Mosquitto to use "
                      "them)" % broker_files)
    else:
        _say(out, "gateway: not registered (no --gateway-config); register later with "
                  "`vigil gateway device import %s`" % record_path)
    _say(out, "done in %.1f s" % (time.monotonic() - started))
    return 0


def _read_ca(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ToolError("cannot read the broker CA file %s: %s" % (path, exc.strerror)) from None
