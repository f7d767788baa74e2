# An upgrade: the gateway of today started on a data folder the gateway of revision 75582ed
# left (fixtures/release-75582ed, made by fixtures/make_release_db.py with that revision's
# code, which recorded no schema version): the migrations bring the database up at start
# (migrations.py; test_migrations.py checks the schema), and everything is there and works: the
# device, the open incident and its audit, the undelivered event, the wearer profile, the
# responder request already used, the responder's action the broker never took (sent now),
# the downlink counter; and on the folder of revision 321d6f6 (schema version 2), the event it
# left undelivered, sent with its location in today's form.
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

import vigil_protocol as p
from gateway_harness import key_for, write_secret
from vigil_gateway import migrations

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release-75582ed"
A = 0x0000000A
TOKEN = "upgrade-token-0123456789"


def _old_data(gw, fixture=FIXTURE):
    data = gw.dir / "data"
    shutil.copytree(fixture, data)
    for folder, _, files in os.walk(data):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)  # git keeps 0644


def _schema_version(path):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_the_gateway_of_today_runs_on_the_data_of_an_older_release(mosquitto, gateway_factory,
                                                                     devices, tmp_path):
    write_secret(tmp_path / "hook.secret", "webhook-secret\n")
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "upgrade"},
                         actions={"tokens_file": str(tmp_path / "tokens")},
                         **{"forward.webhook": {"url": "https://127.0.0.1:9/hook",
                                                "secret_file": str(tmp_path / "hook.secret")}})
    _old_data(gw)
    # The wearable's session is at the broker before the gateway starts (as on a site).
    a = devices(mosquitto.port, A, key_for(A), prefix="upgrade")
    gw.start()
    assert "the config and" in gw.cli("check-config").stdout
    assert _schema_version(gw.dir / "data" / "gateway.db") == migrations.VERSION
    [device] = [json.loads(line) for line in gw.cli("device", "list", "--json").stdout.splitlines()]
    assert (device["device"], device["state"], device["interval_s"], device["label"],
            device["broker_password"]) == ("0000000a", "active", 60, "van 3", True)
    [incident] = gw.incidents()
    assert (incident["kind"], incident["state"], incident["counter"]) == ("SOS", "open", 1)
    assert [e["event"] for e in incident["audit"]] == ["raised", "acknowledged"]
    [pending] = [json.loads(line) for line in
                 gw.cli("outbox", "--pending", "--json").stdout.splitlines()]
    assert (pending["event"], pending["key"]) == ("raised", "0000000a-1-raised")
    assert "A. Worker" in gw.cli("wearer", "show", "0000000a").stdout
    # The responder's action the old gateway stored and the broker never took reaches the
    # wearable, as it was signed (counter 7).
    action = a.downlinks.get(timeout=15)
    assert (type(action), action.counter, action.ref, action.action) == (
        p.Action, 7, 1, p.ACKNOWLEDGED)
    # The wearable goes on: its next alarm is acknowledged with the next downlink counter.
    a.counter = 1
    a.publish(a.alarm(p.FALL))
    a.wait_acked([2])
    acks = []
    while not a.downlinks.empty():
        acks.append(a.downlinks.get_nowait())
    assert [f.counter for f in acks if isinstance(f, p.Ack)] == [8]
    # Responder requests: the one used before stays used; a new one is applied and its retry
    # gets its answer (columns the older table lacked, added by the migration).
    url = "http://127.0.0.1:%d/v1/incidents/%d/actions" % (gw.http_port, incident["id"])
    headers = {"Authorization": "Bearer %s" % TOKEN}
    old = httpx.post(url, json={"action": "acknowledge", "request_id": "old-request-1",
                                "sent_at": time.time()}, headers=headers, timeout=10)
    assert (old.status_code, old.json()["error"]) == (409, "replayed")
    request = {"action": "help_dispatched", "request_id": "new-request-1",
               "sent_at": time.time()}
    first = httpx.post(url, json=request, headers=headers, timeout=10)
    assert first.status_code == 200 and first.json()["effect"] == "applied"
    assert httpx.post(url, json=request, headers=headers, timeout=10).json() == first.json()


def test_an_event_a_release_of_schema_version_2_left_undelivered_goes_with_its_location(
        mosquitto, gateway_factory, tmp_path):
    # fixtures/release-321d6f6: the raised event was queued with the location as that release
    # kept it (coordinates alone); today's gateway sends it in today's form: a GNSS fix whose
    # age was never known, long stale by now, valid against the schema
    import jsonschema

    from vigil_responder import ResponderBackend

    schema = json.loads((Path(__file__).resolve().parents[2] / "gateway" /
                         "webhook-schema.json").read_text())
    backend = ResponderBackend(b"webhook-secret").start()
    try:
        write_secret(tmp_path / "hook.secret", "webhook-secret\n")
        gw = gateway_factory(mosquitto.port, mqtt={"prefix": "upgrade2"},
                             **{"forward.webhook": {"url": backend.url, "secret_file":
                                                    str(tmp_path / "hook.secret")}})
        _old_data(gw, FIXTURE.parent / "release-321d6f6")
        gw.start()
        raised = backend.wait_for(lambda e: e["event"] == "raised")
    finally:
        backend.stop()
    jsonschema.validate(raised, schema)
    assert raised["idempotency_key"] == "0000000a-1-raised"
    where = raised["location"]
    assert (where["source"], where["lat"], where["lon"], where["accuracy_m"]) == \
        ("gnss", 51.5007, -0.1246, 9)
    assert where["stale"] is True and where["age_s"] > 60
    assert where["fix"]["at"] == where["at"] == "2026-11-30T00:53:20.000Z"
