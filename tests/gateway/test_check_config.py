# `vigil gateway check-config` checks the config and every file it names with the one-line
# errors `run` gives (a missing CA is one of them, not a traceback); a command whose reader
# goes away (`| head`) ends quietly.
import os
import subprocess

import pytest

from gateway_harness import VIGIL, GatewayProcess, key_for, write_secret
from tls_ca import make_ca

A = 0x0000000A


def _gateway(tmp_path, name="gw", **sections):
    write_secret(tmp_path / "gw.pw", "gateway-secret\n")
    write_secret(tmp_path / "tokens", "responder token-0123456789abcdef\n")
    write_secret(tmp_path / "hook.secret", "webhook-secret\n")
    if not (tmp_path / "pki").exists():
        make_ca(tmp_path / "pki")
    tls = {"cafile": str(tmp_path / "pki" / "ca.pem")}
    base = {"mqtt": {"username": "gw", "password_file": str(tmp_path / "gw.pw")},
            "mqtt.tls": {"enabled": True, "ca_file": tls["cafile"]},
            "actions": {"tokens_file": str(tmp_path / "tokens")},
            "forward.webhook": {"url": "https://127.0.0.1:9/hook",
                                "secret_file": str(tmp_path / "hook.secret"),
                                "ca_file": tls["cafile"]}}
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return GatewayProcess(tmp_path / name, 8883, **base)


def test_check_config_passes_a_config_fit_to_run(tmp_path):
    gw = _gateway(tmp_path)
    gw.add_device(A, key_for(A))
    out = gw.cli("check-config").stdout
    assert out == "%s: the config and 5 files it names are fit to run with; 1 device key " \
                  "files readable\n" % gw.config


def test_each_unusable_file_is_one_line_from_check_config_and_run(tmp_path):
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    (tmp_path / "open.pw").write_text("gateway-secret\n")
    os.chmod(tmp_path / "open.pw", 0o644)
    write_secret(tmp_path / "empty.secret", "\n")
    write_secret(tmp_path / "not-a-key", "not-a-key\n")
    pki, other = make_ca(tmp_path / "pki"), make_ca(tmp_path / "other-pki")
    for name, source in (("api.key", pki["keyfile"]), ("other.key", other["keyfile"])):
        write_secret(tmp_path / name, open(source, "rb").read())
    os.chmod(pki["keyfile"], 0o644)  # a private key others can read
    dc09 = {"host": "127.0.0.1", "port": 9, "account": "1234"}
    api = {"host": "127.0.0.1", "port": 0, "cert_file": pki["certfile"],
           "key_file": str(tmp_path / "api.key")}
    client = {"cert_file": pki["certfile"], "key_file": str(tmp_path / "api.key")}
    cases = [
        ({"forward.webhook": {"secret_file": str(tmp_path / "no-hook")}},
         "forward.webhook.secret_file: cannot read %s: No such file or directory"
         % (tmp_path / "no-hook")),
        ({"forward.webhook": {"secret_file": str(tmp_path / "empty.secret")}},
         "forward.webhook.secret_file: %s is empty" % (tmp_path / "empty.secret")),
        ({"forward.dc09": dict(dc09, key_file=str(tmp_path / "no-dc09"))},
         "forward.dc09.key_file: cannot read %s: No such file or directory"
         % (tmp_path / "no-dc09")),
        ({"forward.dc09": dict(dc09, key_file=str(tmp_path / "open.pw"))},
         "forward.dc09.key_file: refusing %s: others can read it" % (tmp_path / "open.pw")),
        ({"forward.dc09": dict(dc09, key_file=str(tmp_path / "not-a-key"))},
         "forward.dc09.key_file: the key must be the AES key as 32, 48 or 64 hex digits"),
        ({"mqtt.tls": dict(client, cert_file=str(tmp_path / "no-cert.pem"))},
         "mqtt.tls.cert_file: no such file: %s" % (tmp_path / "no-cert.pem")),
        ({"mqtt.tls": dict(client, key_file=str(tmp_path / "no.key"))},
         "mqtt.tls.key_file: no such file: %s" % (tmp_path / "no.key")),
        ({"mqtt.tls": dict(client, key_file=pki["keyfile"])},
         "mqtt.tls.key_file: refusing %s: others can read it" % pki["keyfile"]),
        ({"mqtt.tls": dict(client, key_file=str(tmp_path / "other.key"))},
         "mqtt.tls.cert_file: cannot use %s with the key %s: KEY_VALUES_MISMATCH"
         % (pki["certfile"], tmp_path / "other.key")),
        ({"actions": dict(api, cert_file=str(tmp_path / "no-cert.pem"))},
         "actions.cert_file: no such file: %s" % (tmp_path / "no-cert.pem")),
        ({"actions": dict(api, key_file=str(tmp_path / "no.key"))},
         "actions.key_file: no such file: %s" % (tmp_path / "no.key")),
        ({"actions": dict(api, key_file=pki["keyfile"])},
         "actions.key_file: refusing %s: others can read it" % pki["keyfile"]),
        ({"actions": dict(api, key_file=str(tmp_path / "other.key"))},
         "actions.cert_file: cannot use %s and %s as the API's certificate and key: "
         "KEY_VALUES_MISMATCH" % (pki["certfile"], tmp_path / "other.key")),
        ({"mqtt.tls": {"ca_file": str(tmp_path / "missing-ca.pem")}},
         "mqtt.tls.ca_file: no such file: %s" % (tmp_path / "missing-ca.pem")),
        ({"mqtt.tls": {"ca_file": str(tmp_path / "not-a-ca.pem")}},
         "mqtt.tls.ca_file: %s holds no CA certificate in PEM" % (tmp_path / "not-a-ca.pem")),
        ({"forward.webhook": {"ca_file": str(tmp_path / "missing-ca.pem")}},
         "forward.webhook.ca_file: no such file: %s" % (tmp_path / "missing-ca.pem")),
        ({"mqtt": {"password_file": str(tmp_path / "open.pw")}},
         "mqtt.password_file: refusing %s: others can read it" % (tmp_path / "open.pw")),
        ({"actions": {"tokens_file": str(tmp_path / "no-tokens")}},
         "actions.tokens_file: cannot read %s: No such file or directory"
         % (tmp_path / "no-tokens")),
    ]
    for n, (sections, line) in enumerate(cases):
        gw = _gateway(tmp_path, name="gw-case%d" % n, **sections)
        for command in (["check-config"], ["run"]):
            result = gw.cli(*command, check=False)
            assert result.returncode == 2, (command, line)
            assert result.stderr.splitlines()[-1].startswith("vigil: " + line), result.stderr
            assert "Traceback" not in result.stderr
            if command == ["check-config"]:
                assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_device_key_file_others_can_read_is_named(tmp_path):
    gw = _gateway(tmp_path)
    gw.add_device(A, key_for(A))
    os.chmod(gw.dir / "data" / "keys" / "0000000a.v1.key", 0o644)
    result = gw.cli("check-config", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("vigil: device 0000000a: refusing the key file ")


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    # Enough devices that `device list` writes more than a pipe holds, so the write fails.
    gw = GatewayProcess(tmp_path / "gw", 1883)
    from vigil_gateway import config
    from vigil_gateway.service import open_state

    conn, registry, _ = open_state(config.load(str(gw.config)))
    for i in range(1, 2001):
        registry.add(i, key_for(i))
    conn.close()
    proc = subprocess.Popen(VIGIL + ["gateway", "device", "list", "--config", str(gw.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert stderr == ""


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
def test_a_reader_gone_before_the_first_write_ends_a_command_quietly(tmp_path, unbuffered):
    # A short listing sits in stdout's buffer until the command is done: with the reader
    # already gone, the one write is that last flush (as `| head` on a fleet of ~100 devices
    # that head has stopped reading). Both ways it ends as SIGPIPE would, with nothing said.
    gw = GatewayProcess(tmp_path / "gw", 1883)
    for device in (A, A + 1, A + 2):
        gw.add_device(device, key_for(device))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read, write = os.pipe()
    os.close(read)  # nobody will read
    proc = subprocess.Popen(VIGIL + ["gateway", "device", "list", "--config", str(gw.config)],
                            stdout=write, stderr=subprocess.PIPE, env=env)
    os.close(write)
    stderr = proc.stderr.read().decode()
    assert (proc.wait(60), stderr) == (141, "")
