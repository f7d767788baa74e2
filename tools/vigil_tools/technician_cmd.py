"""Technician commands: `vigil keygen`, `provision`, `flash`, `monitor`, `sim`, `board virtual`."""
import os

from . import ToolError

GATEWAY_CONFIG_DEFAULT = "gateway.toml"


def register(sub):
    keygen = sub.add_parser("keygen", help="a new device id, key and broker password (private "
                                           "file)")
    keygen.add_argument("--out", required=True, help="device record to create (mode 0600)")
    keygen.add_argument("--device", help="use this device id (8 hex digits) instead of a random "
                                         "one")
    keygen.add_argument("--label", default="", help="a short name for operators")
    keygen.add_argument("--show-key", action="store_true",
                        help="also print the key (it lands in your terminal's scrollback)")
    keygen.set_defaults(func=keygen_command)

    provision = sub.add_parser("provision", help="flash, configure and register a wearable "
                                                 "over USB serial")
    _port_option(provision)
    provision.add_argument("--device-file", required=True,
                           help="the device record from `vigil keygen`")
    provision.add_argument("--mqtt-host", required=True,
                           help="the broker's address as the wearable reaches it")
    provision.add_argument("--mqtt-port", type=int,
                           help="broker port (default 1883, or 8883 with --mqtt-ca)")
    provision.add_argument("--mqtt-prefix",
                           help="topic prefix (default: the gateway config's, else vigil)")
    provision.add_argument("--mqtt-ca", metavar="FILE",
                           help="the broker's CA certificate: the wearable then uses TLS")
    provision.add_argument("--wifi-ssid", help="the site's Wi-Fi network")
    provision.add_argument("--wifi-password-file", metavar="FILE",
                           help="file holding the Wi-Fi password (kept off the command line)")
    provision.add_argument("--checkin-interval", type=int, metavar="S",
                           help="seconds between check-ins (firmware default 300)")
    provision.add_argument("--low-battery", type=int, metavar="PCT",
                           help="battery percentage that raises LOW_BATTERY (default 15)")
    provision.add_argument("--no-ble", action="store_true",
                           help="MQTT only: the wearable does not advertise over BLE")
    provision.add_argument("--no-man-down", action="store_true",
                           help="no fall or no-motion alarms (man-down is on by default)")
    provision.add_argument("--no-fall", action="store_true",
                           help="man-down without the fall detector (no motion only)")
    provision.add_argument("--no-motion-s", type=int, metavar="S",
                           help="seconds without movement before the no-motion pre-alarm "
                                "(30-1800, 0 for off; default 120)")
    provision.add_argument("--cancel-s", type=int, metavar="S",
                           help="seconds the wearer has to cancel a man-down pre-alarm with "
                                "the SOS button (10-120; default 30)")
    provision.add_argument("--gnss-rx", type=int, metavar="GPIO",
                           help="a UART GNSS module: the GPIO its TX line drives (with "
                                "--gnss-tx; no GNSS unless given)")
    provision.add_argument("--gnss-tx", type=int, metavar="GPIO",
                           help="the GPIO wired to the GNSS module's RX line")
    provision.add_argument("--gnss-uart", type=int, metavar="N",
                           help="the ESP32 UART for the GNSS module (1 or 2; default 1)")
    provision.add_argument("--gnss-baud", type=int, metavar="BAUD",
                           help="the GNSS module's baud rate (default 9600)")
    provision.add_argument("--beacons-scan-ms", type=int, metavar="MS",
                           help="BLE beacon scans for indoor location: each scan's length "
                                "in ms (300-5000; the firmware's default is 1200); an alarm "
                                "starts one. No scans unless given")
    provision.add_argument("--beacons-at-checkin", action="store_true",
                           help="with --beacons-scan-ms: every check-in scans too (about 0.4 mA "
                                "more on average at 300 s check-ins)")
    provision.add_argument("--wifi-scan-every", type=int, metavar="N",
                           help="with --wifi-ssid: scan for Wi-Fi access points before every "
                                "N-th check-in (1-1000), the strongest sent as a hint of the "
                                "place where a frame has no GNSS fix and no beacon. The "
                                "ESP32's scan is active: it runs on the check-in schedule "
                                "only, never because of an alarm. No scans unless given")
    provision.add_argument("--gateway-config", metavar="FILE",
                           default=os.environ.get("VIGIL_GATEWAY_CONFIG"),
                           help="the gateway whose registry gets the device (default: "
                                "$VIGIL_GATEWAY_CONFIG, else ./gateway.toml)")
    provision.add_argument("--no-register", action="store_true",
                           help="do not register with a gateway (do it later with "
                                "`vigil gateway device import`)")
    provision.add_argument("--broker-files", metavar="DIR",
                           help="also rewrite Mosquitto's password and ACL files here")
    provision.add_argument("--replace", action="store_true",
                           help="the board was another device: erase that device's state "
                                "(counters, unsent alarms) and give it this identity")
    _boot_timeout_option(provision)
    provision.set_defaults(func=provision_command)

    flash = sub.add_parser("flash", help="install the firmware only (keeps the device config)")
    _port_option(flash)
    _boot_timeout_option(flash)
    flash.set_defaults(func=flash_command)

    monitor = sub.add_parser("monitor", help="the wearable's console, frames decoded")
    _port_option(monitor)
    keys = monitor.add_mutually_exclusive_group()
    keys.add_argument("--device-file", help="device record: frames are checked with its key")
    keys.add_argument("--key-file", help="a file holding just the device key in hex")
    monitor.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    monitor.add_argument("--reset", action="store_true",
                         help="restart the firmware first, to watch it boot")
    monitor.set_defaults(func=monitor_command)

    sim = sub.add_parser("sim", help="a simulated wearable (the firmware core) against a real "
                                     "broker")
    sim.add_argument("--device-file", required=True, help="device record from `vigil keygen`")
    sim.add_argument("--script", metavar="FILE",
                     help="commands from this file ('-': stdin) instead of the keyboard")
    sim.add_argument("--mqtt-host", default="127.0.0.1")
    sim.add_argument("--mqtt-port", type=int, default=1883)
    sim.add_argument("--mqtt-prefix", default="vigil")
    sim.add_argument("--state-dir", metavar="DIR",
                     help="the wearable's flash (default: <device file>.sim)")
    sim.add_argument("--battery", type=int, default=90, metavar="PCT")
    sim.add_argument("--checkin-interval", type=int, metavar="S")
    sim.add_argument("--hardware-taps", action="store_true",
                     help="double taps from the accelerometer's tap engine, not the software "
                          "detector")
    sim.add_argument("--quick", action="store_true",
                     help="short hold and retry times (same rules), for demos and tests")
    sim.add_argument("--gnss", action="store_true",
                     help="the unit has a UART GNSS module: the fix and fix-lost commands feed "
                          "it NMEA, and every alarm and check-in is sealed at 48 bytes")
    sim.add_argument("--wifi-scan", action="store_true",
                     help="the unit scans for Wi-Fi access points before every check-in: the "
                          "ap and ap-gone commands say what it hears; every alarm and check-in "
                          "is sealed at 48 bytes")
    sim.add_argument("--wifi-ap", action="append", default=[], metavar="BSSID,RSSI",
                     help="with --wifi-scan: an access point in range from the start, e.g. "
                          "a4:b1:c2:d3:e4:f5,-52 (again for more)")
    sim.add_argument("--link", choices=["mqtt", "ble"], default="mqtt",
                     help="mqtt (default): the firmware's MQTT link on the MicroPython unix port; "
                          "ble: its BLE link on an emulated radio (see `vigil ble-air`)")
    sim.add_argument("--ble-hci", metavar="TRANSPORT",
                     help="with --link ble: the emulated controller, e.g. tcp-client:127.0.0.1:7002")
    sim.set_defaults(func=sim_command)

    board = sub.add_parser("board", help="boards for rehearsal and tests")
    board_sub = board.add_subparsers(dest="board_command", required=True, metavar="ACTION")
    virtual = board_sub.add_parser("virtual", help="a virtual wearable on a serial port (the "
                                                   "MicroPython unix port behind a pty)")
    virtual.add_argument("--flash", required=True, metavar="DIR",
                         help="host folder that is the board's flash")
    virtual.add_argument("--romfs-kib", type=int, default=256, metavar="KIB",
                         help="size of its ROMFS partition, kept in <flash>.romfs (default "
                              "256; 0: a board without one)")
    virtual.set_defaults(func=board_virtual_command)


def _port_option(parser):
    parser.add_argument("--port", help="serial port, e.g. /dev/ttyACM0 (default: the one USB "
                                       "serial board plugged in)")


def _boot_timeout_option(parser):
    parser.add_argument("--boot-timeout", type=float, default=20, metavar="S",
                        help="how long to wait for the firmware's start-up line (default 20)")


def keygen_command(args):
    from .keygen import keygen

    keygen(args.out, args.device, args.label, args.show_key)
    return 0


def _read_secret(path, what):
    try:
        with open(path) as f:
            text = f.readline().strip()
    except OSError as exc:
        raise ToolError("cannot read the %s file %s: %s" % (what, path, exc.strerror)) from None
    if not text:
        raise ToolError("the %s file %s is empty" % (what, path))
    return text


def _gateway_config(args):
    if args.no_register:
        return None
    path = args.gateway_config or GATEWAY_CONFIG_DEFAULT
    if not os.path.exists(path):
        raise ToolError("no gateway config at %s: give --gateway-config FILE, or --no-register "
                        "to register the device later" % path)
    return path


def _gateway_prefix(path):
    from vigil_gateway import GatewayError, config

    try:
        return config.load(path).mqtt.prefix
    except GatewayError as exc:
        raise ToolError("gateway config: %s" % exc) from None


def provision_command(args):
    from .provision import provision

    gateway = _gateway_config(args)
    prefix = args.mqtt_prefix or (_gateway_prefix(gateway) if gateway else "vigil")
    port = args.mqtt_port or (8883 if args.mqtt_ca else 1883)
    wifi_password = (_read_secret(args.wifi_password_file, "Wi-Fi password")
                     if args.wifi_password_file else None)
    from .device_config import beacons, gnss, man_down

    settings = man_down(on=not args.no_man_down, fall=not args.no_fall,
                        no_motion_s=args.no_motion_s, cancel_s=args.cancel_s)
    module = gnss(rx=args.gnss_rx, tx=args.gnss_tx, uart=args.gnss_uart, baud=args.gnss_baud)
    scans = beacons(scan_ms=args.beacons_scan_ms, at_checkin=args.beacons_at_checkin)
    return provision(args.device_file, args.mqtt_host, port=args.port, mqtt_port=port,
                     mqtt_prefix=prefix, mqtt_ca_path=args.mqtt_ca, wifi_ssid=args.wifi_ssid,
                     wifi_password=wifi_password, checkin_interval_s=args.checkin_interval,
                     low_battery_pct=args.low_battery, ble=False if args.no_ble else None,
                     gateway_config=gateway,
                     broker_files=args.broker_files, replace=args.replace,
                     man_down=settings if settings is not None else False, gnss=module,
                     beacons=scans, wifi_scan_every=args.wifi_scan_every,
                     boot_timeout_s=args.boot_timeout)


def flash_command(args):
    from .provision import flash

    return flash(args.port, args.boot_timeout)


def monitor_command(args):
    from .device_record import load_key
    from .monitor import monitor
    from .serial_board import find_port

    key_file = args.device_file or args.key_file
    key = load_key(key_file) if key_file else None
    return monitor(args.port or find_port(), key, args.duration, args.reset)


def sim_command(args):
    from .sim import run

    return run(args.device_file, script=args.script, state_dir=args.state_dir,
               mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, mqtt_prefix=args.mqtt_prefix,
               quick=args.quick, battery=args.battery, checkin_interval_s=args.checkin_interval,
               hardware_taps=args.hardware_taps, link=args.link, ble_hci=args.ble_hci,
               gnss=args.gnss, wifi_scan=args.wifi_scan, access_points=args.wifi_ap)


def board_virtual_command(args):
    from .virtual_board import run_forever

    return run_forever(args.flash, romfs_kib=args.romfs_kib)
