# Mosquitto's files made from the registry (protocol/SPEC.md §9): `passwords`, `acl` and
# `vigil.conf`, a configuration fragment fit for alarms that names the other two.
#
# Rules:
#   each active device may publish only to <prefix>/up/<dev> and <prefix>/status/<dev> and read
#   only <prefix>/down/<dev> (patterns on %u, the MQTT username = the device's 8 hex digits);
#   the gateway's own user reads every uplink and status topic and writes every downlink topic;
#   revoked devices and devices without a broker password get no password line: they cannot
#   connect at all; no anonymous client is admitted, so the gateway needs a user of its own;
#   passwords are stored as Mosquitto's PBKDF2-SHA512 hashes ($7$), never in clear;
#   a client's id is its username (use_username_as_clientid): nobody can take over another's
#   session, whatever client id it sends, and a session is the username's (a device's is
#   `<dev>`, the gateway's is mqtt.username); Mosquitto takes that setting per listener, from
#   the listener above it in the same file, so the fragment holds the listeners too;
#   the broker keeps its state on disk (persistence, saved every autosave interval) and keeps
#   for each client at least what a fleet sends in the outage it should ride out (queue_limits);
#   the files are readable by this user only (0600), or also by the group `mosquitto` (0640)
#   where that group exists: Debian's broker runs as user mosquitto;
#   with TLS material (tls_setup.py) every listener is a TLS listener (default: port 8883 on
#   every address, no plain port at all);
#   files that would lock the gateway out are refused (a TLS mismatch on the gateway's port, a
#   gateway CA that did not sign the broker's certificate, a certificate that does not name
#   mqtt.host, which the gateway checks); a gateway port no listener has, or listeners on it
#   bound to addresses other than mqtt.host's, are a warning (it may reach the broker another
#   way: a NAT, a name this machine resolves differently);
#   Mosquitto rereads the password and ACL files on SIGHUP and then disconnects a client whose
#   password line is gone: a revoked device is off at once; the same SIGHUP rereads each
#   listener's certfile and keyfile (Mosquitto 2.0 on: a renewed certificate needs no restart),
#   while a new or changed listener, or its cafile, takes a restart.
import base64
import grp
import hashlib
import ipaddress
import math
import os
import secrets
import signal
import socket

import vigil_protocol as p

from .errors import GatewayError

PBKDF2_ITERATIONS = 10000
_SALT_LEN = 12

CONF_NAME = "vigil.conf"
BROKER_GROUP = "mosquitto"
# Queue sizing (README, "Broker configuration"): per device and hour of an outage, its check-ins,
# the retransmissions of one alarm left unacknowledged all along (the firmware resends at most
# every 60 s, less 25 % jitter: 45 s), and status messages (a reconnect publishes two).
RETRANSMISSIONS_PER_HOUR = 80
STATUS_PER_HOUR = 4
QUEUE_FLOOR = 10000
DEFAULT_OUTAGE_HOURS = 24
# Mosquitto's own default: this machine only (wearables on the network need another address).
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 1883
# With TLS: MQTT's TLS port on every address (wearables reach it over the network).
DEFAULT_TLS_HOST, DEFAULT_TLS_PORT = "", 8883
# Debian's mosquitto.conf writes the broker's pid here; its service reloads with SIGHUP too.
DEBIAN_PID_FILE = "/run/mosquitto/mosquitto.pid"
# Largest MQTT packet the broker accepts: a frame (p.MAX_FRAME bytes) and its topic, or a
# CONNECT with credentials and a last will, fit several times over. It bounds what one client
# can put in the gateway's queue, which max_queued_bytes counts in payload bytes.
MAX_PACKET = max(1024, 8 * p.MAX_FRAME)
# Seconds between saves of the broker's state. Mosquitto writes its whole database each time
# (and fsyncs it); saving on every change (autosave_on_changes true, autosave_interval 1) makes
# each queued message cost a write of all those queued before it: 2,000 messages took 6.3 s to
# queue here, against 0.2 s with a 1 s interval. Mosquitto saves once more than this has passed,
# so about every 2 s; a power cut of the broker loses at most that much.
AUTOSAVE_S = 1


class BrokerConfigError(GatewayError):
    """The broker's files cannot be written as asked, or the broker cannot be reloaded."""


def mosquitto_hash(password, iterations=PBKDF2_ITERATIONS, salt=None):
    """A password line's hash in the format mosquitto_passwd writes for Mosquitto 2."""
    salt = secrets.token_bytes(_SALT_LEN) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                            base64.b64encode(digest).decode())


def acl_text(prefix, gateway_user):
    lines = ["# Written by `vigil gateway broker-config`: devices see only their own topics.",
             "pattern write %s/up/%%u" % prefix,
             "pattern write %s/status/%%u" % prefix,
             "pattern read %s/down/%%u" % prefix,
             ""]
    if gateway_user:
        lines += ["user %s" % gateway_user,
                  "topic read %s/up/#" % prefix,
                  "topic read %s/status/#" % prefix,
                  "topic write %s/down/#" % prefix,
                  ""]
    return "\n".join(lines)


def password_text(devices, gateway_user, gateway_password):
    from .registry import ACTIVE, device_hex  # the registry imports this module too

    lines = []
    if gateway_user and gateway_password:
        lines.append("%s:%s" % (gateway_user, mosquitto_hash(gateway_password)))
    for device in devices:
        if device.state == ACTIVE and device.mqtt_password_hash:
            lines.append("%s:%s" % (device_hex(device.device_id), device.mqtt_password_hash))
    return "\n".join(lines) + "\n"


def queue_limits(devices, default_interval_s, outage_hours=DEFAULT_OUTAGE_HOURS):
    """(max_queued_messages, max_queued_bytes) for the broker: every active device's messages
    over `outage_hours` of the gateway being away, at least QUEUE_FLOOR messages.

        messages = max(QUEUE_FLOOR, sum over active devices of
                       hours * (ceil(3600 / interval) + RETRANSMISSIONS_PER_HOUR
                                + STATUS_PER_HOUR))
        bytes    = messages * p.MAX_FRAME

    A device's interval is its registered check-in interval, else the default."""
    from .registry import ACTIVE

    total = 0
    for device in devices:
        if device.state != ACTIVE:
            continue
        interval = device.interval_s or default_interval_s
        per_hour = math.ceil(3600 / interval) + RETRANSMISSIONS_PER_HOUR + STATUS_PER_HOUR
        total += math.ceil(outage_hours * per_hour)
    messages = max(QUEUE_FLOOR, total)
    return messages, messages * p.MAX_FRAME


def parse_listen(text):
    """'127.0.0.1:1883' or '[::1]:1883' or ':1883' (every address) -> (host or "", port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("a listener is HOST:PORT, e.g. 127.0.0.1:1883 or 0.0.0.0:1883 (got %r)"
                         % text)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() for c in host):
        raise ValueError("a listener's host has no spaces (got %r)" % text)
    return host, int(port)


def conf_text(passwords, acl, messages, queued_bytes, devices, outage_hours, listeners,
              tls=None):
    lines = [
        "# Written by `vigil gateway broker-config` (%d active devices, queues for a %g h outage "
        "of the gateway)." % (devices, outage_hours),
        "# Debian's mosquitto.conf reads every *.conf in /etc/mosquitto/conf.d: write these",
        "# files there, or link this file there (include_dir counts in the main file only);",
        "# the main file keeps persistence_location (Debian's: /var/lib/mosquitto/) and sets no",
        "# listener.",
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file %s" % passwords,
        "acl_file %s" % acl,
        "# A client's id is its username: no client can take another's session. Mosquitto",
        "# applies this to the listener line before it in the same file: the listeners are here."]
    for host, port in listeners:
        lines.append("listener %d%s" % (port, " " + host if host else ""))
        if tls:  # per listener: a listener without these lines is plain MQTT
            lines += ["cafile %s" % tls["cafile"], "certfile %s" % tls["certfile"],
                      "keyfile %s" % tls["keyfile"]]
        lines.append("use_username_as_clientid true")
    lines += [
        "# What waits for an offline client is kept on disk, saved about every 2 s.",
        "persistence true",
        "autosave_on_changes false",
        "autosave_interval %d" % AUTOSAVE_S,
        "# Per client, beyond those in flight: what the fleet sends while the gateway is away.",
        "max_queued_messages %d" % messages,
        "max_queued_bytes %d" % queued_bytes,
        "max_packet_size %d" % MAX_PACKET,
        "set_tcp_nodelay true",
        ""]
    return "\n".join(lines)


def broker_gid():
    """The group id of Debian's broker user's group, or None where there is no such group."""
    try:
        return grp.getgrnam(BROKER_GROUP).gr_gid
    except KeyError:
        return None


def write_file(path, text, gid, mode=0o600):
    """Write `text` atomically (temp file + rename), `mode` (0600), or 0640 with group `gid`.
    Returns False when the group could not be given (not allowed to this user)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:  # named by the file it was to write, not by its temporary name
        raise OSError(exc.errno, exc.strerror, path) from None
    shared = False
    try:
        with os.fdopen(fd, "w") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            if gid is not None:
                try:
                    os.fchown(f.fileno(), -1, gid)
                    os.fchmod(f.fileno(), 0o640)
                    shared = True
                except PermissionError:
                    pass
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return shared or gid is None


def write_broker_files(out_dir, devices, prefix, gateway_user, gateway_password,
                       default_interval_s=300, outage_hours=DEFAULT_OUTAGE_HOURS,
                       listeners=((DEFAULT_HOST, DEFAULT_PORT),), tls=None):
    """Write `passwords`, `acl` and `vigil.conf` into out_dir (with `tls`, {"cafile",
    "certfile", "keyfile"}, every listener a TLS one). Returns a dict: paths, the queue limits,
    and whether the broker's group could be given the files."""
    from .registry import ACTIVE

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise BrokerConfigError("%s is not a folder (nothing written)" % out_dir)
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.abspath(out_dir)
    passwords = os.path.join(out_dir, "passwords")
    acl = os.path.join(out_dir, "acl")
    conf = os.path.join(out_dir, CONF_NAME)
    messages, queued_bytes = queue_limits(devices, default_interval_s, outage_hours)
    active = sum(1 for d in devices if d.state == ACTIVE)
    gid = broker_gid()
    shared = all([write_file(passwords, password_text(devices, gateway_user, gateway_password), gid),
                  write_file(acl, acl_text(prefix, gateway_user), gid),
                  write_file(conf, conf_text(passwords, acl, messages, queued_bytes, active,
                                         outage_hours, listeners, tls), gid)])
    return {"passwords": passwords, "acl": acl, "conf": conf, "max_queued_messages": messages,
            "max_queued_bytes": queued_bytes, "group": BROKER_GROUP if gid is not None else None,
            "group_given": shared}


def lockout(listeners, tls, gateway):
    """What in these files would keep the gateway itself off the broker: (errors, warnings),
    each a line naming the setting. `gateway` is the config's [mqtt] section."""
    errors, warnings = [], []
    ports = [port for _, port in listeners]
    where = "%s:%d" % (gateway.host, gateway.port)
    if gateway.port not in ports:
        warnings.append("mqtt.port: the gateway connects to %s, and these files listen on %s "
                        "only: unless it reaches the broker through another address, the "
                        "gateway is locked out (give --listen HOST:%d, or set mqtt.port)" % (
                            where, ", ".join(str(p_) for p_ in ports), gateway.port))
        return errors, warnings
    bound = [host for host, port in listeners if port == gateway.port]
    if not any(_everywhere(host) or _same_address(host, gateway.host) for host in bound):
        warnings.append("mqtt.host: the gateway connects to %s, and these files listen on "
                        "port %d at %s only: unless %s is that address, the gateway is "
                        "locked out (give --listen %s, or set mqtt.host)" % (
                            where, gateway.port, ", ".join(bound), gateway.host, where))
    if tls and not gateway.tls.enabled:
        errors.append("mqtt.tls.enabled: the broker's listener on port %d takes TLS only and "
                      "the gateway connects without it: set [mqtt.tls] enabled = true and "
                      "ca_file = \"%s\"" % (gateway.port, tls["cafile"]))
    elif not tls and gateway.tls.enabled:
        errors.append("mqtt.tls.enabled: the gateway connects with TLS and the broker's "
                      "listener on port %d is plain MQTT: give --tls DIR (`vigil gateway "
                      "tls-setup`), or set enabled = false" % gateway.port)
    elif tls:
        from .tls_setup import certificate_names, signed_by

        if not signed_by(tls["certfile"], gateway.tls.ca_file):
            errors.append("mqtt.tls.ca_file: %s did not sign the broker's certificate %s: the "
                          "gateway would refuse the broker (use %s)" % (
                              gateway.tls.ca_file, tls["certfile"], tls["cafile"]))
        else:
            names = certificate_names(tls["certfile"])
            if not any(_names_host(name, gateway.host) for name in names):
                errors.append("mqtt.host: the gateway connects to %s and checks that the "
                              "broker's certificate names it; %s names %s only: the gateway "
                              "would refuse the broker (`vigil gateway tls-setup --name %s`, "
                              "or set mqtt.host to one of them)" % (
                                  gateway.host, tls["certfile"], ", ".join(names),
                                  gateway.host))
    return errors, warnings


def _everywhere(host):
    return host in ("", "0.0.0.0", "::", "*")


def _addresses(host):
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return {host}


def _same_address(listener_host, gateway_host):
    return listener_host == gateway_host or bool(
        _addresses(listener_host) & _addresses(gateway_host))


def _names_host(name, host):
    """Whether a certificate's name (DNS name or IP address) covers `host`, as a TLS client
    checks it (one leading wildcard label at most)."""
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(host)
    except ValueError:
        pass
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name.startswith("*."):
        return host.count(".") == name.count(".") and host.split(".", 1)[1] == name[2:]
    return name == host


def reload(pid_file=DEBIAN_PID_FILE):
    """SIGHUP to the broker whose pid is in pid_file: it rereads the password and ACL files
    and the listeners' certificates and keys (a new listener needs a restart). Returns the
    pid."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().split()[0])
    except OSError as exc:
        raise BrokerConfigError("cannot reload the broker: cannot read its pid file %s: %s "
                                "(give --pid-file, or run `systemctl reload mosquitto`)"
                                % (pid_file, exc.strerror)) from None
    except (ValueError, IndexError):
        raise BrokerConfigError("cannot reload the broker: %s holds no pid" % pid_file) from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerConfigError("cannot reload the broker (pid %d from %s): %s"
                                % (pid, pid_file, exc.strerror)) from None
    return pid
