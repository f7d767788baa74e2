# The gateway as a systemd service (`vigil gateway install-service`): a system user of its own,
# its folders, a first config with its broker password, and a hardened unit.
#
# Rules:
#   the gateway runs as its own system user (no login shell, no home of its own), which owns
#   its state (/var/lib/vigil, 0700) and its secrets (/etc/vigil/secrets, 0700): the gateway
#   refuses secrets another user owns, so every `vigil gateway` command that writes them (device
#   add, import, rotate-key) runs as that user too (runuser -u vigil -- vigil gateway ...);
#   the broker's files go to /etc/vigil/broker (vigil:mosquitto, 2750; Debian's Mosquitto
#   reads vigil.conf through a link in /etc/mosquitto/conf.d: it takes include_dir from its
#   main file only); the gateway user is in group mosquitto so the files it writes there can
#   be given to that group;
#   running it again changes nothing that exists: the config, the password and the folders'
#   contents are kept; the unit is rewritten (it holds no state); a root it cannot make its
#   folders in stops it before the system user is made;
#   the unit gives the gateway what it needs and no more: a read-only system, no home folders,
#   a private /tmp and /dev, no privileges to gain, IP and Unix sockets only, the system-service
#   system calls; no MemoryDenyWriteExecute (cffi callbacks in the crypto and BLE libraries
#   need writable executable memory);
#   a timer runs `vigil gateway backup --rotate` daily (a missed run at the next boot), as the
#   same user under the same hardening, at low CPU and I/O priority: the backups go into the
#   state folder ([backup] dir, default /var/lib/vigil/backups), the newest [backup] keep kept.
import os
import pwd
import secrets
import shutil
import subprocess
import sys

from .broker_config import BROKER_GROUP, broker_gid, write_file
from .errors import GatewayError

UNIT_NAME = "vigil-gateway.service"
BACKUP_UNIT_NAME = "vigil-gateway-backup.service"
TIMER_NAME = "vigil-gateway-backup.timer"
USER = "vigil"
CONFIG_DIR = "/etc/vigil"
STATE_DIR = "/var/lib/vigil"
UNIT_DIR = "/etc/systemd/system"

HARDENING = [
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("ProtectProc", "invisible"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("CapabilityBoundingSet", ""),
    ("UMask", "0077"),
]


class InstallError(GatewayError):
    pass


def unit_text(executable, config_path, user=USER):
    lines = [
        "# Written by `vigil gateway install-service`; running it again rewrites this file.",
        "[Unit]",
        "Description=Vigil gateway: duress alarms from wearables to responders",
        "Documentation=https://example.invalid/vigil/gateway/README.md",
        "After=network-online.target mosquitto.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        "User=%s" % user,
        "Group=%s" % user,
        "ExecStart=%s gateway run --config %s" % (executable, config_path),
        # An alarm path must come back by itself; SIGTERM stops it cleanly (service.main).
        "Restart=always",
        "RestartSec=2",
        "TimeoutStopSec=15",
        # /var/lib/vigil: the only place it writes (ProtectSystem=strict).
        "StateDirectory=vigil",
        "StateDirectoryMode=0700",
    ]
    lines += ["%s=%s" % kv for kv in HARDENING]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def backup_unit_text(executable, config_path, user=USER):
    lines = [
        "# Written by `vigil gateway install-service`; running it again rewrites this file.",
        "# Started by %s; `systemctl start %s` takes a backup now." % (TIMER_NAME,
                                                                      BACKUP_UNIT_NAME),
        "[Unit]",
        "Description=Vigil gateway: a backup of its database and device keys",
        "Documentation=https://example.invalid/vigil/gateway/README.md",
        "",
        "[Service]",
        "Type=oneshot",
        "User=%s" % user,
        "Group=%s" % user,
        "ExecStart=%s gateway backup --rotate --config %s" % (executable, config_path),
        # The alarm path comes first: the copy runs at low priority.
        "Nice=10",
        "IOSchedulingClass=idle",
        "StateDirectory=vigil",
        "StateDirectoryMode=0700",
    ]
    lines += ["%s=%s" % kv for kv in HARDENING]
    lines += [""]
    return "\n".join(lines)


def timer_text():
    return "\n".join([
        "# Written by `vigil gateway install-service`; running it again rewrites this file.",
        "[Unit]",
        "Description=Vigil gateway: a backup every day",
        "",
        "[Timer]",
        "OnCalendar=daily",
        "RandomizedDelaySec=1h",
        # A day missed while the machine was off is made up at boot.
        "Persistent=true",
        "Unit=%s" % BACKUP_UNIT_NAME,
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])


def config_text(state_dir, secrets_dir, user):
    return "\n".join([
        "# Written by `vigil gateway install-service`. Every setting not here has the default",
        "# gateway.example.toml shows; check it with `vigil gateway device list`.",
        "[gateway]",
        'data_dir = "%s/gateway"' % state_dir,
        "",
        "[mqtt]",
        'username = "%s-gateway"' % user,
        'password_file = "%s/mqtt-password"' % secrets_dir,
        "",
    ])


def default_executable():
    """This installation's `vigil` command."""
    here = os.path.join(os.path.dirname(sys.executable), "vigil")
    return here if os.path.exists(here) else (shutil.which("vigil") or here)


def _interpreter(executable):
    """The program a script's #! line names, or None."""
    try:
        with open(executable, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode("utf-8", "replace").split()
    return parts[0] if parts else None


def _system_user(user):
    """Make the system user (and its group) unless it exists; put it in group mosquitto."""
    try:
        pwd.getpwnam(user)
        made = False
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--home-dir", STATE_DIR,
              "--no-create-home", "--shell", "/usr/sbin/nologin", user])
        made = True
    if broker_gid() is not None:
        _run(["usermod", "--append", "--groups", BROKER_GROUP, user])
    return made


def _run(argv):
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise InstallError("%s is not installed (Debian: apt-get install passwd)" % argv[0]) \
            from None
    except subprocess.CalledProcessError as exc:
        raise InstallError("%s failed: %s" % (" ".join(argv[:2]), exc.stderr.strip())) from None


def _folder(path, mode, uid, gid):
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def install(root="/", user=USER, executable=None):
    """Install the service under `root` (a staging folder for packaging, else /). Returns
    {"unit", "backup_unit", "timer", "config", "password_file", "broker_dir", "user_made",
    "config_made", "warnings"}."""
    if os.geteuid() != 0:
        raise InstallError("installing a service needs root (run it with sudo)")
    executable = os.path.abspath(executable or default_executable())
    if not os.access(executable, os.X_OK):
        raise InstallError("%s is not an executable vigil command (give --exec)" % executable)
    warnings = []
    for path in (executable, _interpreter(executable)):
        if path and os.path.realpath(path).startswith(("/home/", "/root/", "/run/user/")):
            warnings.append("%s is under a home folder, which the unit hides (ProtectHome=yes) "
                            "and the service user cannot read: install Vigil under /opt "
                            "(README, \"Deployment\")" % os.path.realpath(path))

    def at(path):
        return os.path.join(root, path.lstrip("/"))

    config_dir, secrets_dir = CONFIG_DIR, CONFIG_DIR + "/secrets"
    broker_dir = CONFIG_DIR + "/broker"
    # First the folder that needs no user: a root that cannot take it makes no system user.
    _folder(at(config_dir), 0o755, 0, 0)
    user_made = _system_user(user)
    entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    _folder(at(secrets_dir), 0o700, uid, gid)
    mosq = broker_gid()
    _folder(at(broker_dir), 0o2750 if mosq is not None else 0o700, uid,
            mosq if mosq is not None else gid)
    _folder(at(STATE_DIR), 0o700, uid, gid)
    password_file = secrets_dir + "/mqtt-password"
    if not os.path.exists(at(password_file)):
        write_file(at(password_file), secrets.token_urlsafe(24) + "\n", None)
        os.chown(at(password_file), uid, gid)
    config_path = config_dir + "/gateway.toml"
    config_made = not os.path.exists(at(config_path))
    if config_made:
        write_file(at(config_path), config_text(STATE_DIR, secrets_dir, user), None,
                   mode=0o644)
    unit = UNIT_DIR + "/" + UNIT_NAME
    os.makedirs(at(UNIT_DIR), exist_ok=True)
    write_file(at(unit), unit_text(executable, config_path, user), None, mode=0o644)
    backup_unit, timer = UNIT_DIR + "/" + BACKUP_UNIT_NAME, UNIT_DIR + "/" + TIMER_NAME
    write_file(at(backup_unit), backup_unit_text(executable, config_path, user), None,
               mode=0o644)
    write_file(at(timer), timer_text(), None, mode=0o644)
    return {"unit": at(unit), "backup_unit": at(backup_unit), "timer": at(timer),
            "config": at(config_path), "password_file": at(password_file),
            "broker_dir": at(broker_dir), "state_dir": at(STATE_DIR),
            "user": user,
            "user_made": user_made, "config_made": config_made, "warnings": warnings}
