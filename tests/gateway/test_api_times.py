# One timestamp format, RFC 3339 in UTC with "Z" (rfc3339.py), in the gateway's logs and in the
# actions API from /v2/ on; /v1/ (unix seconds) is kept, deprecated, for one release. The
# replies match gateway/openapi.json for their version.
import json
import os
import re
import time
import uuid

import httpx
import jsonschema
import pytest

import vigil_protocol as p
from gateway_harness import key_for, write_secret
from vigil_gateway import rfc3339

A = 0x0000000A
TOKEN = "api-times-token-0123456789"
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
OPENAPI = json.load(open(os.path.join(ROOT, "gateway", "openapi.json")))
TIME = re.compile(OPENAPI["components"]["schemas"]["Time"]["pattern"])


def _check(path, method, status, body):
    """The reply matches the OpenAPI document's schema for that operation and status."""
    response = OPENAPI["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    jsonschema.validate(body, {"$ref": "#/$defs/root", "$defs": {"root": schema},
                               "components": OPENAPI["components"]})


def test_rfc3339_is_written_in_utc_with_z_and_read_only_so():
    now = time.time()
    text = rfc3339.format(now)
    assert TIME.match(text) and len(text) == len("2026-12-01T15:48:27.123456Z")
    assert abs(rfc3339.parse(text) - now) < 1e-6
    assert rfc3339.format(1796140107.25) == "2026-12-01T15:48:27.250000Z"
    assert rfc3339.parse("2026-12-01T15:48:27Z") == 1796140107.0
    assert rfc3339.parse("2026-12-01t15:48:27.5z") == 1796140107.5  # RFC 3339 allows t and z
    for bad in ("2026-12-01T15:48:27+00:00", "2026-12-01T16:48:27+01:00",
                "2026-12-01 15:48:27Z", "2026-02-30T00:00:00Z", "2026-12-01T15:48:61Z",
                "1796140107", 1796140107, None, "", "2026-12-01T15:48:27.Z"):
        with pytest.raises(ValueError):
            rfc3339.parse(bad)


@pytest.fixture
def site(mosquitto, gateway_factory, devices, tmp_path):
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "api-times"},
                         actions={"tokens_file": str(tmp_path / "tokens")})
    gw.add_device(A, key_for(A))
    gw.start()
    a = devices(mosquitto.port, A, key_for(A), prefix="api-times")
    a.publish(a.alarm(p.SOS))
    a.wait_acked([1])
    with httpx.Client(base_url="http://127.0.0.1:%d" % gw.http_port, timeout=10,
                      headers={"Authorization": "Bearer %s" % TOKEN}) as client:
        yield gw, client, gw.incidents()[0]["id"]


def _act(client, version, incident, sent_at, action="acknowledge"):
    return client.post("/%s/incidents/%d/actions" % (version, incident),
                       json={"action": action, "request_id": uuid.uuid4().hex,
                             "sent_at": sent_at})


def test_v2_takes_and_gives_rfc3339_times_and_v1_keeps_unix_seconds(site):
    gw, client, incident = site
    reply = _act(client, "v2", incident, rfc3339.format(time.time()))
    assert reply.status_code == 200 and reply.json()["effect"] == "applied"
    _check("/v2/incidents/{incident_id}/actions", "post", 200, reply.json())
    # freshness is judged on the time it names
    stale = _act(client, "v2", incident, rfc3339.format(time.time() - 3600), "resolve")
    assert (stale.status_code, stale.json()["error"]) == (409, "replayed")
    # v2 refuses the old form and an offset, naming the form it wants
    for sent_at in (time.time(), "2026-12-01T15:48:27+00:00"):
        refused = _act(client, "v2", incident, sent_at, "resolve")
        assert (refused.status_code, refused.json()["error"]) == (400, "malformed")
        assert refused.json()["message"].startswith("sent_at must be an RFC 3339 time in UTC")
        _check("/v2/incidents/{incident_id}/actions", "post", 400, refused.json())
    # v1, deprecated, as before: unix seconds in, unix seconds out; an RFC 3339 string refused
    assert _act(client, "v1", incident, rfc3339.format(time.time()), "resolve").json()[
        "error"] == "malformed"
    old = _act(client, "v1", incident, time.time(), "help_dispatched")
    assert old.status_code == 200 and old.json()["effect"] == "applied"
    _check("/v1/incidents/{incident_id}/actions", "post", 200, old.json())
    v2, v1 = (client.get("/%s/incidents/%d" % (v, incident)).json() for v in ("v2", "v1"))
    _check("/v2/incidents/{incident_id}", "get", 200, v2)
    _check("/v1/incidents/{incident_id}", "get", 200, v1)
    assert [e["event"] for e in v2["audit"]] == ["raised", "acknowledged", "help_dispatched"]
    for new, same in zip(v2["audit"], v1["audit"]):
        assert TIME.match(new["at"]) and new["at"].endswith("Z")
        assert isinstance(same["at"], float)
        assert abs(rfc3339.parse(new["at"]) - same["at"]) < 1e-5  # the same moment
    with pytest.raises(jsonschema.ValidationError):  # the schemas tell the versions apart
        _check("/v2/incidents/{incident_id}", "get", 200, v1)


def test_every_log_line_is_stamped_in_rfc3339_utc(site):
    gw, client, incident = site
    _act(client, "v2", incident, rfc3339.format(time.time()))
    started = time.time()
    lines = gw.log_events()
    assert len(lines) >= 3 and any(e["event"] == "api_request" for e in lines)
    for line in lines:
        assert TIME.match(line["ts"]) and line["ts"].endswith("Z"), line
        assert started - 120 < rfc3339.parse(line["ts"]) <= time.time() + 1, line
