# The real gateway (`vigil gateway run`) against a real Mosquitto, forwarding to the reference
# responder backend (signatures checked there), and the responder actions API (checked against
# gateway/openapi.json): both procedures end to end, refusals, and a kill while forwarding.
import json
import os
import sys
import time
import uuid

import jsonschema
import pytest

import vigil_protocol as p
from vigil_gateway import rfc3339, webhook
from vigil_responder import ActionsClient, ResponderBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import (  # noqa: E402
    Device, GatewayProcess, key_for, wait_for, write_secret)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SECRET = b"webhook-secret-for-tests-0123456789"
TOKEN = "responder-token-0123456789abcdef"
DEV = 0x00C0FFEE
KEY = key_for(DEV)
OPENAPI = json.load(open(os.path.join(ROOT, "gateway", "openapi.json")))
WEBHOOK_SCHEMA = json.load(open(os.path.join(ROOT, "gateway", "webhook-schema.json")))


def check_openapi(path, method, status, body):
    """The reply matches the OpenAPI document's schema for that operation and status."""
    op = OPENAPI["paths"][path][method]
    response = op["responses"][str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = dict(response["content"]["application/json"]["schema"],
                  components=OPENAPI["components"])
    jsonschema.validate(body, {"$ref": "#/$defs/root", "$defs": {"root": schema},
                               "components": OPENAPI["components"]})


class Site:
    def __init__(self, tmp_path, broker_port, backend):
        write_secret(tmp_path / "secret", SECRET)
        write_secret(tmp_path / "tokens", "# backend token\nresponder %s\n" % TOKEN)
        # a topic prefix and a device session of its own: the shared broker may hold other
        # tests' downlinks for this device id (signed with other keys) in its sessions
        self.prefix = "fwd-" + uuid.uuid4().hex[:8]
        self.gw = GatewayProcess(
            tmp_path / "gw", broker_port, mqtt={"prefix": self.prefix},
            forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
            **{"forward.webhook": {"url": backend.url, "secret_file": str(tmp_path / "secret")},
               "actions": {"tokens_file": str(tmp_path / "tokens")}})
        self.gw.add_device(DEV, KEY)
        self.api = ActionsClient("http://127.0.0.1:%d" % self.gw.http_port, TOKEN)

    def incident_for(self, counter):
        return next(i for i in self.gw.incidents() if i["counter"] == counter)


@pytest.fixture
def backend():
    b = ResponderBackend(SECRET).start()
    yield b
    b.stop()


@pytest.fixture
def devices():
    made = []

    def make(*args, **kwargs):
        made.append(Device(*args, **kwargs))
        return made[-1]

    yield make
    for device in made:
        device.close()


@pytest.fixture
def site(tmp_path, mosquitto, backend):
    s = Site(tmp_path, mosquitto.port, backend)
    yield s
    s.gw.stop()


def downlinks_until(device, predicate, timeout=15):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = device.downlinks.get(timeout=0.1)
        except Exception:
            continue
        seen.append(frame)
        if predicate(frame):
            return seen
    raise AssertionError("no such downlink; saw %r" % seen)


def is_action(code, ref):
    return lambda f: isinstance(f, p.Action) and f.action == code and f.ref == ref


def test_sos_procedure_end_to_end(site, backend, mosquitto, devices):
    site.gw.cli("wearer", "set", "%08x" % DEV, "--name", "A. Worker",
                "--contact", "B. Lead,+44 1234 567890,supervisor", "--notes", "asthma")
    site.gw.start()
    device = devices(mosquitto.port, DEV, KEY, prefix=site.prefix, client_id=site.prefix)
    sos = device.next_counter()
    device.publish(p.encode(p.Alarm(DEV, sos, p.SOS, location=(515007000, -1246000, 9)),
                            device.key))
    raised = backend.wait_for(lambda e: e["event"] == "raised")
    jsonschema.validate(raised, WEBHOOK_SCHEMA)
    assert raised["wearer"]["name"] == "A. Worker"
    assert raised["wearer"]["contacts"][0]["phone"] == "+44 1234 567890"
    assert raised["procedure"]["contact_wearer"] is True
    assert raised["location"]["lat"] == pytest.approx(51.5007)
    # the signed DELIVERED ack reaches the wearable's down topic and verifies there
    downlinks_until(device, lambda f: isinstance(f, p.Ack) and f.stage == p.DELIVERED
                    and f.ref == sos)
    incident = site.incident_for(sos)["id"]

    status, body = site.api.act(incident, "prompt_double_tap", note="silent call")
    assert status == 200 and body["effect"] == "applied"
    check_openapi("/v2/incidents/{incident_id}/actions", "post", status, body)
    seen = downlinks_until(device, is_action(p.PROMPT_DOUBLE_TAP, sos))
    assert seen[-1].counter == body["downlink"]
    status, again = site.api.act(incident, "prompt_double_tap")  # a second request: no effect
    assert status == 200 and again["effect"] == "none" and again["downlink"] == body["downlink"]

    device.publish(device.alarm(p.DOUBLE_TAP, ref=sos))
    confirms = backend.wait_for(lambda e: e["event"] == "wearer_confirms")
    assert confirms["incident"]["state"] == "needs_help"
    status, body = site.api.act(incident, "help_dispatched")
    downlinks_until(device, is_action(p.HELP_DISPATCHED, sos))
    status, body = site.api.act(incident, "resolve")
    assert body["state"] == "closed"
    downlinks_until(device, is_action(p.RESOLVED, sos))
    backend.wait_for(lambda e: e["event"] == "resolved")
    status, shown = site.api.incident(incident)
    check_openapi("/v2/incidents/{incident_id}", "get", status, shown)
    events = [a["event"] for a in shown["audit"]]
    assert events == ["raised", "prompt_double_tap", "wearer_confirms", "help_dispatched",
                      "resolved"]
    assert backend.rejected == [] and device.bad_downlinks == []
    # wearer details never reach the log
    assert "A. Worker" not in site.gw.log() and "1234 567890" not in site.gw.log()


def test_duress_reaches_the_backend_and_nothing_cues_the_wearer(site, backend, mosquitto,
                                                                 devices):
    site.gw.cli("wearer", "set", "%08x" % DEV, "--name", "A. Worker",
                "--contact", "B. Lead,+44 1234 567890,supervisor")
    site.gw.start()
    device = devices(mosquitto.port, DEV, KEY, prefix=site.prefix, client_id=site.prefix)
    duress = device.next_counter()
    device.publish(p.encode(p.Alarm(DEV, duress, p.DURESS), device.key))
    event = backend.wait_for(lambda e: e["event"] == "raised")
    assert event["incident"]["kind"] == "DURESS"
    assert event["procedure"]["contact_wearer"] is False
    assert "do NOT contact the wearer" in event["procedure"]["instruction"]
    assert event["wearer"]["contacts"][0]["name"] == "B. Lead"
    incident = site.incident_for(duress)["id"]
    status, body = site.api.act(incident, "prompt_double_tap")
    assert status == 409 and body["error"] == "refused" and "duress" in body["message"]
    check_openapi("/v2/incidents/{incident_id}/actions", "post", status, body)
    for action in ("acknowledge", "help_dispatched"):
        status, body = site.api.act(incident, action)
        assert status == 200 and body["effect"] == "applied" and body["downlink"] is None
    status, body = site.api.act(incident, "resolve")
    assert body["downlink"] is not None
    frames = downlinks_until(device, is_action(p.RESOLVED, duress))
    actions = [f.action for f in frames if isinstance(f, p.Action)]
    assert actions == [p.RESOLVED]  # never a prompt, acknowledgement or dispatch cue


def test_wrong_token_malformed_and_replayed_requests_are_refused_and_counted(site, mosquitto,
                                                                             devices, backend):
    site.gw.start()
    device = devices(mosquitto.port, DEV, KEY, prefix=site.prefix, client_id=site.prefix)
    sos = device.next_counter()
    device.publish(p.encode(p.Alarm(DEV, sos, p.SOS), device.key))
    device.wait_acked([sos])
    incident = site.incident_for(sos)["id"]
    path = "/v2/incidents/%d/actions" % incident
    good = {"action": "acknowledge", "request_id": uuid.uuid4().hex,
            "sent_at": rfc3339.format(time.time())}

    cases = [
        (dict(token="wrong-token-0123456789"), 401, "unauthorized"),
        (dict(token=""), 401, "unauthorized"),
        (dict(raw=b"{not json"), 400, "malformed"),
        (dict(payload=[1, 2]), 400, "malformed"),
        (dict(payload=dict(good, action="call_wearer")), 400, "malformed"),
        (dict(payload=dict(good, request_id="x")), 400, "malformed"),
        (dict(payload=dict(good, extra=1)), 400, "malformed"),
        (dict(payload={k: v for k, v in good.items() if k != "sent_at"}), 400, "malformed"),
        (dict(payload=dict(good, sent_at=rfc3339.format(time.time() - 3600))), 409, "replayed"),
        (dict(payload=dict(good, sent_at="2026-13-01T00:00:00Z")), 400, "malformed"),
    ]
    for kwargs, status, error in cases:
        got, body = site.api.request("POST", path, **kwargs)
        assert (got, body["error"]) == (status, error), (kwargs, body)
        check_openapi("/v2/incidents/{incident_id}/actions", "post", got, body)
        assert body["message"]
    first = site.api.request("POST", path, good)
    assert first[0] == 200
    assert site.api.request("POST", path, good) == first     # the same request again: a retry
    status, body = site.api.request("POST", path, dict(good, note="another"))  # another body
    assert (status, body["error"]) == (409, "replayed")
    status, body = site.api.act(999, "acknowledge")
    assert (status, body["error"]) == (404, "not_found")
    metrics = site.gw.metrics()
    for result, n in (("unauthorized", 2), ("malformed", 7), ("replayed", 2), ("applied", 1),
                      ("retried", 1), ("not_found", 1)):
        assert metrics['vigil_gateway_api_requests_total{result="%s"}' % result] == n
    assert TOKEN not in site.gw.log()


def test_kill_during_forwarding_loses_nothing_and_duplicates_nothing(site, backend, mosquitto,
                                                                      devices):
    backend.fail = True                      # the backend is down
    site.gw.start()
    device = devices(mosquitto.port, DEV, KEY, prefix=site.prefix, client_id=site.prefix)
    counters = []
    for kind in (p.SOS, p.FALL, p.DURESS, p.SOS, p.NO_MOTION):
        c = device.next_counter()
        device.publish(p.encode(p.Alarm(DEV, c, kind), device.key))
        counters.append(c)
    device.wait_acked(counters)
    device.publish(device.alarm(p.DOUBLE_TAP, ref=counters[0]))
    wait_for(lambda: site.gw.metrics().get(
        'vigil_gateway_forward_attempts_total{destination="webhook",result="failed"}', 0) >= 6,
        what="failed attempts")
    backend.fail = False                     # back, while the gateway dies mid-forwarding
    site.gw.kill()
    site.gw.start()
    expected = {webhook.idempotency_key(DEV, c, "raised") for c in counters}
    expected.add(webhook.idempotency_key(DEV, counters[0], "wearer_confirms"))
    wait_for(lambda: {e["idempotency_key"] for e in backend.events} >= expected, 20,
             "every event delivered")
    keys = [e["idempotency_key"] for e in backend.events]
    assert sorted(keys) == sorted(expected)  # once each per idempotency key
    sos_keys = [k for k in keys if k.startswith("%08x-%d-" % (DEV, counters[0]))]
    assert sos_keys == [webhook.idempotency_key(DEV, counters[0], e)
                        for e in ("raised", "wearer_confirms")]   # in order per incident
    wait_for(lambda: "PENDING" not in site.gw.cli("outbox").stdout, 10, "outbox drained")
    delivered = set()
    deadline = time.monotonic() + 10
    while delivered != set(counters) and time.monotonic() < deadline:
        try:
            f = device.downlinks.get(timeout=0.1)
        except Exception:
            continue
        if isinstance(f, p.Ack) and f.stage == p.DELIVERED:
            delivered.add(f.ref)
    assert delivered == set(counters)
    assert device.bad_downlinks == []


def test_backend_with_wrong_secret_refuses_and_the_event_waits(tmp_path, mosquitto, devices):
    wrong = ResponderBackend(b"another-secret").start()
    try:
        site = Site(tmp_path, mosquitto.port, wrong)
        site.gw.start()
        device = devices(mosquitto.port, DEV, KEY, prefix=site.prefix, client_id=site.prefix)
        device.publish(device.alarm(p.SOS))
        wait_for(lambda: len(wrong.rejected) >= 2, what="rejected deliveries")
        assert wrong.events == []
        assert "signature does not match" in wrong.rejected[0]
        assert "PENDING" in site.gw.cli("outbox").stdout
        site.gw.stop()
    finally:
        wrong.stop()
