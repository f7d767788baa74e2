# Gateway configuration: a TOML file read with the standard library and checked at start.
#
# Rules:
#   every setting has a default here (SETTINGS), so a file needs only what differs;
#   an unknown key, a wrong type or an out-of-range value is an error naming the key
#   ("mqtt.port: must be an integer from 1 to 65535");
#   relative paths are taken from the folder holding the config file.
import os
import tomllib
from types import SimpleNamespace

from .errors import ConfigError

_LOG_LEVELS = ("debug", "info", "warning", "error")
_SYNC_MODES = ("full", "normal")


def _port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _not_negative(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _text(value):
    return isinstance(value, str)


def _flag(value):
    return isinstance(value, bool)


def _device_list(value):
    if not isinstance(value, str):
        return False
    items = [v.strip() for v in value.split(",") if v.strip()]
    return all(len(v) == 8 and all(c in "0123456789abcdefABCDEF" for c in v) for v in items)


def _prefix(value):
    return (isinstance(value, str) and value != "" and not any(c in value for c in "#+")
            and not value.startswith("/") and not value.endswith("/"))


# (section, key): (default, check, what the check wants, is a path)
SETTINGS = {
    ("gateway", "data_dir"): ("var/gateway", _text, "a folder path", True),
    ("mqtt", "host"): ("127.0.0.1", _text, "a host name or address", False),
    ("mqtt", "port"): (1883, lambda v: _port(v) and v != 0, "an integer from 1 to 65535", False),
    ("mqtt", "prefix"): ("vigil", _prefix, "a topic prefix without # + or outer slashes", False),
    ("mqtt", "client_id"): ("vigil-gateway", _text, "a string", False),
    ("mqtt", "username"): ("", _text, "a string (empty: anonymous)", False),
    ("mqtt", "password_file"): ("", _text, "a file path (empty: none)", True),
    ("mqtt", "shared_group"): ("", _text, "a group name (empty: no shared subscription)", False),
    ("mqtt", "keepalive_s"): (30, _count, "a whole number of seconds, at least 1", False),
    ("mqtt", "receive_maximum"): (1000, _count, "a count, at least 1", False),
    ("mqtt", "reconnect_min_s"): (0.2, _positive, "a positive number of seconds", False),
    ("mqtt", "reconnect_max_s"): (30.0, _positive, "a positive number of seconds", False),
    ("mqtt.tls", "enabled"): (False, _flag, "true or false", False),
    ("mqtt.tls", "ca_file"): ("", _text, "a file path", True),
    ("mqtt.tls", "cert_file"): ("", _text, "a file path (empty: no client certificate)", True),
    ("mqtt.tls", "key_file"): ("", _text, "a file path (empty: no client certificate)", True),
    ("store", "synchronous"): ("full", lambda v: v in _SYNC_MODES, "one of full, normal", False),
    ("store", "batch_max"): (500, _count, "a count, at least 1", False),
    ("store", "url"): ("sqlite:", _text, "sqlite: or a postgresql:// URL (store_url.py)",
                      False),
    ("store", "retain_days"): (30, _not_negative, "a number of days (0: keep everything)",
                               False),
    ("backup", "dir"): ("", _text, "a folder path (empty: backups beside data_dir)", True),
    ("backup", "keep"): (7, _count, "a count of backups, at least 1", False),
    ("supervision", "default_interval_s"): (300, _count, "a whole number of seconds", False),
    ("supervision", "grace_s"): (60, _count, "a whole number of seconds", False),
    ("supervision", "check_every_s"): (5.0, _positive, "a positive number of seconds", False),
    ("incidents", "double_tap_wait_s"): (15.0, _positive, "a positive number of seconds",
                                         False),
    ("incidents", "late_after_s"): (30.0, _positive, "a positive number of seconds", False),
    ("protocol", "accept_v1"): (True, _flag, "true or false", False),
    ("protocol", "reack_interval_s"): (1.0, _positive, "a positive number of seconds", False),
    ("ble", "enabled"): (False, _flag, "true or false", False),
    ("ble", "allow"): ("", _device_list, "device ids as 8 hex digits, comma-separated "
                       "(empty: every active registered device)", False),
    ("ble", "max_connections"): (8, _count, "a count, at least 1", False),
    ("ble", "hci"): ("", _text, "empty (this machine's Bluetooth, through bleak) or an "
                     "emulated controller's transport, e.g. tcp-client:127.0.0.1:7001", False),
    ("ble", "scan_stall_s"): (60.0, _positive, "a positive number of seconds", False),
    ("forward", "max_event_age_s"): (120.0, _positive, "a positive number of seconds", False),
    ("forward", "backoff_min_s"): (1.0, _positive, "a positive number of seconds", False),
    ("forward", "backoff_max_s"): (300.0, _positive, "a positive number of seconds", False),
    ("forward.webhook", "url"): ("", _text, "an https:// URL (empty: no webhook)", False),
    ("forward.webhook", "secret_file"): ("", _text, "a file path", True),
    ("forward.webhook", "ca_file"): ("", _text, "a file path (empty: the system's CAs)", True),
    ("forward.webhook", "timeout_s"): (10.0, _positive, "a positive number of seconds", False),
    ("forward.dc09", "host"): ("", _text, "a host name or address (empty: no DC-09)", False),
    ("forward.dc09", "port"): (0, _port, "an integer from 1 to 65535", False),
    ("forward.dc09", "account"): ("", _text, "3 to 16 hex digits", False),
    ("forward.dc09", "key_file"): ("", _text, "a file path (empty: unencrypted)", True),
    ("forward.dc09", "format"): ("SIA-DCS", lambda v: v in ("SIA-DCS", "ADM-CID"),
                                 "one of SIA-DCS, ADM-CID", False),
    ("forward.dc09", "account_scheme"): ("site", lambda v: v in ("site", "device"),
                                         "one of site, device", False),
    ("forward.dc09", "backup_host"): ("", _text, "a host name or address (empty: no backup)",
                                      False),
    ("forward.dc09", "backup_port"): (0, _port, "an integer from 1 to 65535", False),
    ("forward.dc09", "receiver"): ("", _text, "1 to 6 hex digits (empty: none)", False),
    ("forward.dc09", "line"): ("0", _text, "1 to 6 hex digits", False),
    ("forward.dc09", "null_interval_s"): (60.0, _positive, "a positive number of seconds",
                                          False),
    ("forward.dc09", "probe_interval_s"): (2.0, _positive, "a positive number of seconds",
                                           False),
    ("forward.dc09", "timeout_s"): (10.0, _positive, "a positive number of seconds", False),
    ("actions", "tokens_file"): ("", _text, "a file path (empty: no actions API)", True),
    ("actions", "tolerance_s"): (300, _count, "a whole number of seconds", False),
    ("actions", "host"): ("", _text, "an address to listen on (empty: the API is on the [http] "
                          "listener, this machine only)", False),
    ("actions", "port"): (8443, _port, "an integer from 0 to 65535 (0: any free port)", False),
    ("actions", "cert_file"): ("", _text, "a file path (empty: no TLS, loopback only)", True),
    ("actions", "key_file"): ("", _text, "a file path", True),
    ("http", "host"): ("127.0.0.1", _text, "a host name or address", False),
    ("http", "port"): (9464, _port, "an integer from 0 to 65535 (0: any free port)", False),
    ("log", "level"): ("info", lambda v: v in _LOG_LEVELS, "one of " + ", ".join(_LOG_LEVELS),
                       False),
}
SECTIONS = sorted({section for section, _ in SETTINGS})


def defaults():
    """The embedded defaults, as a Config (paths relative to the current folder)."""
    return load_dict({}, base_dir=os.getcwd(), source="defaults")


def load(path):
    """Read and check a TOML config file. Raises ConfigError naming the bad key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("config", "no such file: %s" % path) from None
    except OSError as exc:
        raise ConfigError("config", "cannot read %s: %s" % (path, exc.strerror)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", "%s is not valid TOML: %s" % (path, exc)) from None
    return load_dict(data, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def _flatten(data, prefix=""):
    """{"mqtt": {"port": 1, "tls": {...}}} -> {("mqtt", "port"): 1, ("mqtt.tls", ...): ...}."""
    flat = {}
    for name, value in data.items():
        dotted = prefix + name
        if isinstance(value, dict):
            if dotted not in SECTIONS:
                raise ConfigError(dotted, "unknown section (known: %s)" % ", ".join(SECTIONS))
            flat.update(_flatten(value, dotted + "."))
        elif prefix:
            flat[(prefix[:-1], name)] = value
        else:
            raise ConfigError(dotted, "settings belong in a section such as [gateway]")
    return flat


def load_dict(data, base_dir, source="config"):
    values = {}
    given = _flatten(data)
    for key in given:
        if key not in SETTINGS:
            raise ConfigError("%s.%s" % key, "unknown setting in %s" % source)
    for key, (default, check, wants, is_path) in SETTINGS.items():
        value = given.get(key, default)
        if not check(value):
            raise ConfigError("%s.%s" % key, "must be %s (got %r)" % (wants, value))
        if is_path and value:
            value = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
        values[key] = value
    config = _namespace(values)
    _check_together(config)
    return config


def _namespace(values):
    root = SimpleNamespace()
    for (section, key), value in values.items():
        node = root
        for part in section.split("."):
            if not hasattr(node, part):
                setattr(node, part, SimpleNamespace())
            node = getattr(node, part)
        setattr(node, key, value)
    return root


def _check_together(config):
    from .store_url import parse as parse_store_url

    parse_store_url(config.store.url)  # (its own messages: they never repeat the URL)
    if config.mqtt.reconnect_min_s > config.mqtt.reconnect_max_s:
        raise ConfigError("mqtt.reconnect_min_s", "must not exceed mqtt.reconnect_max_s")
    if config.mqtt.tls.enabled and not config.mqtt.tls.ca_file:
        raise ConfigError("mqtt.tls.ca_file", "is needed when mqtt.tls.enabled is true")
    if bool(config.mqtt.tls.cert_file) != bool(config.mqtt.tls.key_file):
        raise ConfigError("mqtt.tls.key_file", "a client certificate needs both cert_file and "
                          "key_file")
    if config.forward.backoff_min_s > config.forward.backoff_max_s:
        raise ConfigError("forward.backoff_min_s", "must not exceed forward.backoff_max_s")
    if config.forward.webhook.url:
        from .forward_webhook import check_url

        check_url(config.forward.webhook.url)
        if not config.forward.webhook.secret_file:
            raise ConfigError("forward.webhook.secret_file", "is needed when "
                              "forward.webhook.url is set")
    if config.forward.dc09.host:
        if not config.forward.dc09.port:
            raise ConfigError("forward.dc09.port", "is needed when forward.dc09.host is set")
        if not config.forward.dc09.account:
            raise ConfigError("forward.dc09.account", "is needed when forward.dc09.host is set")
        if config.forward.dc09.backup_host and not config.forward.dc09.backup_port:
            raise ConfigError("forward.dc09.backup_port",
                              "is needed when forward.dc09.backup_host is set")
    if bool(config.actions.cert_file) != bool(config.actions.key_file):
        raise ConfigError("actions.key_file", "TLS for the API needs both cert_file and "
                          "key_file")
    if config.mqtt.password_file and not config.mqtt.username:
        raise ConfigError("mqtt.username", "is needed when mqtt.password_file is set")


def secret_problem(path, st=None):
    """Why the secret file at `path` must not be used as it is, or None. A secret (the broker
    password, the webhook secret, the actions tokens, the DC-09 key) belongs to this user and
    is readable by nobody else, as the devices' key files are."""
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # reading it says what is wrong
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        return ("refusing %s: others can read it; it must belong to this user and be readable "
                "by nobody else (chmod 600 %s)" % (path, path))
    return None


def read_private(path, key):
    """The text of a secret file, or ConfigError naming the setting: unreadable, or readable
    by others (secret_problem)."""
    try:
        with open(path) as f:
            problem = secret_problem(path, os.fstat(f.fileno()))
            if problem:
                raise ConfigError(key, problem)
            return f.read()
    except OSError as exc:
        raise ConfigError(key, "cannot read %s: %s" % (path, exc.strerror)) from None


def read_secret(path, key, private=True):
    """The first line of a secret file (the gateway's broker password, ...), or ConfigError.
    With private (the gateway's own use), a file others can read is refused."""
    if private:
        text = read_private(path, key)
    else:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(key, "cannot read %s: %s" % (path, exc.strerror)) from None
    secret = text.split("\n", 1)[0].strip()
    if not secret:
        raise ConfigError(key, "%s is empty" % path)
    return secret
