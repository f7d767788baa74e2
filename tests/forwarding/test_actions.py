# The responder actions API without sockets: its rules one by one (actions.py), with a clock the
# test moves. The served API is tested against the real gateway in test_forwarding_e2e.py.
import json

import pytest

import vigil_protocol as p
from forwarding_site import DEV, Site
from vigil_gateway import ConfigError
from vigil_gateway.actions import ActionsApi, read_tokens

TOKENS = {"arc-one": "token-one-0123456789", "arc-two": "token-two-0123456789"}


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    s.api = ActionsApi(s.store, s.pipeline.incidents, s.downlinks, TOKENS, s.clock)
    return s


def act(site, incident, action, token="token-one-0123456789", request_id=None, sent_at=None):
    act.n += 1
    body = json.dumps({"action": action, "request_id": request_id or "req-%06d" % act.n,
                       "sent_at": site.clock.now if sent_at is None else sent_at}).encode()
    return site.api.handle("POST", "/v1/incidents/%d/actions" % incident,
                           {"authorization": "Bearer " + token,
                            "content-type": "application/json"}, body)


act.n = 0


def actions_sent(site):
    return [(f.action, f.ref) for f in site.decoded_downlinks() if isinstance(f, p.Action)]


def test_each_backend_token_works_and_is_named_in_the_audit(site):
    site.alarm(p.SOS)
    assert act(site, 1, "acknowledge").status == 200
    assert act(site, 1, "help_dispatched", token="token-two-0123456789").status == 200
    details = [a.detail for a in site.store.audit(1)]
    assert "by arc-one" in details[1] and "by arc-two" in details[2]
    assert act(site, 1, "resolve", token="token-one-012345678").status == 401  # a prefix


def test_resolve_twice_is_one_effect_and_closed_incidents_take_nothing_else(site):
    sos = site.alarm(p.SOS)
    first = act(site, 1, "resolve")
    again = act(site, 1, "resolve")
    assert (first.body["effect"], again.body["effect"]) == ("applied", "none")
    assert again.body["downlink"] == first.body["downlink"]
    assert actions_sent(site) == [(p.RESOLVED, sos)]
    refused = act(site, 1, "prompt_double_tap")
    assert refused.status == 409 and "closed" in refused.body["message"]
    assert [i.event for i in site.outbox.items()] == ["raised", "resolved"]


def test_lost_contact_cannot_be_prompted_and_sends_nothing(site):
    site.store.conn.execute("BEGIN")
    incident = site.pipeline.incidents.raise_lost_contact(DEV, site.clock.now)
    site.store.conn.execute("COMMIT")
    refused = act(site, incident.id, "prompt_double_tap")
    assert refused.status == 409 and "no alarm" in refused.body["message"]
    ok = act(site, incident.id, "acknowledge")
    assert ok.status == 200 and ok.body["downlink"] is None
    assert actions_sent(site) == []


def test_duress_prompt_refused_others_silent_resolve_sent(site):
    duress = site.alarm(p.DURESS)
    assert act(site, 1, "prompt_double_tap").status == 409
    assert act(site, 1, "acknowledge").body["downlink"] is None
    assert act(site, 1, "help_dispatched").body["downlink"] is None
    assert act(site, 1, "resolve").body["downlink"] is not None
    assert actions_sent(site) == [(p.RESOLVED, duress)]
    events = [a.event for a in site.store.audit(1)]
    assert events == ["raised", "acknowledged", "help_dispatched", "resolved"]


def test_a_refused_request_leaves_no_trace_and_counters_stay_fresh(site):
    site.alarm(p.SOS)
    before = site.store.downlink_counter(DEV)
    assert act(site, 42, "acknowledge").status == 404
    reply = act(site, 1, "prompt_double_tap")
    assert reply.body["downlink"] == before + 1
    site.alarm(p.SOS)  # the pipeline's next RECEIVED ack continues after the action's
    assert site.store.downlink_counter(DEV) == before + 2


def test_clock_skew_and_replays(site):
    site.alarm(p.SOS)
    assert act(site, 1, "acknowledge", sent_at=site.clock.now - 301).body["error"] == "replayed"
    assert act(site, 1, "acknowledge", sent_at=site.clock.now + 301).body["error"] == "replayed"
    assert act(site, 1, "acknowledge", request_id="same-id-1").status == 200
    reply = act(site, 1, "help_dispatched", request_id="same-id-1")
    assert reply.status == 409 and "used already" in reply.body["message"]


def test_routes_and_methods(site):
    site.alarm(p.SOS)
    auth = {"authorization": "Bearer token-one-0123456789"}
    assert site.api.handle("GET", "/v1/incidents/1", auth, b"").status == 200
    assert site.api.handle("DELETE", "/v1/incidents/1", auth, b"").status == 405
    assert site.api.handle("GET", "/v1/incidents/1/actions", auth, b"").status == 405
    assert site.api.handle("GET", "/v1/other", auth, b"").status == 404
    assert site.api.handle("GET", "/v1/incidents/1", {}, b"").status == 401
    reply = site.api.handle("POST", "/v1/incidents/1/actions",
                            dict(auth, **{"content-type": "text/plain"}), b"{}")
    assert reply.status == 400 and "Content-Type" in reply.body["message"]


def test_tokens_file_rules(tmp_path):
    f = tmp_path / "tokens"
    f.write_text("# name token\narc-one token-one-0123456789\n\n")
    f.chmod(0o600)
    assert read_tokens(str(f)) == {"arc-one": "token-one-0123456789"}
    f.write_text("arc-one short\n")
    with pytest.raises(ConfigError, match="actions.tokens_file.*line 1"):
        read_tokens(str(f))
    f.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no token"):
        read_tokens(str(f))
    with pytest.raises(ConfigError, match="cannot read"):
        read_tokens(str(tmp_path / "missing"))
    f.write_text("arc-one token-one-0123456789\n")
    for mode in (0o640, 0o604):
        f.chmod(mode)
        with pytest.raises(ConfigError) as refused:
            read_tokens(str(f))
        assert str(refused.value) == ("actions.tokens_file: refusing %s: others can read it; it "
                                      "must belong to this user and be readable by nobody "
                                      "else (chmod 600 %s)" % (f, f))


@pytest.mark.parametrize("sent_at", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
def test_sent_at_must_be_a_finite_number(site, sent_at):
    site.alarm(p.SOS)
    body = ('{"action": "acknowledge", "request_id": "req-finite-%d", "sent_at": %s}'
            % (len(sent_at), sent_at)).encode()
    reply = site.api.handle("POST", "/v1/incidents/1/actions",
                            {"authorization": "Bearer token-one-0123456789",
                             "content-type": "application/json"}, body)
    assert (reply.status, reply.result) == (400, "malformed")
    assert reply.body["message"] == ("sent_at must be a finite number of unix seconds (not NaN "
                                     "or infinite)")
    assert [a.event for a in site.store.audit(1)] == ["raised"]  # no effect
