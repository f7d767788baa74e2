# `[store] url`: SQLite by default; a PostgreSQL URL read as libpq reads it (several hosts for
# failover, libpq's parameters), its errors in one line naming the setting; no message ever
# repeats a password.
import pytest

from vigil_cli import vigil
from vigil_gateway import ConfigError, config, store_url

SECRET = "s3cr3t-pw"


def _load(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return config.load(str(path))


def test_the_default_is_the_embedded_sqlite_store(tmp_path):
    assert config.defaults().store.url == "sqlite:"
    assert store_url.parse("sqlite:") == (store_url.SQLITE, None)
    assert _load(tmp_path, "[store]\nurl = 'sqlite:'\n").store.url == "sqlite:"


def test_a_postgresql_url_is_taken_in_libpqs_forms(tmp_path):
    for url in ("postgresql://vigil:%s@db.example:5432/vigil" % SECRET,
                "postgres://vigil@db.example/vigil",
                # failover: libpq tries each host, and keeps the one that takes writes
                "postgresql://vigil@db1:5432,db2:5433/vigil?target_session_attrs=read-write",
                "postgresql://vigil@db1,db2/vigil?sslmode=verify-full&connect_timeout=5"):
        assert store_url.parse(url) == (store_url.POSTGRESQL, url)
        assert _load(tmp_path, "[store]\nurl = '%s'\n" % url).store.url == url


@pytest.mark.parametrize("url, says", [
    ("sqlite:/var/lib/vigil/other.db", "lives in gateway.data_dir"),
    ("mysql://u:%s@h/db" % SECRET, "got a mysql: URL"),
    ("gateway.db", "got no URL scheme"),
    ("postgresql://u:%s@/vigil" % SECRET, "needs a host"),
    ("postgresql://u:%s@db.example" % SECRET, "needs a database name"),
    ("postgresql://u:%s@db.example:99999/vigil" % SECRET, "from 1 to 65535"),
    ("postgresql://u:%s@db1:5432,db2:0/vigil" % SECRET, "from 1 to 65535"),
    ("postgresql://u:%s@db1:1,db2:2,db3:3/vigil?port=1,2" % SECRET, "one port per host"),
    ("postgresql://u@db.example/vigil?password=%s&colour=blue" % SECRET, "libpq can read"),
    ("postgresql://u:%s@db.example/vigil?sslmode=%%zz" % SECRET, "libpq can read"),
])
def test_a_bad_url_names_the_setting_and_never_shows_the_password(tmp_path, url, says):
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, "[store]\nurl = '%s'\n" % url)
    assert raised.value.key == "store.url"
    assert says in str(raised.value)
    assert SECRET not in str(raised.value) and "\n" not in str(raised.value)


def test_redacted_hides_the_password_only():
    assert (store_url.redacted("postgresql://vigil:%s@db:5432/v" % SECRET)
            == "postgresql://vigil:***@db:5432/v")
    assert store_url.redacted("postgresql://vigil@db/v") == "postgresql://vigil@db/v"
    assert (store_url.redacted("postgresql://vigil:%s@db1:1,db2:2/v?target_session_attrs="
                               "read-write" % SECRET)
            == "postgresql://vigil:***@db1:1,db2:2/v?target_session_attrs=read-write")
    assert (store_url.redacted("postgresql://vigil@db/v?password=%s&sslmode=require" % SECRET)
            == "postgresql://vigil@db/v?password=***&sslmode=require")


def test_a_database_the_gateway_cannot_reach_is_one_line_and_nothing_made(tmp_path):
    from vigil_tools.postgres import free_port

    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\ndata_dir = 'data'\n[store]\n"
                    "url = 'postgresql://vigil:%s@127.0.0.1:%d/vigil'\n" % (SECRET, free_port()))
    for command in ("run", "device list"):
        result = vigil("gateway", *command.split(), "--config", path, timeout=60)
        assert result.returncode == 2, result
        assert result.stderr.strip().splitlines()[-1].startswith(
            "vigil: cannot connect to PostgreSQL: "), result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()  # nothing made on the way
