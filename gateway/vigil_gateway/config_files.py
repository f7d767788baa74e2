# Every file the configuration names, checked at start (`vigil gateway run`) and by
# `vigil gateway check-config`, with one line naming the setting: a CA, certificate or key that
# is missing or not what it should be, a secret (a private key too) that is empty, unreadable
# or readable by others, a DC-09 key that is not one.
# Before this a missing CA file surfaced as a traceback from inside the MQTT client.
import os
import ssl

from .config import read_secret, secret_problem
from .errors import ConfigError


def _exists(key, path):
    if not os.path.isfile(path):
        raise ConfigError(key, "no such file: %s" % path)


def _ca(key, path):
    _exists(key, path)
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(key, "%s holds no CA certificate in PEM: %s" % (
            path, getattr(exc, "reason", None) or exc)) from None


def _cert_and_key(cert_key, key_key, cert, key):
    _exists(cert_key, cert)
    _exists(key_key, key)
    problem = secret_problem(key)  # a private key is a secret like the others
    if problem:
        raise ConfigError(key_key, problem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(cert_key, "cannot use %s with the key %s: %s" % (
            cert, key, getattr(exc, "reason", None) or exc)) from None


def _dc09_key(text):
    """The DC-09 key as `run` reads it (make_transports): one line naming the setting, never the
    key."""
    from .dc09 import Dc09Error, parse_key

    try:
        parse_key(text)
    except Dc09Error as exc:
        raise ConfigError("forward.dc09.key_file", str(exc)) from None


def check(config):
    """Raise ConfigError for the first file the config names that cannot be used as it is;
    returns the (setting, path) pairs checked."""
    from .actions import read_tokens
    from .http_server import api_tls

    checked = []
    tls = config.mqtt.tls
    if tls.enabled:
        _ca("mqtt.tls.ca_file", tls.ca_file)
        checked.append(("mqtt.tls.ca_file", tls.ca_file))
        if tls.cert_file:
            _cert_and_key("mqtt.tls.cert_file", "mqtt.tls.key_file", tls.cert_file,
                          tls.key_file)
            checked += [("mqtt.tls.cert_file", tls.cert_file),
                        ("mqtt.tls.key_file", tls.key_file)]
    secrets = [("mqtt.password_file", config.mqtt.password_file)]
    hook = config.forward.webhook
    if hook.url:
        secrets.append(("forward.webhook.secret_file", hook.secret_file))
        if hook.ca_file:
            _ca("forward.webhook.ca_file", hook.ca_file)
            checked.append(("forward.webhook.ca_file", hook.ca_file))
    if config.forward.dc09.host:
        secrets.append(("forward.dc09.key_file", config.forward.dc09.key_file))
    for key, path in secrets:
        if path:
            text = read_secret(path, key)
            if key == "forward.dc09.key_file":
                _dc09_key(text)
            checked.append((key, path))
    actions = config.actions
    if actions.tokens_file:
        read_tokens(actions.tokens_file)
        checked.append(("actions.tokens_file", actions.tokens_file))
        if actions.host:
            api_tls(actions)
            if actions.cert_file:
                checked += [("actions.cert_file", actions.cert_file),
                            ("actions.key_file", actions.key_file)]
    return checked
