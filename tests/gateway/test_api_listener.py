# The responder actions API on a listener of its own, over TLS ([actions] host, port,
# cert_file, key_file), for a backend elsewhere; /metrics and /healthz stay on the local
# listener, and the API is not there. An API reachable from the network without TLS is refused.
import json
import os
import ssl
import time
import uuid

import httpx
import pytest

import vigil_protocol as p
from gateway_harness import key_for, write_secret
from tls_ca import make_ca
from vigil_gateway import actions, rfc3339
from vigil_tools.broker import free_port

A = 0x0000000A
TOKEN = "api-listener-token-0123456789"


def _client(ca):
    return httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=10,
                        headers={"Authorization": "Bearer %s" % TOKEN})


def test_the_api_is_served_over_tls_on_its_own_listener(mosquitto, gateway_factory, devices,
                                                         tmp_path):
    tls = make_ca(tmp_path / "pki")
    os.chmod(tls["keyfile"], 0o600)  # the gateway refuses a private key others can read
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    api_port = free_port()
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "api-tls"},
                         actions={"tokens_file": str(tmp_path / "tokens"), "host": "127.0.0.1",
                                  "port": api_port, "cert_file": tls["certfile"],
                                  "key_file": tls["keyfile"]})
    gw.add_device(A, key_for(A))
    gw.start()
    a = devices(mosquitto.port, A, key_for(A), prefix="api-tls")
    a.publish(a.alarm(p.SOS))
    a.wait_acked([1])
    incident = gw.incidents()[0]["id"]
    base = "https://127.0.0.1:%d" % api_port
    with _client(tls["cafile"]) as client:
        reply = client.post("%s/v1/incidents/%d/actions" % (base, incident),
                            json={"action": "acknowledge", "request_id": uuid.uuid4().hex,
                                  "sent_at": time.time()})
        assert reply.status_code == 200 and reply.json()["effect"] == "applied"
        assert client.get("%s/v1/incidents/%d" % (base, incident)).json()["state"] == "open"
        # The local pages are not on the API's listener.
        assert client.get(base + "/metrics").status_code == 404
    # Plain HTTP to the API's port gets no answer; a client that does not know the CA refuses.
    with pytest.raises(httpx.HTTPError):
        httpx.get("http://127.0.0.1:%d/v1/incidents/%d" % (api_port, incident), timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/v1/incidents/1", timeout=5)
    # The local listener: metrics and health, no API.
    assert gw.get("/healthz")[0] == 200
    assert gw.get("/v1/incidents/%d" % incident)[0] == 404
    assert gw.metrics()['vigil_gateway_api_requests_total{result="applied"}'] == 1


@pytest.mark.parametrize("actions,line", [
    ({"host": "0.0.0.0"}, "actions.cert_file: the actions API on 0.0.0.0 is reachable from the "
     "network: give it TLS (cert_file and key_file)"),
    ({"host": "127.0.0.1", "cert_file": "missing.pem", "key_file": "missing.key"},
     "actions.cert_file: no such file: {dir}/missing.pem"),
    ({"host": "127.0.0.1", "cert_file": "cert.pem"},
     "actions.key_file: TLS for the API needs both cert_file and key_file"),
    ({"host": "127.0.0.1", "cert_file": "pki/server.pem", "key_file": "pki/server.key"},
     "actions.key_file: refusing {dir}/pki/server.key: others can read it; it must belong to "
     "this user and be readable by nobody else (chmod 600 {dir}/pki/server.key)"),
], ids=["network-without-tls", "missing-certificate", "certificate-without-key",
        "key-others-can-read"])
def test_an_api_listener_that_cannot_be_safe_stops_the_gateway(gateway_factory, tmp_path,
                                                               actions, line):
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    (tmp_path / "gateway0").mkdir()
    make_ca(tmp_path / "gateway0" / "pki")  # its key 0644, as written
    gw = gateway_factory(free_port(), actions=dict(actions, port=free_port(),
                                                   tokens_file=str(tmp_path / "tokens")))
    result = gw.cli("run", check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "vigil: " + line.format(dir=gw.dir)
    assert "Traceback" not in result.stderr


def test_a_retried_request_gets_its_first_answer_and_another_body_is_refused(
        mosquitto, gateway_factory, devices, tmp_path):
    # A backend that timed out sends the same request again, even past the freshness window
    # (tolerance_s 1 here), even after a gateway restart: the first answer, no second effect.
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "api-retry"},
                         actions={"tokens_file": str(tmp_path / "tokens"), "tolerance_s": 1})
    gw.add_device(A, key_for(A))
    gw.start()
    a = devices(mosquitto.port, A, key_for(A), prefix="api-retry")
    a.publish(a.alarm(p.SOS))
    a.wait_acked([1])
    incident = gw.incidents()[0]["id"]
    url = "http://127.0.0.1:%d/v1/incidents/%d/actions" % (gw.http_port, incident)
    request = {"action": "prompt_double_tap", "request_id": "retry-%s" % uuid.uuid4().hex[:8],
               "sent_at": time.time()}
    headers = {"Authorization": "Bearer %s" % TOKEN}
    first = httpx.post(url, json=request, headers=headers, timeout=10)
    assert first.status_code == 200 and first.json()["effect"] == "applied"
    time.sleep(1.5)  # past tolerance_s: a new request with this sent_at would be stale
    gw.stop()
    gw.start()
    again = httpx.post(url, json=request, headers=headers, timeout=10)
    assert (again.status_code, again.json()) == (200, first.json())
    stale = httpx.post(url, json=dict(request, request_id="fresh-%s" % uuid.uuid4().hex[:8]),
                       headers=headers, timeout=10)
    assert (stale.status_code, stale.json()["error"]) == (409, "replayed")
    other = httpx.post(url, json=dict(request, action="resolve"), headers=headers, timeout=10)
    assert other.status_code == 409
    assert "used already, for another request" in other.json()["message"]
    # One prompt sent, one audit entry.
    audit = [e["event"] for e in gw.incidents()[0]["audit"]]
    assert audit.count("prompt_double_tap") == 1
    assert gw.metrics()['vigil_gateway_api_requests_total{result="retried"}'] == 1


def test_a_request_id_of_65_characters_or_a_body_not_sent_as_json_is_malformed(
        mosquitto, gateway_factory, tmp_path):
    # gateway/openapi.json: a request_id is 8 to 64 characters, a POST is application/json.
    # Both are checked before the incident is looked up: a request that passes them asks for
    # an incident this gateway does not have (404).
    import json

    from vigil_gateway import actions, rfc3339

    spec = json.load(open(os.path.join(os.path.dirname(__file__), "..", "..", "gateway",
                                       "openapi.json")))
    schema = spec["components"]["schemas"]["ActionRequest"]["properties"]["request_id"]
    assert schema["pattern"] == actions._REQUEST_ID.pattern == "^[A-Za-z0-9._:-]{8,64}$"
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "api-ids"},
                         actions={"tokens_file": str(tmp_path / "tokens")})
    gw.start()
    url = "http://127.0.0.1:%d/v2/incidents/999/actions" % gw.http_port
    headers = {"Authorization": "Bearer %s" % TOKEN}

    def post(request_id, **kwargs):
        body = {"action": "acknowledge", "request_id": request_id,
                "sent_at": rfc3339.format(time.time())}
        if "content" in kwargs:
            return httpx.post(url, content=json.dumps(body), headers=dict(
                headers, **kwargs.pop("content")), timeout=10)
        return httpx.post(url, json=body, headers=headers, timeout=10)

    for request_id, status in [("x" * 65, 400), ("x" * 7, 400), ("x" * 64, 404),
                               ("x" * 8, 404)]:
        reply = post(request_id)
        assert reply.status_code == status, (len(request_id), reply.text)
        if status == 400:
            assert reply.json() == {"error": "malformed", "message": "request_id must be 8-64 "
                                    "characters of A-Z a-z 0-9 . _ : -"}
        else:
            assert reply.json()["error"] == "not_found"
    plain = post("y" * 16, content={"Content-Type": "text/plain"})
    assert (plain.status_code, plain.json()["message"]) == (
        400, "Content-Type must be application/json")
