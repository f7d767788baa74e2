# The webhook's times, in one form with the actions API's and the log lines': every time in a
# body a real gateway sends (`vigil gateway run`, a real Mosquitto, the reference backend
# checking signatures) is RFC 3339 in UTC with "Z" and milliseconds, as webhook-schema.json's
# $defs/time states; an audit entry's time in the webhook is the actions API's /v2/ time of the
# same entry cut to the millisecond; the signature's t stays unix seconds (part of the signing
# scheme) and is the body's sent_at in whole seconds. The signing rules are pinned by a vector
# computed outside Vigil (openssl dgst -sha256 -hmac).
import calendar
import json
import os
import re
import sys
import time
import uuid

import jsonschema

import vigil_protocol as p
from vigil_gateway import rfc3339, webhook
from vigil_responder import ActionsClient, ResponderBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import Device, GatewayProcess, key_for, write_secret  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCHEMA = json.load(open(os.path.join(ROOT, "gateway", "webhook-schema.json")))
SECRET = b"webhook-secret-for-times-0123456789"
TOKEN = "responder-token-times-0123456789ab"
DEV = 0x00C0FFEF
KEY = key_for(DEV)
FORM = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$")


def _times(body):
    """Every time field of a webhook body: (where, value)."""
    found = [("sent_at", body["sent_at"])]
    found += [("incident." + k, body["incident"][k])
              for k in ("opened_at", "updated_at", "raised_at")]
    location = body.get("location") or {}
    if "at" in location:
        found.append(("location.at", location["at"]))
    if (location.get("fix") or {}).get("at") is not None:
        found.append(("location.fix.at", location["fix"]["at"]))
    found += [("audit[%d].at" % i, a["at"]) for i, a in enumerate(body["audit"])]
    return found


def test_the_signing_rules_match_a_vector_made_outside_vigil():
    # printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac backend-shared-secret
    mac = "719cead62450fd525be2396fefee45afca05e2ac217e50b26e552db2d4c2b224"
    assert webhook.sign(b"backend-shared-secret", b'{"a":1}', 1700000000) == \
        "t=1700000000,v1=" + mac
    # t is whole seconds: a fraction is dropped, never rounded up past the moment signed
    assert webhook.sign(b"backend-shared-secret", b'{"a":1}', 1700000000.999) == \
        "t=1700000000,v1=" + mac
    assert webhook.verify(b"backend-shared-secret", "t=1700000000,v1=" + mac, b'{"a":1}',
                          now=1700000000 + webhook.TOLERANCE_S) == 1700000000


def test_a_moment_reads_the_same_in_the_webhook_as_in_the_api_and_the_logs():
    # 1796142317.4729996 is .472999... as a float: cut at the millisecond from the float it
    # read .472 here while the API and the logs (microseconds, rounded) said .473000
    for t in (1796142317.4729996, 1700000000.0, 1700000000.9999996, 1700000000.0005):
        assert webhook._iso(t) == rfc3339.format(t)[:23] + "Z"
        assert FORM.match(webhook._iso(t))
    for _ in range(20000):
        t = time.time()
        assert webhook._iso(t) == rfc3339.format(t)[:23] + "Z"
    assert webhook._iso(1700000000.25) == "2023-11-14T22:13:20.250Z"


class _Recording(ResponderBackend):
    """The reference backend, keeping each accepted request's signature header and body."""

    def __init__(self, secret):
        ResponderBackend.__init__(self, secret)
        self.requests = []

    def _receive(self, headers, body):
        status = ResponderBackend._receive(self, headers, body)
        if status == 200:
            with self.lock:
                self.requests.append((headers.get(webhook.SIGNATURE_HEADER), body))
        return status


def test_every_time_a_real_gateway_sends_is_rfc3339_utc(tmp_path, mosquitto):
    backend = _Recording(SECRET).start()
    write_secret(tmp_path / "secret", SECRET)
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    prefix = "times-" + uuid.uuid4().hex[:8]
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, mqtt={"prefix": prefix},
                        forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
                        **{"forward.webhook": {"url": backend.url,
                                               "secret_file": str(tmp_path / "secret")},
                           "actions": {"tokens_file": str(tmp_path / "tokens")}})
    gw.add_device(DEV, KEY)
    device = None
    try:
        gw.start()
        device = Device(mosquitto.port, DEV, KEY, prefix=prefix, client_id=prefix)
        sos = device.next_counter()
        device.publish(p.encode(p.Alarm(DEV, sos, p.SOS, location=(515007000, -1246000, 9)),
                                device.key))
        backend.wait_for(lambda e: e["event"] == "raised")
        incident = next(i for i in gw.incidents() if i["counter"] == sos)["id"]
        api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN, version="v2")
        assert api.act(incident, "prompt_double_tap")[0] == 200
        device.publish(device.alarm(p.DOUBLE_TAP, ref=sos))
        backend.wait_for(lambda e: e["event"] == "wearer_confirms")
        assert api.act(incident, "resolve")[0] == 200
        resolved = backend.wait_for(lambda e: e["event"] == "resolved")
        status, shown = api.incident(incident)
        assert status == 200
    finally:
        if device is not None:
            device.close()
        gw.stop()
        backend.stop()
    assert backend.rejected == []
    assert [e["event"] for e in backend.events] == ["raised", "wearer_confirms", "resolved"]
    checked = set()
    for header, raw in backend.requests:
        body = json.loads(raw)
        jsonschema.validate(body, SCHEMA, format_checker=jsonschema.FormatChecker())
        for where, value in _times(body):
            assert isinstance(value, str) and FORM.match(value), (where, value)
            rfc3339.parse(value)  # a real date and time
            checked.add(where.split("[")[0])
        # the signature checks out, and its t is sent_at in whole seconds
        t = webhook.verify(SECRET, header, raw)
        assert header.startswith("t=%d,v1=" % t)
        assert t == calendar.timegm(time.strptime(body["sent_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert {"sent_at", "incident.opened_at", "incident.updated_at", "incident.raised_at",
            "location.at", "audit"} <= checked
    # the audit's times in the last webhook are the API's (/v2/, microseconds) to the ms
    api_times = {(a["event"]): a["at"] for a in shown["audit"]}
    for entry in resolved["audit"]:
        assert entry["at"] == api_times[entry["event"]][:23] + "Z", entry
    assert [a["event"] for a in resolved["audit"]] == [a["event"] for a in shown["audit"]]
