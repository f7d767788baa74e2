# `[store] url`: which backend holds the gateway's state.
#
# Rules:
#   "sqlite:" (the default) is the embedded store: gateway.db in gateway.data_dir, one gateway;
#   "postgresql://user@host:port/dbname" (or "postgres://") names a PostgreSQL database shared
#     by many gateway workers; a password belongs in libpq's password file (~/.pgpass or
#     PGPASSFILE), not in the URL; one given in the URL works but is never shown;
#   PostgreSQL is refused ("not supported yet") until its backend does everything the gateway
#     needs (gateway/README.md, "Scale-out on PostgreSQL"): no half-working mode. Served on it
#     now: ingest, supervision, downlinks, forwarding (webhook, DC-09), the actions API, wearer
#     profiles, beacons, retention, the CLI (`vigil gateway run` starts a worker), a restore
#     (`vigil gateway restore --database-restored` after PostgreSQL's own tools); BLE stays
#     edge-local (refused);
#   an error names the setting and never repeats the URL (it may carry a password).
from collections import namedtuple
from urllib.parse import urlsplit

from .errors import ConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
KEY = "store.url"
POSTGRESQL_READY = False  # True once store_pg.py serves every operation (above, and README)

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


def check(text):
    """parse(), and refused while the PostgreSQL backend is incomplete."""
    store = parse(text)
    if store.backend == POSTGRESQL and not POSTGRESQL_READY:
        raise ConfigError(KEY, "PostgreSQL is not supported yet; use \"sqlite:\"")
    return store


def _check_postgresql(text):
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(KEY, "is not a valid postgresql:// URL (a bad port or address)"
                          ) from None
    if not parts.hostname:
        raise ConfigError(KEY, "a postgresql:// URL needs a host: postgresql://host/dbname")
    if not parts.path.strip("/"):
        raise ConfigError(KEY, "a postgresql:// URL needs a database name: "
                          "postgresql://host/dbname")
    if port == 0:
        raise ConfigError(KEY, "the port of a postgresql:// URL is from 1 to 65535")


def redacted(text):
    """The URL with any password replaced by ***, for logs and messages."""
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return parts._replace(netloc="%s:***@%s" % (user, netloc[1])).geturl()
