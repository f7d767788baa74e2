"""`vigil gateway`: run the edge gateway and manage its devices, incidents and broker files."""
import argparse
import datetime
import functools
import json
import os

from . import ToolError

DEFAULT_CONFIG = "gateway.toml"


def _config_parent():
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", default=os.environ.get("VIGIL_GATEWAY_CONFIG",
                                                           DEFAULT_CONFIG),
                        help="the gateway's TOML config (default: $VIGIL_GATEWAY_CONFIG or "
                             "gateway.toml)")
    return parent


def register(sub):
    common = _config_parent()
    gateway = sub.add_parser("gateway", help="the edge gateway: run it, manage devices")
    gw = gateway.add_subparsers(dest="gateway_command", required=True, metavar="ACTION")

    run = gw.add_parser("run", parents=[common], help="run the gateway in the foreground")
    run.set_defaults(func=_handler(run_command))

    device = gw.add_parser("device", help="the device registry")
    dev = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    add = dev.add_parser("add", parents=[common], help="register a device")
    add.add_argument("device", help="device id, 8 hex digits (as in MQTT topics)")
    _secret_options(add)
    add.add_argument("--interval", type=int, help="expected check-in interval in seconds")
    add.add_argument("--label", default="", help="a short name for operators")
    add.add_argument("--protocol", type=int, choices=(1, 2), default=2,
                     help="the frame version of the unit's firmware: 2 (this release), or 1 "
                          "for a unit still on v1 firmware (raised to 2 by its first v2 frame)")
    add.add_argument("--counter-floor", type=int, metavar="N",
                     help="where the unit's counters start, if known (a new key made here: 1); "
                          "every counter from it up that this gateway has not stored is taken "
                          "as a late frame, however late, never as a replay")
    _downlinks_after_option(add)
    add.set_defaults(func=_handler(add_command))

    ls = dev.add_parser("list", parents=[common], help="list registered devices")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_handler(list_command))

    revoke = dev.add_parser("revoke", parents=[common], help="reject a device's frames from now")
    revoke.add_argument("device")
    revoke.set_defaults(func=_handler(revoke_command))

    rotate = dev.add_parser("rotate-key", parents=[common], help="give a device a new key")
    rotate.add_argument("device")
    _secret_options(rotate)
    rotate.set_defaults(func=_handler(rotate_command))

    imp = dev.add_parser("import", parents=[common],
                         help="register devices from provisioning records (JSON files)")
    imp.add_argument("records", nargs="+", metavar="RECORD")
    _downlinks_after_option(imp)
    imp.set_defaults(func=_handler(import_command))

    inc = gw.add_parser("incidents", parents=[common], help="list incidents")
    inc.add_argument("--open", action="store_true", help="only incidents not closed")
    inc.add_argument("--device", help="only this device")
    inc.add_argument("--audit", action="store_true", help="show each incident's audit trail")
    inc.add_argument("--json", action="store_true", help="one JSON object per line")
    inc.set_defaults(func=_handler(incidents_command))

    wearer = gw.add_parser("wearer", help="wearer profiles (forwarded with incidents)")
    wr = wearer.add_subparsers(dest="wearer_command", required=True, metavar="ACTION")
    wset = wr.add_parser("set", parents=[common], help="set a device's wearer profile")
    wset.add_argument("device", help="device id, 8 hex digits")
    wset.add_argument("--name", required=True, help="the wearer's name")
    wset.add_argument("--contact", action="append", default=[], metavar="NAME,PHONE,RELATION",
                      help="an escalation contact (repeat for several, in calling order)")
    wset.add_argument("--notes", default="", help="what a responder should know")
    wset.add_argument("--zone", type=int, default=1,
                      help="the wearer's zone at the alarm receiving centre (1-999)")
    wset.add_argument("--dc09-account", default="", metavar="HEX",
                      help="the wearer's own account at the alarm receiving centre (3-16 hex "
                           "digits), when the ARC gives each wearer one")
    wset.set_defaults(func=_handler(wearer_set_command))
    wshow = wr.add_parser("show", parents=[common], help="show a device's wearer profile")
    wshow.add_argument("device")
    wshow.set_defaults(func=_handler(wearer_show_command))
    wls = wr.add_parser("list", parents=[common], help="list wearer profiles")
    wls.add_argument("--json", action="store_true", help="one JSON object per line")
    wls.set_defaults(func=_handler(wearer_list_command))

    beacon = gw.add_parser("beacon", help="the places of BLE beacons and Wi-Fi access points "
                                          "(where a wearer is, from what the wearable heard)")
    bc = beacon.add_subparsers(dest="beacon_command", required=True, metavar="ACTION")
    badd = bc.add_parser("add", parents=[common], help="place a beacon or access point")
    badd.add_argument("kind", choices=("ble", "wifi"))
    badd.add_argument("identifier", help="ble: an iBeacon UUID:major:minor or an Eddystone-UID "
                                         "namespace:instance; wifi: the BSSID")
    badd.add_argument("--place", required=True, help="the place's name, as responders read it")
    badd.add_argument("--floor", default="", help="the floor (free text: 2, G, B1)")
    badd.add_argument("--room", default="", help="the room or area")
    badd.add_argument("--lat", help="latitude, decimal degrees (with --lon)")
    badd.add_argument("--lon", help="longitude, decimal degrees (with --lat)")
    badd.set_defaults(func=_handler(beacon_add_command))
    bls = bc.add_parser("list", parents=[common], help="list placed beacons")
    bls.add_argument("--json", action="store_true", help="one JSON object per line")
    bls.set_defaults(func=_handler(beacon_list_command))
    brm = bc.add_parser("remove", parents=[common], help="remove a beacon or access point")
    brm.add_argument("kind", choices=("ble", "wifi"))
    brm.add_argument("identifier")
    brm.set_defaults(func=_handler(beacon_remove_command))

    out = gw.add_parser("outbox", parents=[common],
                        help="incident events queued for responder backends")
    out.add_argument("--pending", action="store_true", help="only those not yet delivered")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.set_defaults(func=_handler(outbox_command))

    broker = gw.add_parser("broker-config", parents=[common],
                           help="write Mosquitto's password, ACL and configuration files "
                                "from the registry")
    broker.add_argument("--out", required=True,
                        help="folder for `passwords`, `acl` and `vigil.conf`")
    broker.add_argument("--outage-hours", type=float, default=24.0,
                        help="how long a gateway outage the broker's queues should ride out "
                             "(default 24)")
    broker.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="a listener for the broker (repeat for several; default "
                             "127.0.0.1:1883, this machine only: wearables on the network need "
                             "e.g. 0.0.0.0:1883; with --tls, :8883 on every address)")
    broker.add_argument("--tls", metavar="DIR",
                        help="every listener takes TLS only, with the CA and the broker "
                             "certificate `vigil gateway tls-setup` wrote in DIR")
    broker.add_argument("--reload", action="store_true",
                        help="then make the running broker reread the files (SIGHUP): added "
                             "and revoked devices take effect without a restart")
    broker.add_argument("--pid-file", default="/run/mosquitto/mosquitto.pid",
                        help="the broker's pid file, for --reload (default: Debian's)")
    broker.set_defaults(func=_handler(broker_config_command))

    tls = gw.add_parser("tls-setup", parents=[common],
                        help="make the site CA (once), the broker's certificate and the CA file "
                             "wearables are provisioned with")
    tls.add_argument("--out", required=True, help="folder for the CA and certificate files")
    tls.add_argument("--name", action="append", metavar="HOST",
                     help="a host name or address wearables reach the broker by (repeat; "
                          "default: this machine's name; localhost and 127.0.0.1 always)")
    tls.add_argument("--site", default="Site", help="the site's name, in the CA's name")
    tls.set_defaults(func=_handler(tls_setup_command))

    check = gw.add_parser("check-config", parents=[common],
                          help="check the config and every file it names (secrets, CA, "
                               "certificates, keys, device key files), as `run` would")
    check.set_defaults(func=_handler(check_config_command))

    bak = gw.add_parser("backup", parents=[common],
                        help="copy the database and the key files into a new folder (safe while "
                             "the gateway runs)")
    bak.add_argument("dest", nargs="?", help="the backup's folder (new, or empty)")
    bak.add_argument("--rotate", action="store_true",
                     help="instead of DEST: a new folder in [backup] dir, keeping the newest "
                          "[backup] keep (the daily timer's)")
    bak.set_defaults(func=_handler(backup_command))
    res = gw.add_parser("restore", parents=[common],
                        help="put a backup into gateway.data_dir (no database there, no gateway "
                             "running), downlink counters moved past the backup's")
    res.add_argument("src", nargs="?", help="a folder written by `vigil gateway backup`")
    res.add_argument("--database-restored", action="store_true",
                     help="PostgreSQL: the database was restored with PostgreSQL's tools; move "
                          "its downlink counters past it (before any worker starts)")
    res.set_defaults(func=_handler(restore_command))

    svc = gw.add_parser("install-service",
                        help="run the gateway as a systemd service: its system user, folders, "
                             "a first config and a hardened unit (as root)")
    svc.add_argument("--user", default="vigil", help="the service's system user (default vigil)")
    svc.add_argument("--exec", dest="executable",
                     help="the vigil command the unit runs (default: this one)")
    svc.add_argument("--root", default="/",
                     help="install under this folder instead of / (for packaging)")
    svc.set_defaults(func=_handler(install_service_command))


def _secret_options(parser):
    parser.add_argument("--key-file", help="file holding the device key in hex (default: a new "
                                           "random key, written to --record-out)")
    parser.add_argument("--mqtt-password-file",
                        help="file holding the device's broker password (default with "
                             "--record-out: a new random one)")
    parser.add_argument("--record-out", help="write a provisioning record (device id, key, "
                                             "broker password) here, readable only by you")


def _handler(fn):
    """Turn the gateway's own errors, and a file or folder the operator named that cannot be
    used (an OSError: missing, not a folder, not writable), into ToolError: one line, exit
    status 2. A closed pipe is left to the CLI (exit status 141)."""
    @functools.wraps(fn)
    def wrapper(args):
        from vigil_gateway import GatewayError

        try:
            return fn(args)
        except GatewayError as exc:
            raise ToolError(str(exc)) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise ToolError(_os_error(args, exc)) from None
    return wrapper


def _os_error(args, exc):
    """One line for an OSError: the command, the path and the reason (never file contents)."""
    words = ["gateway"] + [getattr(args, name) for name in (
        "gateway_command", "device_command", "wearer_command", "beacon_command")
        if getattr(args, name, None)]
    reason = exc.strerror or exc.__class__.__name__
    if exc.filename is None:
        return "%s: %s" % (" ".join(words), reason)
    path = str(exc.filename)
    if exc.filename2 is not None:
        path = "%s -> %s" % (path, exc.filename2)
    return "%s: %s: %s" % (" ".join(words), path, reason)


def _load(args):
    from vigil_gateway import config

    return config.load(args.config)


def _postgresql(config):
    """The PostgreSQL database's URL when [store] url names one, else None (SQLite)."""
    from vigil_gateway import store_url

    url = store_url.parse(config.store.url)
    return url.url if url.backend == store_url.POSTGRESQL else None


def _state(args):
    """(SQLite connection or None, registry, store) of the gateway the config names: on
    PostgreSQL its database (the tables made if missing) and the key files in data_dir."""
    config = _load(args)
    url = _postgresql(config)
    if url is None:
        from vigil_gateway.service import open_state

        return open_state(config)
    from vigil_gateway.registry_pg import PostgresRegistry
    from vigil_gateway.store_pg import PostgresStore

    store = PostgresStore(url, config.supervision.default_interval_s, config.supervision.grace_s)
    store.ensure_schema()
    return None, PostgresRegistry(store, os.path.join(config.gateway.data_dir, "keys")), store


def _sqlite_only(args, what, instead):
    """ToolError for a command PostgreSQL's own tools do instead: one line naming it."""
    config = _load(args)
    if _postgresql(config) is not None:
        raise ToolError("gateway %s: not done by Vigil on PostgreSQL ([store] url in %s); %s"
                        % (what, args.config, instead))
    return config


def _read_secret_file(path, what):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        raise ToolError("cannot read the %s file %s: %s" % (what, path, exc.strerror)) from None
    if not text:
        raise ToolError("the %s file %s is empty" % (what, path))
    return text


def _secrets(args):
    """(key, mqtt password or None, generated?) from the options, generating what is missing."""
    from vigil_gateway import registry

    key = (registry.parse_key_hex(_read_secret_file(args.key_file, "key"), args.key_file)
           if args.key_file else None)
    password = (_read_secret_file(args.mqtt_password_file, "password")
                if args.mqtt_password_file else None)
    if key is None and not args.record_out:
        raise ToolError("give --key-file, or --record-out FILE to receive a new random key")
    if key is None:
        key = registry.new_key()
    if password is None and args.record_out:
        password = registry.new_password()
    return key, password


def _write_record(args, device_id, key, password, interval=None, label="", protocol=2):
    from vigil_gateway import registry

    if not args.record_out:
        return
    if os.path.exists(args.record_out):
        raise ToolError("%s exists: not overwriting a provisioning record" % args.record_out)
    folder = os.path.dirname(args.record_out)
    if folder and not os.path.isdir(folder):  # as `vigil keygen --out units/x.json` does
        try:
            os.makedirs(folder, mode=0o700)
        except OSError as exc:
            raise ToolError("cannot make the folder %s for %s: %s" % (
                folder, args.record_out, exc.strerror)) from None
    registry.write_private_file(args.record_out, registry.provisioning_record(
        device_id, key, password, interval, label, protocol))
    print("provisioning record written to %s (keep it secret; give it to the wearable)"
          % args.record_out)


def _downlinks_after_option(parser):
    parser.add_argument("--downlinks-after", type=int, metavar="N",
                        help="a device moving in from another home (a site gateway, or the "
                             "workers on PostgreSQL): the last downlink counter that home "
                             "used, from its `device list --json`, plus a margin; this "
                             "gateway's downlinks to it start above N, so none goes back")


def run_command(args):
    config = _load(args)
    url = _postgresql(config)
    if url is not None:  # one worker of those sharing the database
        from vigil_gateway import service_pg

        return service_pg.run(config, url)
    from vigil_gateway import service

    return service.main(config)


def add_command(args):
    from vigil_gateway import registry

    device_id = registry.parse_device_id(args.device)
    key, password = _secrets(args)
    _, reg, _ = _state(args)
    device = reg.get(device_id)
    if device is not None:  # run again: the same device with the same record changes nothing
        print(_added_before(args, reg, device, key, password))
        return 0
    floor = args.counter_floor
    if floor is None and not args.key_file:
        floor = 0  # a key made just now has sealed nothing yet: every counter is this unit's
    if args.record_out and os.path.exists(args.record_out):
        return _finish_add(args, reg, device_id, key, floor)
    _write_record(args, device_id, key, password, args.interval, args.label, args.protocol)
    reg.add(device_id, key, password, args.interval, args.label, args.protocol, floor,
            args.downlinks_after)
    print("added device %s" % registry.device_hex(device_id))
    return 0


def _finish_add(args, reg, device_id, key, floor):
    """A first `device add --record-out` that wrote its record and stopped before registering
    the device (killed, a full disk): run again, it registers the device from that record, so
    the step can always be run again. A record of another device, or with another key than
    --key-file's, is refused and left as it is."""
    from vigil_gateway import GatewayError, registry

    name = registry.device_hex(device_id)
    record = _read_record(args.record_out)
    if not isinstance(record, dict) or _record_id(record) != device_id:
        raise ToolError("%s exists and is not the provisioning record of device %s: not "
                        "overwriting it (nothing changed)" % (args.record_out, name))
    if args.key_file and record.get("key") != key.hex():
        raise ToolError("%s holds another key for device %s than %s (nothing changed)"
                        % (args.record_out, name, args.key_file))
    _check_records([(args.record_out, record)])
    try:
        reg.import_record(dict(record, counter_floor=floor, downlinks_after=args.downlinks_after))
    except GatewayError as exc:
        raise ToolError("%s: %s" % (args.record_out, exc)) from None
    print("added device %s from its provisioning record %s (written by an earlier run that "
          "stopped before registering it)" % (name, args.record_out))
    return 0


def _added_before(args, reg, device, key, password):
    """What to say when `device add` finds the device registered: the same record (the
    --record-out file that add wrote, or the --key-file and --mqtt-password-file given) is
    left as it is; anything else is refused, naming the device (and the record's file)."""
    from vigil_gateway import registry

    name = registry.device_hex(device.device_id)
    if args.record_out and os.path.exists(args.record_out):
        record = _read_record(args.record_out)
        if not isinstance(record, dict) or _record_id(record) != device.device_id:
            raise ToolError("device %s is already registered, and %s is not its provisioning "
                            "record (nothing changed)" % (name, args.record_out))
        problem = _differs(reg, device, record)
        if problem is None and args.key_file:
            problem = _differs(reg, device, dict(record, key=key.hex()))
        where = args.record_out
    elif args.key_file:
        problem = _differs(reg, device, {"key": key.hex(), "mqtt_password": password})
        where = args.key_file
    else:
        raise ToolError("device %s is already registered (nothing changed)" % name)
    if problem:
        raise ToolError("%s: device %s is already registered %s; nothing changed"
                        % (where, name, problem))
    return "device %s is already registered with this record (%s): left as it is" % (
        name, where)


def rotate_command(args):
    from vigil_gateway import registry

    device_id = registry.parse_device_id(args.device)
    key, password = _secrets(args)
    _, reg, _ = _state(args)
    if reg.get(device_id) is None:
        raise ToolError("no device %s in the registry" % registry.device_hex(device_id))
    _write_record(args, device_id, key, password)
    device = reg.rotate_key(device_id, key, password)
    print("device %s now uses key version %d" % (registry.device_hex(device_id),
                                                 device.key_version))
    return 0


def revoke_command(args):
    from vigil_gateway import registry

    device_id = registry.parse_device_id(args.device)
    _, reg, _ = _state(args)
    reg.revoke(device_id)
    print("revoked device %s: its frames are rejected from now on" %
          registry.device_hex(device_id))
    return 0


def import_command(args):
    """Every record checked before any is added, and on SQLite the batch added in one
    transaction (it goes in whole or not at all, a crash midway included); a device already
    registered with the same key and broker password is left as it is."""
    from vigil_gateway import GatewayError, registry

    records = [(path, _read_record(path)) for path in args.records]
    if args.downlinks_after is not None:  # (one device's old home)
        if len(records) > 1:
            raise ToolError("--downlinks-after is one device's: give one RECORD with it")
        records = [(path, dict(record, downlinks_after=args.downlinks_after)
                    if isinstance(record, dict) else record) for path, record in records]
    _check_records(records)
    _, reg, _ = _state(args)
    plan, seen = [], {}
    for path, record in records:
        device_id = registry.parse_device_id(record["device_id"])
        name = registry.device_hex(device_id)
        if device_id in seen:
            raise ToolError("%s: device %s is also in %s (nothing imported)"
                            % (path, name, seen[device_id]))
        seen[device_id] = path
        device = reg.get(device_id)
        if device is not None:
            problem = _differs(reg, device, record)
            if problem:
                raise ToolError("%s: device %s is already registered %s (nothing imported)"
                                % (path, name, problem))
        plan.append((path, record, device is not None))
    said = []
    with reg.batch():  # on SQLite one transaction: all or none, a crash midway included
        for path, record, already in plan:
            name = registry.device_hex(registry.parse_device_id(record["device_id"]))
            if already:
                said.append("device %s is already registered with this record (%s): left as "
                            "it is" % (name, path))
                continue
            try:
                reg.import_record(record)
            except GatewayError as exc:
                raise ToolError("%s: %s" % (path, exc)) from None
            said.append("imported device %s" % name)
    print("\n".join(said))
    return 0


def _read_record(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as exc:
        raise ToolError("cannot read %s: %s" % (path, exc.strerror)) from None
    except ValueError as exc:
        raise ToolError("%s is not JSON: %s" % (path, exc)) from None


def _check_records(records):
    """Each record through the registry's own checks, in a registry of its own (thrown away),
    so a bad record anywhere in the batch stops it before anything is added."""
    import tempfile

    from vigil_gateway import GatewayError
    from vigil_gateway.db import open_database
    from vigil_gateway.registry import Registry

    with tempfile.TemporaryDirectory(prefix="vigil-import-") as scratch:
        conn = open_database(scratch, "normal")
        try:
            reg = Registry(conn, os.path.join(scratch, "keys"))
            for path, record in records:
                try:
                    if isinstance(record, dict) and reg.get(_record_id(record)) is not None:
                        continue  # twice in the batch: said so with both files' names
                    reg.import_record(record)
                except GatewayError as exc:
                    raise ToolError("%s: %s (nothing imported)" % (path, exc)) from None
        finally:
            conn.close()


def _record_id(record):
    from vigil_gateway import registry

    return registry.parse_device_id(record.get("device_id", ""))


def _differs(reg, device, record):
    """Why a registered device is not the one this record describes, or None."""
    import base64

    import vigil_protocol as p
    from vigil_gateway import broker_config, registry

    if device.state != registry.ACTIVE:
        return "and %s: give the wearable a new record (`vigil keygen`)" % device.state
    probe = b"vigil import: same key?"
    key = registry.parse_key_hex(record["key"], "the provisioning record")
    if reg.key(device).tag(p.UP, probe) != p.DeviceKey(key).tag(p.UP, probe):
        return "with another key (use `vigil gateway device rotate-key` to change it)"
    password = record.get("mqtt_password")
    stored = device.mqtt_password_hash
    if bool(password) != bool(stored):
        return "with%s a broker password" % ("out" if password else "")
    if password:
        _, _, iterations, salt, _ = stored.split("$")
        if broker_config.mosquitto_hash(password, int(iterations),
                                        base64.b64decode(salt)) != stored:
            return "with another broker password"
    return None


def _when(ts):
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def list_command(args):
    from vigil_gateway import registry

    conn, reg, store = _state(args)
    contacts = ({c.device_id: c for c in store.contacts()} if conn is None else None)
    for device in reg.devices():
        contact = (contacts.get(device.device_id) if contacts is not None else
                   store.contact(device.device_id))
        row = {"device": registry.device_hex(device.device_id), "state": device.state,
               "key_version": device.key_version, "protocol": device.protocol,
               "counter_floor": device.counter_floor,
               "interval_s": device.interval_s,
               "label": device.label, "broker_password": bool(device.mqtt_password_hash),
               "last_seen": contact.last_seen if contact else None,
               "lost_contact": bool(contact and contact.lost_incident),
               # (what a new home's --downlinks-after starts above)
               "downlink_counter": store.downlink_counter(device.device_id)}
        if args.json:
            print(json.dumps(row))
        else:
            print("%s  %-8s key v%-3d protocol v%d  last seen %-20s %s%s" % (
                row["device"], row["state"], row["key_version"], row["protocol"],
                _when(row["last_seen"]),
                "LOST CONTACT " if row["lost_contact"] else "", row["label"]))
    return 0


def incidents_command(args):
    from vigil_gateway import incidents, registry

    conn, _, store = _state(args)
    device_id = registry.parse_device_id(args.device) if args.device else None
    states = [incidents.OPEN, incidents.NEEDS_HELP] if args.open else None
    if conn is None:  # PostgreSQL: what is committed, no transaction left open
        listed, audit_of = store.committed_incidents(device_id, states), store.committed_audit
    else:
        listed, audit_of = store.incidents(device_id, states), store.audit
    for incident in listed:
        audit = audit_of(incident.id)
        if args.json:
            row = incident._asdict()
            row["device"] = registry.device_hex(row.pop("device_id"))
            row["audit"] = [{"at": a.at, "event": a.event, "detail": a.detail} for a in audit]
            print(json.dumps(row))
            continue
        print("#%-5d %s  %-12s %-11s %s  counter %s" % (
            incident.id, registry.device_hex(incident.device_id), incident.kind, incident.state,
            _when(incident.opened_at), incident.counter if incident.counter else "-"))
        if args.audit:
            for entry in audit:
                print("        %s  %-16s %s" % (_when(entry.at), entry.event, entry.detail))
    return 0


def broker_config_command(args):
    import sys

    from vigil_gateway import ConfigError, broker_config
    from vigil_gateway.config import read_secret, secret_problem

    config = _load(args)
    if not config.mqtt.username or not config.mqtt.password_file:
        raise ConfigError("mqtt.username", "the broker these files configure admits no "
                          "anonymous client: give the gateway its own user (mqtt.username "
                          "and mqtt.password_file in %s)" % args.config)
    if not 0 < args.outage_hours <= 24 * 365:
        raise ToolError("--outage-hours must be more than 0 and at most a year")
    tls = _broker_tls(args.tls)
    default = ((broker_config.DEFAULT_TLS_HOST, broker_config.DEFAULT_TLS_PORT) if tls else
               (broker_config.DEFAULT_HOST, broker_config.DEFAULT_PORT))
    try:
        listeners = [broker_config.parse_listen(text) for text in args.listen or
                     ["%s:%d" % default]]
    except ValueError as exc:
        raise ToolError("--listen: %s" % exc) from None
    errors, warnings = broker_config.lockout(listeners, tls, config.mqtt)
    if errors:  # nothing written: the gateway could not connect to such a broker
        raise ToolError(errors[0] + " (nothing written)")
    for warning in warnings:
        print("vigil: WARNING: %s" % warning, file=sys.stderr)
    problem = secret_problem(config.mqtt.password_file)
    if problem:  # the gateway itself refuses to start with it (`vigil gateway run`)
        print("vigil: warning: %s" % problem, file=sys.stderr)
    password = read_secret(config.mqtt.password_file, "mqtt.password_file", private=False)
    _, reg, _ = _state(args)
    written = broker_config.write_broker_files(
        args.out, reg.devices(), config.mqtt.prefix, config.mqtt.username, password,
        config.supervision.default_interval_s, args.outage_hours, listeners, tls)
    if not written["group_given"]:
        print("vigil: warning: could not give the files to group %s (run as root, or chgrp %s "
              "them): Debian's broker cannot read them as they are" % (
                  written["group"], written["group"]), file=sys.stderr)
    print("wrote %s, %s and %s (%s)" % (
        written["passwords"], written["acl"], written["conf"],
        "mode 0640, group %s" % written["group"] if written["group"] and written["group_given"]
        else "mode 0600"))
    print("queues: max_queued_messages %d, max_queued_bytes %d (a %g h outage of the gateway)"
          % (written["max_queued_messages"], written["max_queued_bytes"], args.outage_hours))
    print("listeners: %s" % ", ".join("%s:%d" % (host or "*", port) for host, port in listeners))
    print("include %s from mosquitto.conf (Debian: write the files into /etc/mosquitto/conf.d, "
          "or `ln -s %s /etc/mosquitto/conf.d/`: Mosquitto takes include_dir from its main file "
          "only); the main file keeps persistence_location and sets no listener of its own; "
          "restart Mosquitto when the listeners change, else reload it (--reload)" % (
              broker_config.CONF_NAME, written["conf"]))
    if args.reload:
        pid = broker_config.reload(args.pid_file)
        print("broker (pid %d) reloaded: it reads the password and ACL files again" % pid)
    return 0


def _broker_tls(directory):
    """The TLS files tls-setup wrote in `directory`, for the broker's listeners, or None."""
    if not directory:
        return None
    from vigil_gateway import tls_setup

    directory = os.path.abspath(directory)
    tls = {"cafile": os.path.join(directory, tls_setup.CA_CERT),
           "certfile": os.path.join(directory, tls_setup.BROKER_CERT),
           "keyfile": os.path.join(directory, tls_setup.BROKER_KEY)}
    for path in tls.values():
        if not os.path.isfile(path):
            raise ToolError("--tls: no %s (make the files with `vigil gateway tls-setup --out %s`)"
                            % (path, directory))
    return tls


def check_config_command(args):
    from vigil_gateway import config_files
    from vigil_gateway.db import DB_NAME

    config = _load(args)
    checked = config_files.check(config)
    keys = 0
    if _postgresql(config) is not None or os.path.exists(
            os.path.join(config.gateway.data_dir, DB_NAME)):
        from vigil_gateway import GatewayError, registry

        _, reg, _ = _state(args)
        for device in reg.devices():
            if device.state != registry.ACTIVE:
                continue
            try:
                reg.key(device)
            except GatewayError as exc:
                raise ToolError("device %s: %s" % (registry.device_hex(device.device_id), exc)) \
                    from None
            keys += 1
    print("%s: the config and %d files it names are fit to run with; %d device key files "
          "readable" % (args.config, len(checked), keys))
    return 0


def backup_command(args):
    from vigil_gateway import backup

    if bool(args.dest) == args.rotate:
        raise ToolError("give the backup's folder DEST, or --rotate (into [backup] dir)")
    config = _sqlite_only(args, "backup", "back up the database with PostgreSQL's own tools "
                          "(pg_dump, or base backups and WAL archiving) and data_dir's keys "
                          "folder with it")
    dest, removed = args.dest, []
    if args.rotate:
        made, dest, removed = backup.rotate(config.gateway.data_dir, backup.rotation_dir(config),
                                            config.backup.keep)
    else:
        made = backup.backup(config.gateway.data_dir, dest)
    print("backup of %d devices, %d incidents, %d frames in %s (taken %s; keep it as secret as "
          "the gateway's keys)" % (made["devices"], made["incidents"], made["frames"],
                                   dest, made["created_at"]))
    if args.rotate:
        print("%d backups kept in %s%s" % (
            len(backup.rotated(os.path.dirname(dest))), os.path.dirname(dest),
            "; removed the oldest: %s" % ", ".join(removed) if removed else ""))
    return 0


def restore_command(args):
    from vigil_gateway import backup

    config = _load(args)
    if _postgresql(config) is not None:
        return _database_restored(args)
    if args.database_restored or not args.src:
        raise ToolError("gateway restore: give the backup folder (--database-restored is for "
                        "a PostgreSQL database restored with its own tools)")
    data_dir = config.gateway.data_dir
    made = backup.restore(args.src, data_dir)
    print("restored %d devices, %d incidents from the backup taken %s into %s; every device's "
          "downlink counter moved %d past the backup's; %d stored downlinks the wearables may "
          "not have signed again above it" % (
              made["devices"], made["incidents"], made["created_at"], data_dir,
              backup.DOWNLINK_MARGIN, made["downlinks_signed_again"]))
    return 0


def _database_restored(args):
    """On PostgreSQL: after the database (and the keys folder) came back from PostgreSQL's own
    tools, what restore does on SQLite (restore_pg.py)."""
    from vigil_gateway import backup, restore_pg

    if args.src or not args.database_restored:
        raise ToolError("gateway restore: on PostgreSQL restore the database with its own "
                        "tools (pg_restore, a base backup) and the keys folder with it, then, "
                        "before any worker starts, run `vigil gateway restore "
                        "--database-restored` (gateway/README.md)")
    _, reg, store = _state(args)
    try:
        devices, signed = restore_pg.after_restore(store, reg)
    finally:
        store.close()
    print("every device's downlink counter (%d devices) moved %d past the restored database's; "
          "%d stored downlinks the wearables may not have signed again above it"
          % (devices, backup.DOWNLINK_MARGIN, signed))
    return 0


def install_service_command(args):
    import sys

    from vigil_gateway import service_install

    done = service_install.install(args.root, args.user, args.executable)
    for warning in done["warnings"]:
        print("vigil: WARNING: %s" % warning, file=sys.stderr)
    print("%s system user %s" % ("made" if done["user_made"] else "kept", done["user"]))
    print("%s %s (the gateway's broker password: %s)" % (
        "wrote" if done["config_made"] else "kept", done["config"], done["password_file"]))
    print("state %s, broker files %s, unit %s" % (done["state_dir"], done["broker_dir"],
                                                   done["unit"]))
    print("daily backups: %s and %s" % (done["timer"], done["backup_unit"]))
    print("next: systemctl daemon-reload && systemctl enable --now vigil-gateway %s; run the "
          "gateway's commands as its user: runuser -u %s -- vigil gateway ... --config %s"
          % (service_install.TIMER_NAME, done["user"],
             service_install.CONFIG_DIR + "/gateway.toml"))
    return 0


def tls_setup_command(args):
    from vigil_gateway import tls_setup

    made = tls_setup.setup(args.out, args.name or tls_setup.default_names(), args.site)
    print("%s the site CA: %s (its key %s: keep it offline once the broker's certificate is "
          "made)" % ("made" if made["ca_made"] else "kept", made["ca"], made["ca_key"]))
    print("broker certificate %s and key %s, for %s, valid until %s" % (
        made["cert"], made["key"], ", ".join(made["names"]),
        made["not_after"].strftime("%Y-%m-%d")))
    print("wearables' CA file (provisioning, mqtt.ca_file): %s; the gateway's [mqtt.tls] "
          "ca_file: the same" % made["wearables_ca"])
    print("next: vigil gateway broker-config --out /etc/mosquitto/conf.d --tls %s" % args.out)
    return 0


def _wearers(args):
    from vigil_gateway.wearers import Wearers
    from vigil_gateway.wearers_pg import PostgresWearers

    conn, _, store = _state(args)
    return Wearers(conn) if conn is not None else PostgresWearers(store)


def _wearer_row(w):
    return {"device": "%08x" % w.device_id, "name": w.name, "contacts": w.contacts,
            "notes": w.notes, "zone": w.zone, "dc09_account": w.dc09_account or None}


def wearer_set_command(args):
    from vigil_gateway import registry, wearers

    device_id = registry.parse_device_id(args.device)
    contacts = [wearers.parse_contact(c) for c in args.contact]
    _wearers(args).set(device_id, args.name, contacts, args.notes, args.zone,
                       dc09_account=args.dc09_account)
    print("wearer profile set for %s (%d escalation contact%s)"
          % (registry.device_hex(device_id), len(contacts), "" if len(contacts) == 1 else "s"))
    return 0


def wearer_show_command(args):
    from vigil_gateway import registry

    device_id = registry.parse_device_id(args.device)
    w = _wearers(args).get(device_id)
    if w is None:
        raise ToolError("no wearer profile for %s (set one with `vigil gateway wearer set`)"
                        % registry.device_hex(device_id))
    print("device   %08x\nname     %s\nzone     %d\nnotes    %s" % (w.device_id, w.name,
                                                                   w.zone, w.notes or "-"))
    if w.dc09_account:
        print("account  %s (DC-09)" % w.dc09_account)
    for i, c in enumerate(w.contacts, 1):
        print("contact%d %s, %s (%s)" % (i, c["name"], c["phone"], c["relation"]))
    return 0


def wearer_list_command(args):
    for w in _wearers(args).all():
        if args.json:
            print(json.dumps(_wearer_row(w)))
        else:
            print("%08x  %-24s zone %-3d %d contact(s)" % (w.device_id, w.name, w.zone,
                                                         len(w.contacts)))
    return 0


def _beacons(args):
    from vigil_gateway.beacons import Beacons
    from vigil_gateway.beacons_pg import PostgresBeacons

    conn, _, store = _state(args)
    return Beacons(conn) if conn is not None else PostgresBeacons(store)


def _beacon_row(b):
    return {"kind": b.kind, "identifier": b.identifier, "short_id": b.short_id.hex(),
            "place": b.place, "floor": b.floor, "room": b.room, "lat": b.lat, "lon": b.lon}


def beacon_add_command(args):
    b = _beacons(args).add(args.kind, args.identifier, args.place, args.floor, args.room,
                           args.lat, args.lon)
    print("%s %s placed at %s (short id %s)" % (b.kind, b.identifier, _where(b),
                                               b.short_id.hex()))
    return 0


def _where(b):
    parts = [b.place] + (["floor " + b.floor] if b.floor else []) + ([b.room] if b.room else [])
    if b.lat is not None:
        parts.append("%.6f,%.6f" % (b.lat, b.lon))
    return ", ".join(parts)


def beacon_list_command(args):
    for b in _beacons(args).all():
        if args.json:
            print(json.dumps(_beacon_row(b)))
        else:
            print("%-4s  %-44s %s  %s" % (b.kind, b.identifier, b.short_id.hex(), _where(b)))
    return 0


def beacon_remove_command(args):
    _beacons(args).remove(args.kind, args.identifier)
    print("removed %s %s" % (args.kind, args.identifier))
    return 0


def outbox_command(args):
    from vigil_gateway.outbox import Outbox

    conn, _, store = _state(args)
    items = (Outbox(conn).items(pending_only=args.pending) if conn is not None else
             store.committed_outbox(pending_only=args.pending))
    for item in items:
        row = {"id": item.id, "destination": item.destination, "incident": item.incident_id,
               "key": item.key, "event": item.event, "attempts": item.attempts,
               "created_at": item.created_at, "delivered_at": item.delivered_at,
               "last_error": item.last_error}
        if args.json:
            print(json.dumps(row))
        else:
            print("%-5d %-8s #%-5d %-32s %-9s tries %-3d %s" % (
                item.id, item.destination, item.incident_id, item.key,
                "delivered" if item.delivered_at else "PENDING", item.attempts,
                item.last_error or ""))
    return 0
