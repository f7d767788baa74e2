# `vigil gateway` on PostgreSQL ([store] url = "postgresql://..."): the operators' commands on
# the database (device add/import/list/revoke/rotate-key, wearer set/show/list, beacon
# add/list/remove, incidents, outbox, check-config), the ones not served there refused in one
# line naming them (backup: PostgreSQL's own tools; restore SRC: restore with those, then
# `restore --database-restored`, test_pg_restore.py), and `vigil gateway run` starting a worker
# (service_pg) that acks a wearable's alarm, names the place of the beacon it heard, and shows
# the shared state on /metrics (a wearable gone silent as lost contact). A password in the URL
# is never printed.
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import vigil_protocol as p
from pg_workers import key_for
from test_pg_workers_mqtt import _ids, _Wearables
from vigil_tools.postgres import free_port

DEV, OTHER, IMPORTED = 0x00E1C001, 0x00E1C002, 0x00E1C003
HALL = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2"
AP = "A4-B1-C2-D3-E4-F5"
SECRET = "hunter2-in-the-url"
VIGIL = [sys.executable, "-m", "vigil_tools.cli"]  # `vigil`, as this checkout has it


def _with_password(url):
    # postgresql://user@host... -> postgresql://user:SECRET@host...: the session's server
    # trusts loopback, so the password is taken and not needed
    return url.replace("@", ":%s@" % SECRET, 1)


def _config(tmp_path, url, mqtt_port=1, http_port=0, extra=""):
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "%s"\n[store]\nurl = "%s"\n[mqtt]\nhost = "127.0.0.1"'
                    '\nport = %d\nclient_id = "cli-%d"\n[http]\nport = %d\n%s'
                    % (tmp_path / "data", url, mqtt_port, next(_ids), http_port, extra))
    return path


def gateway(*args, **kwargs):
    """`vigil gateway ARGS`, its password-free output."""
    done = subprocess.run(VIGIL + ["gateway", *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kwargs)
    assert SECRET not in done.stdout + done.stderr
    return done


def _short_id(kind, identifier):
    from vigil_gateway.beacons import parse_identifier

    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


def _rows(url, sql):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as reply:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in reply.read().decode().splitlines()
                if line and not line.startswith("#")}


def _key_file(tmp_path, device_id):
    path = tmp_path / ("%08x.key" % device_id)
    path.write_text(key_for(device_id).hex() + "\n")
    path.chmod(0o600)
    return path


def _ok(done):
    assert done.returncode == 0, done.stderr
    return done.stdout


def _refused(done, *words):
    assert done.returncode == 2 and done.stdout == "", done.stdout
    line = done.stderr
    assert line.count("\n") == 1 and line.startswith("vigil: "), line
    for word in words:
        assert word in line, line
    return line


def test_the_operators_commands_on_the_database(pg_database, tmp_path):
    config = _config(tmp_path, _with_password(pg_database))  # an empty database: tables made
    c = ("--config", config)
    assert "added device %08x" % DEV in _ok(gateway("device", "add", "%08x" % DEV, "--key-file",
                                                    _key_file(tmp_path, DEV), *c))
    record = tmp_path / "other.json"
    _ok(gateway("device", "add", "%08x" % OTHER, "--record-out", record, "--label", "van 2",
                "--interval", "120", *c))
    again = _ok(gateway("device", "add", "%08x" % OTHER, "--record-out", record, *c))
    assert "already registered with this record" in again  # a rerun changes nothing
    _refused(gateway("device", "add", "%08x" % DEV, "--key-file", _key_file(tmp_path, OTHER), *c),
             "%08x" % DEV, "another key")
    imported = tmp_path / "imported.json"
    imported.write_text(json.dumps({"device_id": "%08x" % IMPORTED,
                                    "key": key_for(IMPORTED).hex(), "protocol": 2}))
    assert "imported device %08x" % IMPORTED in _ok(gateway("device", "import", imported, *c))
    assert "left as it is" in _ok(gateway("device", "import", imported, *c))
    _ok(gateway("device", "revoke", "%08x" % IMPORTED, *c))
    _ok(gateway("device", "rotate-key", "%08x" % DEV, "--key-file", _key_file(tmp_path, DEV), *c))
    rows = [json.loads(line) for line in _ok(gateway("device", "list", "--json", *c)).splitlines()]
    assert [(r["device"], r["state"], r["key_version"], r["broker_password"], r["label"],
             r["interval_s"]) for r in rows] == [
        ("%08x" % DEV, "active", 2, False, "", None),
        ("%08x" % OTHER, "active", 1, True, "van 2", 120),
        ("%08x" % IMPORTED, "revoked", 1, False, "", None)]
    assert sorted(os.listdir(tmp_path / "data" / "keys")) == sorted([  # v1 of DEV removed
        "%08x.v2.key" % DEV, "%08x.v1.key" % OTHER, "%08x.v1.key" % IMPORTED])
    _ok(gateway("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--zone", "12",
                "--contact", "B. Lead,+44 1234 567890,supervisor", *c))
    shown = _ok(gateway("wearer", "show", "%08x" % DEV, *c))
    assert "A. Worker" in shown and "zone     12" in shown and "B. Lead" in shown
    _refused(gateway("wearer", "set", "%08x" % DEV, "--name", "X", "--zone", "1000", *c), "--zone")
    listed = [json.loads(line) for line in _ok(gateway("wearer", "list", "--json", *c)
                                               ).splitlines()]
    assert [(w["device"], w["zone"]) for w in listed] == [("%08x" % DEV, 12)]
    assert _ok(gateway("incidents", *c)) == "" and _ok(gateway("outbox", *c)) == ""
    assert "2 device key files readable" in _ok(gateway("check-config", *c))  # the active ones
    assert "placed at Main hall, floor G, Reception" in _ok(gateway(
        "beacon", "add", "ble", HALL, "--place", "Main hall", "--floor", "G", "--room",
        "Reception", *c))
    _ok(gateway("beacon", "add", "wifi", AP, "--place", "Plant room", *c))
    _refused(gateway("beacon", "add", "wifi", AP, "--place", "Elsewhere", *c), "already placed")
    _ok(gateway("beacon", "remove", "wifi", AP, *c))
    placed = [json.loads(line) for line in _ok(gateway("beacon", "list", "--json", *c)
                                               ).splitlines()]
    assert [(b["kind"], b["place"], b["room"]) for b in placed] == [
        ("ble", "Main hall", "Reception")]
    # what is not served on PostgreSQL: one line each, naming it, nothing done
    _refused(gateway("backup", tmp_path / "bak", *c), "backup", "not done by Vigil on PostgreSQL",
             "pg_dump")
    assert not (tmp_path / "bak").exists()
    _refused(gateway("restore", tmp_path / "bak", *c), "restore", "on PostgreSQL",
             "--database-restored")


def test_vigil_gateway_run_starts_a_worker_on_the_database(pg_store_url, tmp_path, mosquitto):
    http_port = free_port()
    secret = tmp_path / "hook.secret"
    secret.write_text("s" * 32 + "\n")
    secret.chmod(0o600)
    config = _config(tmp_path, _with_password(pg_store_url), mosquitto.port, http_port,
                     # a webhook nobody answers: its events wait in the outbox
                     '[forward.webhook]\nurl = "https://127.0.0.1:%d/hook"\nsecret_file = "%s"'
                     '\ntimeout_s = 1\n[supervision]\ndefault_interval_s = 3\ngrace_s = 1\n'
                     'check_every_s = 0.2\n' % (free_port(), secret))
    c = ("--config", config)
    _ok(gateway("device", "add", "%08x" % DEV, "--key-file", _key_file(tmp_path, DEV), *c))
    _ok(gateway("wearer", "set", "%08x" % DEV, "--name", "A. Worker", *c))
    _ok(gateway("beacon", "add", "ble", HALL, "--place", "Main hall", "--room", "Reception", *c))
    log = open(tmp_path / "run.log", "w+")
    worker = subprocess.Popen(VIGIL + ["gateway", "run", *c],
                              stdout=log, stderr=subprocess.STDOUT)
    wearables = None
    try:
        deadline = time.monotonic() + 30
        while True:
            assert worker.poll() is None and time.monotonic() < deadline, \
                open(tmp_path / "run.log").read()[-2000:]
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                            timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        wearables = _Wearables(mosquitto.port)
        heard = (3, ((_short_id("ble", HALL), -61),))  # the hall's beacon, 3 s ago
        wearables.publish(DEV, p.encode(p.Alarm(DEV, 1, p.SOS, beacons=heard),
                                        p.DeviceKey(key_for(DEV)), 2, size=48))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not wearables.acks[DEV]:
            time.sleep(0.05)
        assert [ref for _, ref in wearables.acks[DEV]] == [1]  # persisted, then acked
        rows = [json.loads(line) for line in _ok(gateway("incidents", "--json", *c)).splitlines()]
        assert [(r["device"], r["kind"], r["counter"], [a["event"] for a in r["audit"]])
                for r in rows][:1] == [("%08x" % DEV, "SOS", 1, ["raised"])]
        pending = [json.loads(line) for line in _ok(gateway("outbox", "--pending", "--json", *c)
                                                    ).splitlines()]
        assert [(r["destination"], r["incident"], r["event"]) for r in pending][:1] == [
            ("webhook", 1, "raised")]
        [(snapshot,)] = _rows(pg_store_url, "SELECT snapshot FROM outbox WHERE incident_id = 1")
        location = json.loads(snapshot)["location"]
        assert (location["source"], location["place"], location["room"]) == (
            "ble", "Main hall", "Reception")
        metrics = _metrics(http_port)
        assert metrics['vigil_gateway_devices{state="active"}'] == 1
        assert metrics['vigil_gateway_forward_pending{destination="webhook"}'] >= 1
        assert metrics['vigil_gateway_incidents{state="open"}'] >= 1
        deadline = time.monotonic() + 20  # silent from now on: lost contact, in the gauge
        while time.monotonic() < deadline and _metrics(http_port).get(
                'vigil_gateway_devices{state="lost_contact"}') != 1:
            time.sleep(0.2)
        assert _metrics(http_port)['vigil_gateway_devices{state="lost_contact"}'] == 1
        assert wearables.bad == []
    finally:
        if wearables is not None:
            wearables.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            pytest.fail("the worker did not stop on SIGTERM")
    text = open(tmp_path / "run.log").read()
    assert SECRET not in text
    started = [json.loads(line) for line in text.splitlines()
               if '"gateway_started"' in line]
    assert started and started[0]["store"] == "postgresql" and "***" in started[0]["database"]
    assert worker.returncode == 0


def test_ble_on_a_worker_is_refused_in_one_line(pg_store_url, tmp_path):
    # BLE stays edge-local: a device's home is one gateway, and workers share none of a radio
    config = _config(tmp_path, pg_store_url, extra="[ble]\nenabled = true\n")
    done = gateway("run", "--config", config)
    # as `run` stops on any config error: its JSON log line, then the one line (test_check_config)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "vigil: ble.enabled: BLE is edge-local: a gateway on SQLite serves it, workers on "
        "PostgreSQL do not")
