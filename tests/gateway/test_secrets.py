# The gateway's secrets and its database are its user's alone: gateway.db and its -wal and -shm
# files are 0600, and the gateway refuses a broker password, webhook secret, actions tokens or
# DC-09 key file others can read (as it refuses such a device key file), in one line naming the
# setting, the file and the fix.
import os
import subprocess

import pytest

from gateway_harness import VIGIL, GatewayProcess, key_for, write_secret
from vigil_gateway import ConfigError
from vigil_gateway.config import load_dict
from vigil_gateway.service import Gateway

TOKEN = "tokens-file-token-0123456789"


def _config(tmp_path, **sections):
    data = {"gateway": {"data_dir": str(tmp_path / "data")}, "http": {"port": 0}}
    data.update(sections)
    return load_dict(data, str(tmp_path))


SECRETS = [
    ("mqtt.password_file", lambda f: {"mqtt": {"username": "gw", "password_file": f}}),
    ("forward.webhook.secret_file", lambda f: {"forward.webhook": {
        "url": "http://127.0.0.1:9/hook", "secret_file": f}}),
    ("actions.tokens_file", lambda f: {"actions": {"tokens_file": f}}),
    ("forward.dc09.key_file", lambda f: {"forward.dc09": {
        "host": "127.0.0.1", "port": 9, "account": "1234", "key_file": f}}),
]


@pytest.mark.parametrize("key,sections", SECRETS, ids=[k for k, _ in SECRETS])
def test_a_secret_file_others_can_read_is_refused(tmp_path, key, sections):
    secret = write_secret(tmp_path / "secret", "responder %s\n" % TOKEN if "tokens" in key
                          else "0123456789ABCDEF\n")
    config = _config(tmp_path, **sections(str(secret)))
    Gateway(config).conn.close()  # 0600: taken
    for mode in (0o640, 0o644, 0o604):
        secret.chmod(mode)
        with pytest.raises(ConfigError) as refused:
            Gateway(config)
        assert str(refused.value) == (
            "%s: refusing %s: others can read it; it must belong to this user and be readable "
            "by nobody else (chmod 600 %s)" % (key, secret, secret))
        assert "0123456789ABCDEF" not in str(refused.value) and TOKEN not in str(refused.value)


def test_the_gateway_command_says_so_in_one_line_and_exits_2(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("responder %s\n" % TOKEN)
    tokens.chmod(0o644)
    gw = GatewayProcess(tmp_path / "gw", 1883, actions={"tokens_file": str(tokens)})
    result = subprocess.run(VIGIL + ["gateway", "run", "--config", str(gw.config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "vigil: actions.tokens_file: refusing %s: others can read it; it must belong to this "
        "user and be readable by nobody else (chmod 600 %s)" % (tokens, tokens))
    assert TOKEN not in result.stderr + result.stdout


def test_the_database_and_its_wal_and_shm_are_private(tmp_path, mosquitto):
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, mqtt={"prefix": "secrets"})
    gw.add_device(0x00000051, key_for(0x51))  # the CLI makes the database
    data = gw.dir / "data"
    gw.start()  # the service writes: WAL and shared memory open
    try:
        names = sorted(os.listdir(data))
        assert {"gateway.db", "gateway.db-wal", "gateway.db-shm"} <= set(names)
        for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
            assert os.stat(data / name).st_mode & 0o777 == 0o600, name
        assert os.stat(data).st_mode & 0o777 == 0o700
    finally:
        gw.stop()
    # A database made before (0644 here) is made private when next opened.
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        if (data / name).exists():
            (data / name).chmod(0o644)
    gw.cli("device", "list")
    assert os.stat(data / "gateway.db").st_mode & 0o777 == 0o600
