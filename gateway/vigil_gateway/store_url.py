# `[store] url`: which backend holds the gateway's state.
#
# Rules:
#   "sqlite:" (the default) is the embedded store: gateway.db in gateway.data_dir, one gateway;
#   "postgresql://user@host:port/dbname" (or "postgres://") names a PostgreSQL database shared
#     by many gateway workers (gateway/README.md, "Many workers on one PostgreSQL"). It is
#     libpq's URI, read by libpq itself (psycopg.conninfo), so libpq's own forms work: several
#     hosts for failover ("postgresql://vigil@db1:5432,db2:5432/vigil?target_session_attrs=
#     read-write": libpq tries each in turn and keeps the one that takes writes) and libpq's
#     parameters (sslmode, connect_timeout, ...); it needs a host and a database name;
#   a password belongs in libpq's password file (~/.pgpass or PGPASSFILE), not in the URL; one
#     given in the URL (before the host, or as ?password=) works but is never shown;
#   an error names the setting and never repeats the URL (it may carry a password), nor
#     libpq's own message (which may quote a piece of it).
from collections import namedtuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from .errors import ConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
KEY = "store.url"

StoreUrl = namedtuple("StoreUrl", "backend url")


def parse(text):
    """The StoreUrl `text` names, or ConfigError (without the URL in it)."""
    if not isinstance(text, str):
        raise ConfigError(KEY, "must be a string: sqlite: or postgresql://host/dbname")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == SQLITE:
        if text[len("sqlite:"):]:
            raise ConfigError(KEY, "the SQLite database lives in gateway.data_dir: write "
                              "\"sqlite:\" alone")
        return StoreUrl(SQLITE, None)
    if scheme in ("postgresql", "postgres"):
        _check_postgresql(text)
        return StoreUrl(POSTGRESQL, text)
    raise ConfigError(KEY, "must be sqlite: or postgresql://host/dbname (got %s)"
                      % ("a %s: URL" % scheme if scheme.isalnum() else "no URL scheme"))


def _check_postgresql(text):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(text)
    except psycopg.Error:
        raise ConfigError(KEY, "is not a postgresql:// URL libpq can read (a bad character, "
                          "address or parameter)") from None
    hosts = params.get("host", "").split(",")
    if not all(hosts):
        raise ConfigError(KEY, "a postgresql:// URL needs a host: postgresql://host/dbname")
    ports = params.get("port", "").split(",")
    for port in ports:
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(KEY, "the port of a postgresql:// URL is from 1 to 65535")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConfigError(KEY, "a postgresql:// URL with several hosts gives one port, or one "
                          "port per host")
    if not params.get("dbname"):
        raise ConfigError(KEY, "a postgresql:// URL needs a database name: "
                          "postgresql://host/dbname")


def redacted(text):
    """The URL with any password (before the host, or ?password=) replaced by ***, for logs
    and messages."""
    parts = urlsplit(text)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc="%s:***@%s" % (user, netloc[1]))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        parts = parts._replace(query=urlencode(
            [(name, "***" if name == "password" else value) for name, value in query],
            safe="*"))
    return parts.geturl()
