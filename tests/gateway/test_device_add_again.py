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


def test_a_first_run_stopped_after_writing_its_record_is_finished_by_the_next(tmp_path):
    # The record is written before the device is registered: a run killed between the two
    # (or failing to register) leaves the record alone. Run again, add registers the device
    # from that record, with its key and broker password; it never makes new secrets.
    from vigil_gateway import registry

    gw = GatewayProcess(tmp_path / "gw", 1883)
    gw.cli("device", "list")  # the data folder exists, the device does not
    record = tmp_path / "units" / ("unit-%s.json" % DEV)  # units/ made by add, as by keygen
    key = registry.new_key()
    record.parent.mkdir(mode=0o700)
    registry.write_private_file(str(record), registry.provisioning_record(
        int(DEV, 16), key, "broker-password-0123"))
    written = record.read_bytes()
    again = gw.cli("device", "add", DEV, "--record-out", str(record))
    assert "added device %s from its provisioning record %s" % (DEV, record) in again.stdout
    assert record.read_bytes() == written
    [listed] = [json.loads(line) for line in
                gw.cli("device", "list", "--json").stdout.splitlines()]
    assert (listed["device"], listed["broker_password"], listed["counter_floor"]) == \
        (DEV, True, 0)
    assert (gw.dir / "data" / "keys" / ("%s.v1.key" % DEV)).read_text().strip() == key.hex()
    third = gw.cli("device", "add", DEV, "--record-out", str(record))
    assert "already registered with this record" in third.stdout  # and from now on, as before
    # a record there of another device, or another key than --key-file's: refused, untouched
    other = tmp_path / "other.json"
    registry.write_private_file(str(other), registry.provisioning_record(
        0xBADA55, key_for(0xBADA55), "x"))
    _refused(gw.cli("device", "add", "00000001", "--record-out", str(other), check=False),
             "%s exists and is not the provisioning record of device 00000001" % other)
    (tmp_path / "k").write_text(key_for(2).hex())
    registry.write_private_file(str(tmp_path / "two.json"), registry.provisioning_record(
        2, key_for(3), "y"))
    _refused(gw.cli("device", "add", "00000002", "--key-file", str(tmp_path / "k"),
                    "--record-out", str(tmp_path / "two.json"), check=False),
             "holds another key for device 00000002 than %s" % (tmp_path / "k"))


def test_a_record_out_folder_that_does_not_exist_is_made_and_a_missing_key_file_named(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    record = tmp_path / "units" / "van3.json"
    gw.cli("device", "add", DEV, "--record-out", str(record))
    assert oct(record.parent.stat().st_mode & 0o777) == "0o700"
    assert json.loads(record.read_text())["device_id"] == DEV
    _refused(gw.cli("device", "add", "00000005", "--key-file", str(tmp_path / "nope"),
                    check=False),
             "cannot read the key file %s: No such file or directory" % (tmp_path / "nope"))
