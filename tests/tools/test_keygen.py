# `vigil keygen`: a private device record the gateway can import as is.
import json
import stat

from vigil_cli import vigil


def test_keygen_writes_a_private_record_and_prints_no_secret(tmp_path):
    out = tmp_path / "dev.json"
    proc = vigil("keygen", "--out", out, "--label", "van 3")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    record = json.loads(out.read_text())
    assert len(bytes.fromhex(record["key"])) == 32
    assert len(record["device_id"]) == 8 and int(record["device_id"], 16) != 0
    assert record["mqtt_username"] == record["device_id"]
    assert record["label"] == "van 3"
    printed = proc.stdout + proc.stderr
    assert record["device_id"] in printed
    assert record["key"] not in printed and record["mqtt_password"] not in printed


def test_keygen_shows_the_key_only_when_asked(tmp_path):
    out = tmp_path / "dev.json"
    proc = vigil("keygen", "--out", out, "--device", "00c0ffee", "--show-key")
    record = json.loads(out.read_text())
    assert record["device_id"] == "00c0ffee"
    assert ("key %s" % record["key"]) in proc.stdout
    assert record["mqtt_password"] not in proc.stdout


def test_keygen_never_overwrites_a_record_and_is_safe_to_run_again(tmp_path):
    out = tmp_path / "units" / "van3.json"  # the folder is made
    assert vigil("keygen", "--out", out, "--device", "00c0ffee").returncode == 0
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o700
    before = out.read_text()
    for args in ((), ("--device", "00c0ffee")):  # again: the record is kept, and said so
        proc = vigil("keygen", "--out", out, *args)
        assert proc.returncode == 0, proc.stderr
        assert "device 00c0ffee: kept the record in %s" % out in proc.stdout
    proc = vigil("keygen", "--out", out, "--device", "0000beef")
    assert proc.returncode == 2
    assert proc.stderr == ("vigil: %s holds the record of device 00c0ffee, not 0000beef: not "
                           "overwriting a device record (its key may be in use)\n" % out)
    assert out.read_text() == before


def test_keygen_refuses_a_bad_device_id(tmp_path):
    proc = vigil("keygen", "--out", tmp_path / "dev.json", "--device", "00000000")
    assert proc.returncode == 2 and "device id" in proc.stderr
    assert not (tmp_path / "dev.json").exists()


def test_the_gateway_imports_a_keygen_record(tmp_path, device_file, gateway_config):
    proc = vigil("gateway", "device", "import", device_file, "--config", gateway_config)
    assert proc.returncode == 0, proc.stderr
    listed = vigil("gateway", "device", "list", "--json", "--config", gateway_config)
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["device"] == json.loads(device_file.read_text())["device_id"]
    assert row["broker_password"] is True


def test_frame_decode_takes_the_key_from_a_device_record(tmp_path):
    import vigil_protocol as p

    out = tmp_path / "dev.json"
    vigil("keygen", "--out", out, "--device", "00c0ffee")
    record = json.loads(out.read_text())
    frame = p.encode(p.Alarm(0x00C0FFEE, 7, p.DURESS), bytes.fromhex(record["key"])).hex()
    proc = vigil("frame", "decode", frame, "--key-file", out)
    assert proc.returncode == 0, proc.stderr
    assert "DURESS" in proc.stdout and record["key"] not in proc.stdout
