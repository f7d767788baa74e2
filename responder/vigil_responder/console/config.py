# responder.toml: where the console listens, where it keeps its data, the webhook secret and
# the gateway's actions API. Secrets live in files of their own (first line), readable by
# this user only, so the config itself can be shared.
#
#   [console]  host (127.0.0.1), port (8480), data_dir, cert_file + key_file (TLS; required
#              for any address but loopback), webhook_path (/vigil)
#   [webhook]  secret_file, tolerance_s (300)
#   [gateway]  url (http://127.0.0.1:9464), token_file, ca_file (a private CA for https)
import ipaddress
import os
import stat
import tomllib
from collections import namedtuple
from pathlib import Path

Config = namedtuple("Config", "host port data_dir cert_file key_file webhook_path secret "
                              "tolerance_s gateway_url token ca_file")


class ConfigError(Exception):
    """A config the console cannot start with; the message names the key and the fix."""


def read_secret(path, key):
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError("%s: cannot read %s (%s)" % (key, path, exc.strerror)) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("%s: refusing %s: others can read it (chmod 600 %s)"
                          % (key, path, path))
    line = Path(path).read_text().splitlines()[:1]
    if not line or not line[0].strip():
        raise ConfigError("%s: %s is empty" % (key, path))
    return line[0].strip()


def load(path):
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("cannot read %s (%s)" % (path, exc.strerror)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from None
    base = path.parent

    def rel(value):
        return None if not value else str((base / value).resolve())

    console = raw.get("console", {})
    hook = raw.get("webhook", {})
    gateway = raw.get("gateway", {})
    if not hook.get("secret_file"):
        raise ConfigError("webhook.secret_file: name the file holding the webhook secret")
    if not gateway.get("token_file"):
        raise ConfigError("gateway.token_file: name the file holding the actions API token")
    host = console.get("host", "127.0.0.1")
    cert, key = rel(console.get("cert_file")), rel(console.get("key_file"))
    if bool(cert) != bool(key):
        raise ConfigError("console.cert_file and console.key_file go together")
    if not cert and not _loopback(host):
        raise ConfigError("console.cert_file: the console on %s is reachable from the "
                          "network: give it TLS (cert_file and key_file)" % host)
    return Config(
        host=host, port=int(console.get("port", 8480)),
        data_dir=rel(console.get("data_dir", "responder-data")),
        cert_file=cert, key_file=key,
        webhook_path=console.get("webhook_path", "/vigil"),
        secret=read_secret(rel(hook["secret_file"]), "webhook.secret_file").encode(),
        tolerance_s=float(hook.get("tolerance_s", 300)),
        gateway_url=gateway.get("url", "http://127.0.0.1:9464").rstrip("/"),
        token=read_secret(rel(gateway["token_file"]), "gateway.token_file"),
        ca_file=rel(gateway.get("ca_file")))


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
