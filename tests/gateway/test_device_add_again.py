# `vigil gateway device add ID --record-out FILE` (step 6 of the deployment guide) is safe to
# run again: the same device with the record that add wrote is left as it is, record and
# registry unchanged; another key or broker password for the same id is refused, naming the
# device and the file, and changes nothing.
import hashlib
import json

from gateway_harness import GatewayProcess, key_for

DEV = "00c0ffee"


def _state(gw, *files):
    """Everything a rerun must leave as it was: the registry, the key files, the records."""
    keys = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest())
                  for p in (gw.dir / "data" / "keys").iterdir())
    records = [(str(f), f.read_bytes() if f.exists() else None, f.stat().st_mode
                if f.exists() else None) for f in files]
    return gw.cli("device", "list", "--json").stdout, keys, records


def _refused(result, *says):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    for text in says:
        assert text in result.stderr, (text, result.stderr)


def test_device_add_with_the_same_record_again_changes_nothing(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    record = tmp_path / ("unit-%s.json" % DEV)
    first = gw.cli("device", "add", DEV, "--record-out", str(record))
    assert "added device %s" % DEV in first.stdout
    before = _state(gw, record)
    again = gw.cli("device", "add", DEV, "--record-out", str(record))
    assert again.stdout == ("device %s is already registered with this record (%s): left as it "
                            "is\n" % (DEV, record))
    assert _state(gw, record) == before
    # The same key and password given as files: the same record.
    written = json.loads(record.read_text())
    (tmp_path / "k").write_text(written["key"])
    (tmp_path / "pw").write_text(written["mqtt_password"])
    same = gw.cli("device", "add", DEV, "--key-file", str(tmp_path / "k"),
                  "--mqtt-password-file", str(tmp_path / "pw"))
    assert "already registered with this record (%s): left as it is" % (tmp_path / "k") \
        in same.stdout
    assert _state(gw, record) == before


def test_device_add_with_another_key_for_the_same_id_is_refused(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    record = tmp_path / "unit.json"
    gw.cli("device", "add", DEV, "--record-out", str(record))
    written = json.loads(record.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(written, key=key_for(7).hex())))
    other_pw = tmp_path / "other-pw.json"
    other_pw.write_text(json.dumps(dict(written, mqtt_password="another-password-0123")))
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(dict(written, device_id="00c0fff0")))
    (tmp_path / "k7").write_text(key_for(7).hex())
    new = tmp_path / "new.json"
    before = _state(gw, record, other, other_pw, elsewhere, new)
    for args, says in [
            (["--record-out", str(other)], [str(other), DEV, "already registered with another "
                                            "key", "nothing changed"]),
            (["--record-out", str(other_pw)], [str(other_pw), DEV, "another broker password"]),
            (["--record-out", str(elsewhere)], [DEV, str(elsewhere),
                                                "is not its provisioning record"]),
            (["--record-out", str(new)], ["device %s is already registered" % DEV]),
            (["--key-file", str(tmp_path / "k7")], [str(tmp_path / "k7"), DEV, "another key"]),
            (["--key-file", str(tmp_path / "k7"), "--record-out", str(record)],
             [str(record), DEV, "another key"])]:
        _refused(gw.cli("device", "add", DEV, *args, check=False), *says)
        assert _state(gw, record, other, other_pw, elsewhere, new) == before, args
    assert not new.exists()  # no record written for a key that was never registered
