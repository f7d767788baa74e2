# `vigil gateway device import` is safe to run again and atomic for a batch: a record already
# registered (same key, same broker password) is left as it is; a record that cannot be
# imported, anywhere in the batch, stops it before any device is added, naming its file; one
# that fails while the batch is being added (SQLite: one transaction) leaves none of it.
import json

from gateway_harness import GatewayProcess


def _record(tmp_path, name, device, key_byte, password="broker-pw-0123456789", **extra):
    path = tmp_path / name
    path.write_text(json.dumps(dict({"device_id": device, "key": ("%02x" % key_byte) * 32,
                                     "mqtt_password": password}, **extra)))
    return path


def _devices(gw):
    out = gw.cli("device", "list", "--json").stdout
    return sorted(json.loads(line)["device"] for line in out.splitlines())


def test_import_is_safe_to_run_again(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    a = _record(tmp_path, "a.json", "0000000a", 0xA1)
    b = _record(tmp_path, "b.json", "0000000b", 0xB1)
    first = gw.cli("device", "import", str(a), str(b))
    assert first.stdout.splitlines() == ["imported device 0000000a", "imported device 0000000b"]
    again = gw.cli("device", "import", str(a), str(b))
    assert again.stdout.splitlines() == [
        "device 0000000a is already registered with this record (%s): left as it is" % a,
        "device 0000000b is already registered with this record (%s): left as it is" % b]
    assert _devices(gw) == ["0000000a", "0000000b"]


def test_a_bad_record_anywhere_in_the_batch_imports_nothing(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    gw.cli("device", "import", str(_record(tmp_path, "a.json", "0000000a", 0xA1)))
    good = _record(tmp_path, "c.json", "0000000c", 0xC1)
    cases = [
        (_record(tmp_path, "bad-key.json", "0000000d", 0xD1, key="00ff"),
         "vigil: {path}: "),
        (_record(tmp_path, "other-key.json", "0000000a", 0xEE),
         "vigil: {path}: device 0000000a is already registered with another key"),
        (_record(tmp_path, "other-pw.json", "0000000a", 0xA1, password="another-password-01"),
         "vigil: {path}: device 0000000a is already registered with another broker password"),
        (_record(tmp_path, "twice.json", "0000000c", 0xC1),
         "vigil: {path}: device 0000000c is also in %s (nothing imported)" % good),
    ]
    for bad, message in cases:
        result = gw.cli("device", "import", str(good), str(bad), check=False)
        assert result.returncode == 2, bad
        assert result.stderr.startswith(message.format(path=bad)), result.stderr
        assert "(nothing imported)" in result.stderr and "Traceback" not in result.stderr
        assert _devices(gw) == ["0000000a"]  # c, first in the batch, was not added either
    (tmp_path / "not-json.json").write_text("{")
    result = gw.cli("device", "import", str(good), str(tmp_path / "not-json.json"), check=False)
    assert result.stderr.startswith("vigil: %s is not JSON" % (tmp_path / "not-json.json"))
    assert _devices(gw) == ["0000000a"]


def test_a_batch_that_fails_while_it_is_added_leaves_none_of_it(tmp_path, monkeypatch):
    # What the checks cannot foresee (the disk, the process killed): the registry fails on
    # the batch's third record, after two were added; the transaction takes them back.
    from vigil_gateway import RegistryError
    from vigil_gateway.registry import Registry
    from vigil_tools import cli

    gw = GatewayProcess(tmp_path / "gw", 1883)
    gw.cli("device", "import", str(_record(tmp_path, "a.json", "0000000a", 0xA1)))
    batch = [str(_record(tmp_path, "%s.json" % d, d, n))
             for d, n in (("0000000b", 0xB1), ("0000000c", 0xC1), ("0000000d", 0xD1))]
    real, calls = Registry.import_record, []

    def failing(self, record):
        if "vigil-import-" not in self.keys_dir:  # not the checks' scratch registry
            calls.append(record["device_id"])
            if len(calls) == 3:
                raise RegistryError("no space left on device")
        return real(self, record)

    monkeypatch.setattr(Registry, "import_record", failing)
    status = cli.main(["gateway", "device", "import", *batch, "--config", str(gw.config)])
    assert status == 2 and calls == ["0000000b", "0000000c", "0000000d"]
    monkeypatch.undo()
    assert _devices(gw) == ["0000000a"]  # b and c went back with d
    assert gw.cli("device", "import", *batch).stdout.splitlines() == [
        "imported device 0000000b", "imported device 0000000c", "imported device 0000000d"]
