# `[store] url`: SQLite by default; a PostgreSQL URL checked, then refused in one line until
# that backend is complete; no message ever repeats a password.
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


def test_a_postgresql_url_is_understood_but_refused_for_now(tmp_path):
    url = "postgresql://vigil:%s@db.example:5432/vigil" % SECRET
    assert store_url.parse(url) == (store_url.POSTGRESQL, url)
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, "[store]\nurl = '%s'\n" % url)
    assert str(raised.value) == 'store.url: PostgreSQL is not supported yet; use "sqlite:"'


@pytest.mark.parametrize("url, says", [
    ("sqlite:/var/lib/vigil/other.db", "lives in gateway.data_dir"),
    ("mysql://u:%s@h/db" % SECRET, "got a mysql: URL"),
    ("gateway.db", "got no URL scheme"),
    ("postgresql://u:%s@/vigil" % SECRET, "needs a host"),
    ("postgresql://u:%s@db.example" % SECRET, "needs a database name"),
    ("postgresql://u:%s@db.example:99999/vigil" % SECRET, "not a valid postgresql:// URL"),
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


def test_the_gateway_refuses_to_start_on_postgresql_in_one_line(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\ndata_dir = 'data'\n[store]\n"
                    "url = 'postgresql://vigil:%s@127.0.0.1:5432/vigil'\n" % SECRET)
    for command in ("run", "check-config"):
        result = vigil("gateway", command, "--config", path, timeout=60)
        assert result.returncode == 2, result
        assert result.stderr.strip().splitlines() == [
            'vigil: store.url: PostgreSQL is not supported yet; use "sqlite:"'], result.stderr
        assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()  # nothing made on the way
