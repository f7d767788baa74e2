# A device moves home, from a site gateway on SQLite to the workers on PostgreSQL and the other
# way, with the commands gateway/README.md gives ("A device has one home"): the old home revokes it and
# tells its last downlink counter (`device list --json`), the new home registers it with
# `--downlinks-after` that counter plus a margin. Every downlink the new home signs is above
# every one the old home signed, so the wearable's window takes them; the alarm the wearable
# raised while it was between homes (sent again, as a wearable does with what is not acked)
# is acked by the new home. The option's bad uses are refused in one line, nothing changed.
import json
import subprocess
import time
import urllib.request

import pytest

import vigil_protocol as p
from pg_workers import key_for
from test_pg_cli import VIGIL, _config, _key_file, _ok, _refused, gateway
from test_pg_workers_mqtt import _Wearables
from vigil_tools.postgres import free_port

DEV = 0x00E2A001
MARGIN = 1000  # for anything the old home signed after its counter was read


def _run(config, http_port, log_path):
    log = open(log_path, "w+")
    proc = subprocess.Popen(VIGIL + ["gateway", "run", "--config", config], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, open(log_path).read()[-2000:]
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                        timeout=1) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)


def _stop(proc):
    proc.terminate()
    assert proc.wait(30) == 0


def _wait_acked(wearables, refs):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not set(refs) <= {
            ref for _, ref in wearables.acks[DEV]}:
        time.sleep(0.05)
    assert set(refs) <= {ref for _, ref in wearables.acks[DEV]}, wearables.acks[DEV]


def _listed(config):
    return json.loads(_ok(gateway("device", "list", "--json", "--config", config)))


def alarm(counter):
    return p.encode(p.Alarm(DEV, counter, p.SOS), p.DeviceKey(key_for(DEV)), 2)


@pytest.mark.parametrize("old_home, new_home", [("sqlite", "postgresql"),
                                                ("postgresql", "sqlite")])
def test_a_device_moves_home_without_a_counter_going_back(old_home, new_home, pg_store_url,
                                                          tmp_path, mosquitto):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_port, new_port = free_port(), free_port()
    url = {"sqlite": "sqlite:", "postgresql": pg_store_url}
    old = _config(tmp_path / "old", url[old_home], mosquitto.port, old_port)
    new = _config(tmp_path / "new", url[new_home], mosquitto.port, new_port)
    key = _key_file(tmp_path, DEV)
    _ok(gateway("device", "add", "%08x" % DEV, "--key-file", key, "--config", old))
    wearables = _Wearables(mosquitto.port)
    try:
        gw = _run(old, old_port, tmp_path / "old.log")
        for counter in range(1, 21):
            wearables.publish(DEV, alarm(counter))
        _wait_acked(wearables, range(1, 21))
        # the old home lets go of it, and says where its downlink counter stands
        _ok(gateway("device", "revoke", "%08x" % DEV, "--config", old))
        _stop(gw)
        at_old = [c for c, _ in wearables.acks[DEV]]
        last = _listed(old)["downlink_counter"]
        assert last == max(at_old) and last >= 20
        wearables.publish(DEV, alarm(21))  # raised between homes: nobody acks it yet

        # the new home takes it, its downlinks above the old home's
        _refused(gateway("device", "add", "%08x" % DEV, "--key-file", key, "--downlinks-after",
                         "-1", "--config", new), "--downlinks-after", "0 to 4294967295")
        _ok(gateway("device", "add", "%08x" % DEV, "--key-file", key, "--downlinks-after",
                    last + MARGIN, "--config", new))
        assert _listed(new)["downlink_counter"] == last + MARGIN
        gw = _run(new, new_port, tmp_path / "new.log")
        try:
            wearables.publish(DEV, alarm(21))  # the wearable sends again what is not acked
            wearables.publish(DEV, alarm(22))
            _wait_acked(wearables, [21, 22])
        finally:
            _stop(gw)
        at_new = [c for c, ref in wearables.acks[DEV] if ref in (21, 22)]
        assert min(at_new) > last + MARGIN > max(at_old)
        assert wearables.bad == []
        assert _listed(new)["downlink_counter"] == max(at_new)
    finally:
        wearables.stop()


def test_downlinks_after_is_one_devices(tmp_path):
    config = _config(tmp_path, "sqlite:")
    records = []
    for device_id in (0x00E2A002, 0x00E2A003):
        path = tmp_path / ("%08x.json" % device_id)
        path.write_text(json.dumps({"device_id": "%08x" % device_id,
                                    "key": key_for(device_id).hex(), "protocol": 2}))
        records.append(path)
    _refused(gateway("device", "import", *records, "--downlinks-after", "5", "--config", config),
             "--downlinks-after", "one RECORD")
    assert _ok(gateway("device", "list", "--config", config)) == ""  # nothing imported
    _ok(gateway("device", "import", records[0], "--downlinks-after", "77", "--config", config))
    assert _listed(config)["downlink_counter"] == 77
