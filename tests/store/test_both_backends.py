# The store's contract, written once and run on both backends: a gateway on SQLite
# (service.Gateway) and one on PostgreSQL (service_pg.PostgresGateway), each built as `vigil
# gateway run` builds it (both_backends.py), driven through the gateway's own operations - an
# ingest batch's commit, a supervision check, a forwarding round, the downlink pump, the
# actions API, retention, the operators' `vigil gateway` commands - and read back through the
# stores' own reads. Each test runs twice: [sqlite] on a fresh file, [postgresql] on a fresh
# database of the session's server.
#
# Where the backends legitimately differ, a test checks what both promise, and says where:
#   SQLite keeps each device's replay window, contact, registry row and downlink counter
#   between batches (one process owns the database); PostgreSQL reads them under the
#   device's row lock in every batch and keeps nothing. The cache must never show: a revoke
#   or a new key by the CLI, a lost contact raised by supervision, floors raised by
#   retention, a batch whose COMMIT failed;
#   PostgreSQL compares supervision deadlines and outbox retry times on the database's clock,
#   SQLite on the gateway's: on PostgreSQL the tests let that time really pass (Site.wait);
#   DELIVERED acks and actions take their counter from the ingest's device state on SQLite
#   (pipeline.allocate_downlink), from the device's locked row on PostgreSQL
#   (store_pg.take_downlink_counter): the counters a device is given go up either way;
#   a PostgreSQL worker's operations each have a connection of their own (ingest,
#   supervision, forwarding, the pump, the API), SQLite's share one.
import json
import re

import pytest

import vigil_protocol as p
from both_backends import (BACKENDS, BACKOFF_S, BACKEND_NAME, GRACE_S, POSTGRESQL, SQLITE,
                           Site, ack_of, alarm, checkin, key_for, signed)
from vigil_gateway import rfc3339
from vigil_gateway.beacons import parse_identifier

DEV = 0x00C0FFEE
OTHER = 0x00BEEF01
HALL = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2"
AP = "A4-B1-C2-D3-E4-F5"
LEAD = "B. Lead,+44 1234 567890,supervisor"


@pytest.fixture(params=BACKENDS)
def site(request, tmp_path):
    """A gateway on each backend (a fresh SQLite file; a fresh PostgreSQL database), DEV
    registered by `vigil gateway device add` with its counters starting at 1."""
    url = request.getfixturevalue("pg_store_url") if request.param == POSTGRESQL else None
    made = Site(request.param, tmp_path, url)
    made.add_device(DEV, None, "--counter-floor", "1")
    yield made
    made.stop()


def results(outcomes):
    return [o.reason or o.result for o in outcomes]


def _requests():
    _requests.n += 1
    return "request-%04d" % _requests.n


_requests.n = 0


def act(site, incident_id, action, request_id=None):
    body = json.dumps({"action": action, "request_id": request_id or _requests(),
                       "sent_at": rfc3339.format(site.clock())}).encode()
    return site.api("POST", "/v2/incidents/%d/actions" % incident_id, body)


def test_a_new_alarm_is_stored_once_and_its_copies_are_retransmissions(site):
    first, copy = alarm(DEV, 1), alarm(DEV, 1)
    assert copy.payload == first.payload  # (sealed from the same counter: the same bytes)
    outcomes = site.ingest(first, copy, checkin(DEV, 2))
    assert results(outcomes) == ["new", "retransmission", "new"]
    acks = [ack_of(o) for o in outcomes]
    # each acked RECEIVED with a counter of its own, the copy too, bound to the frame's counter
    assert [(a.stage, a.ref, a.counter) for a in acks] == [
        (p.RECEIVED, 1, 1), (p.RECEIVED, 1, 2), (p.RECEIVED, 2, 3)]
    site.later(1.5)  # (a copy is re-acked at most once per protocol.reack_interval_s)
    later = site.ingest(first)  # the same bytes, a batch later: still a retransmission
    assert results(later) == ["retransmission"] and ack_of(later[0]).counter == 4
    [incident] = site.incidents(DEV)
    assert (incident.counter, incident.kind, incident.state) == (1, "SOS", "open")
    assert site.audit(incident.id) == ["raised"]
    assert site.frame_count(DEV) == 2
    assert site.downlink_counter(DEV) == 4
    assert [(i.incident_id, i.event) for i in site.outbox()] == [(incident.id, "raised")]


def test_frames_the_gateway_refuses_store_nothing_and_get_no_ack(site):
    site.add_device(OTHER)  # no counter floor: its first frame sets it (SPEC section 7)
    assert results(site.ingest(alarm(OTHER, 200))) == ["new"]
    site.add_device(0x00DEAD01)
    assert site.vigil("device", "revoke", "00dead01")[0] == 0
    tampered = alarm(DEV, 5)
    tampered.payload = tampered.payload[:-1] + bytes([tampered.payload[-1] ^ 1])
    outcomes = site.ingest(
        tampered,
        alarm(OTHER, 100),  # below the window and below the history floor: never stored
        signed(p.Alarm(OTHER, 200, p.FALL)),  # its counter, another frame
        alarm(0x00AB0001, 1),  # never registered
        alarm(0x00DEAD01, 1),  # revoked
        signed(p.Alarm(DEV, 6, p.SOS), key=key_for(OTHER)))  # DEV's id, another key
    assert results(outcomes) == ["bad_mac", "stale_counter", "counter_reuse", "unknown_device",
                                 "revoked_device", "bad_mac"]
    assert all(o.downlink is None for o in outcomes)
    assert site.rejections() == {"bad_mac": 2, "stale_counter": 1, "counter_reuse": 1,
                                 "unknown_device": 1, "revoked_device": 1}
    assert [site.frame_count(d) for d in (DEV, OTHER, 0x00DEAD01)] == [0, 1, 0]
    assert [i.counter for i in site.incidents()] == [200]
    assert site.downlink_counter(DEV) == 0 and site.downlink_counter(OTHER) == 1
    # ... and what they tried is still there for the genuine frames
    assert results(site.ingest(alarm(DEV, 5), alarm(OTHER, 150))) == ["new", "new"]


def _decoded(frame, device_id=DEV):
    return p.decode(frame, p.DeviceKey(key_for(device_id)), p.DOWN)


def _counters(site, device_id):
    """The counters of the device's stored downlinks (DELIVERED acks, actions), as signed."""
    key = p.DeviceKey(key_for(device_id))
    return [p.decode(d.frame, key, p.DOWN).counter for d in site.downlinks(device_id)]


def test_downlink_counters_only_go_up_across_acks_delivered_acks_and_actions(site):
    sent = []  # every downlink counter the device was given, in the order it was made
    sent += [ack_of(o).counter for o in site.ingest(alarm(DEV, 1))]
    assert site.forward() == 1  # the raise delivered: a DELIVERED ack made
    [incident] = site.incidents(DEV)
    assert act(site, incident.id, "prompt_double_tap").status == 200
    sent += _counters(site, DEV)
    # a batch whose COMMIT fails: nothing of it acked; the service tries it again, and it is
    # new (not taken for a retransmission of what was rolled back), with fresh counters
    site.fail_next_commit()
    outcomes = site.ingest(alarm(DEV, 2), checkin(DEV, 3))
    assert results(outcomes) == ["new", "new"]
    sent += [ack_of(o).counter for o in outcomes]
    assert site.forward() == 1
    assert act(site, site.incidents(DEV)[1].id, "acknowledge").status == 200
    sent += _counters(site, DEV)[2:]
    # another gateway process on the same store goes on above them
    site.stop()
    site.start()
    sent += [ack_of(o).counter for o in site.ingest(checkin(DEV, 4))]
    assert sent == sorted(set(sent)), sent  # strictly increasing: none given twice
    assert len(sent) == 8 and site.downlink_counter(DEV) == sent[-1]
    assert [i.counter for i in site.incidents(DEV)] == [1, 2] and site.frame_count(DEV) == 4
    stored = site.downlinks(DEV)
    assert [(d.kind, d.ref, d.code) for d in stored] == [
        ("ack", 1, p.DELIVERED), ("action", 1, p.PROMPT_DOUBLE_TAP),
        ("ack", 2, p.DELIVERED), ("action", 2, p.ACKNOWLEDGED)]


def test_a_retransmission_whose_commit_failed_is_acked_when_the_batch_goes_through(site):
    # the re-ack limit counts only acks that went out: a batch of copies rolled back sent
    # none, so its retry must ack them (not count them as suppressed)
    assert results(site.ingest(alarm(DEV, 1))) == ["new"]
    site.fail_next_commit()
    outcomes = site.ingest(alarm(DEV, 1))
    assert results(outcomes) == ["retransmission"] and ack_of(outcomes[0]).ref == 1


def test_the_outbox_keeps_each_incidents_order_and_retries_a_failed_event_after_backoff(site):
    site.ingest(alarm(DEV, 1), alarm(DEV, 2))
    site.ingest(alarm(DEV, 3, p.DOUBLE_TAP, ref=1))
    first, second = [i.id for i in site.incidents(DEV)]
    assert [(i.incident_id, i.event) for i in site.outbox()] == [
        (first, "raised"), (second, "raised"), (first, "wearer_confirms")]
    site.destination.refuse_once.add("%08x-1-raised" % DEV)
    seen = site.destination.seen
    assert site.forward() == 1  # each incident's oldest event: one refused, one taken
    refused = site.mark()
    assert seen == [(first, "raised"), (second, "raised")]
    # the refused one waits its backoff, and the incident's next event waits for it
    assert site.forward() == 0 and len(seen) == 2
    site.wait_until(refused, BACKOFF_S + 0.05)
    assert site.forward() == 1 and seen[2:] == [(first, "raised")]
    assert site.forward() == 1 and seen[3:] == [(first, "wearer_confirms")]
    assert site.forward() == 0 and len(seen) == 4  # a delivered event is never claimed again
    items = site.outbox()
    assert all(i.delivered_at is not None for i in items)
    assert [i.attempts for i in items] == [2, 1, 1]
    # each alarm's raise, once delivered, is DELIVERED to the wearable, once
    assert [(d.ref, d.code) for d in site.downlinks(DEV)] == [(2, p.DELIVERED), (1, p.DELIVERED)]


def test_a_silent_device_loses_contact_once_and_its_next_frame_restores_it(site):
    site.add_device(OTHER)  # registered, never heard: not supervised
    site.add_device(0x00DEAD01)
    # each silent past 1 s + grace: lost (but a device revoked since is not supervised)
    site.ingest(checkin(0x00DEAD01, 1, interval=1))
    assert site.vigil("device", "revoke", "00dead01")[0] == 0
    site.ingest(checkin(DEV, 1, interval=1))
    heard = site.mark()
    site.wait_until(heard, 1.5)  # past its interval, within the grace
    assert site.supervise() == []
    site.wait_until(heard, 1 + GRACE_S + 0.2)
    [(device_id, lost)] = site.supervise()
    assert device_id == DEV and site.lost_contact(DEV) == lost
    assert site.supervise() == []  # one LOST_CONTACT at a time, however long it stays silent
    _, out, _ = site.vigil("device", "list", "--json")
    assert {row["device"]: row["lost_contact"] for row in map(json.loads, out.splitlines())
            } == {"%08x" % DEV: True, "%08x" % OTHER: False, "00dead01": False}
    incident = [i for i in site.incidents(DEV) if i.id == lost][0]
    assert (incident.kind, incident.state, incident.counter) == ("LOST_CONTACT", "open", None)
    # the audit says since when it was silent, and when its deadline was (on PostgreSQL the
    # database clock's, which the test's gateway clock follows to within a second)
    [(_, detail)] = site.audit(lost, details=True)
    since, deadline = map(int, re.fullmatch(
        r"raised; silent since (\d+) \(deadline (\d+)\)", detail).groups())
    assert since == round(heard[0]) and 1 + GRACE_S <= deadline - since <= 2 + GRACE_S
    # its next frame closes it - on SQLite the ingest's cached contact, which supervision made
    # it forget, must know of the incident
    assert results(site.ingest(alarm(DEV, 2, p.LOW_BATTERY))) == ["new"]
    assert site.incidents(DEV)[0].state == "closed"
    assert site.audit(lost) == ["raised", "contact_restored"]
    assert site.lost_contact(DEV) is None
    assert [(i.incident_id, i.event) for i in site.outbox() if i.incident_id == lost] == [
        (lost, "raised"), (lost, "contact_restored")]
    status, out, _ = site.vigil("device", "list", "--json")
    assert status == 0 and not any(json.loads(line)["lost_contact"] for line in
                                   out.splitlines())


def test_the_registry_as_the_cli_changes_it(site):
    assert results(site.ingest(alarm(DEV, 1), alarm(OTHER, 1))) == ["new", "unknown_device"]
    site.add_device(OTHER)  # added while the gateway runs: its next batch serves it
    assert results(site.ingest(alarm(OTHER, 1))) == ["new"]
    status, out, _ = site.vigil("device", "list", "--json")
    assert status == 0 and [json.loads(line)["state"] for line in out.splitlines()] == [
        "active", "active"]
    # the same device added again: left as it is; with another key: refused
    site.add_device(DEV)
    path = site.folder / "other.key"
    path.write_text(key_for(DEV, 2).hex())
    status, _, err = site.vigil("device", "add", "%08x" % DEV, "--key-file", path)
    assert status == 2 and "already registered" in err
    # rotate-key: the next batch verifies with the new key, and signs its ack with it
    status, _, _ = site.vigil("device", "rotate-key", "%08x" % DEV, "--key-file", path)
    assert status == 0
    new_key = key_for(DEV, 2)
    outcomes = site.ingest(alarm(DEV, 2), signed(p.Alarm(DEV, 3, p.SOS), key=new_key))
    assert results(outcomes) == ["bad_mac", "new"]
    assert ack_of(outcomes[1], new_key).ref == 3
    # revoke: the next batch refuses it (SQLite's gateway caches registry rows, and drops them
    # when another connection - the CLI's - commits; PostgreSQL reads the row every batch)
    assert site.vigil("device", "revoke", "%08x" % DEV)[0] == 0
    assert results(site.ingest(signed(p.Alarm(DEV, 4, p.SOS), key=new_key))) == [
        "revoked_device"]
    assert site.frame_count(DEV) == 2 and len(site.incidents(DEV)) == 2  # kept


def test_incidents_take_responder_actions_with_their_audit_trail(site):
    site.ingest(alarm(DEV, 1))
    [incident] = site.incidents(DEV)
    request = "ack-request-1"
    applied = act(site, incident.id, "acknowledge", request)
    assert (applied.status, applied.body["effect"], applied.body["state"]) == (
        200, "applied", "open")
    again = act(site, incident.id, "acknowledge", request)  # a retry: its first answer
    assert (again.status, again.result, again.body["downlink"]) == (
        200, "retried", applied.body["downlink"])
    assert act(site, incident.id, "acknowledge").body["effect"] == "none"  # once per action
    resolved = act(site, incident.id, "resolve")
    assert (resolved.status, resolved.body["state"]) == (200, "closed")
    refused = act(site, incident.id, "help_dispatched")
    assert refused.status == 409 and refused.result == "refused"
    shown = site.api("GET", "/v2/incidents/%d" % incident.id)
    assert shown.status == 200 and shown.body["state"] == "closed"
    assert [a["event"] for a in shown.body["audit"]] == ["raised", "acknowledged", "resolved"]
    assert "by %s, request %s" % (BACKEND_NAME, request) in shown.body["audit"][1]["detail"]
    assert site.audit(incident.id) == ["raised", "acknowledged", "resolved"]
    status, out, _ = site.vigil("incidents", "--audit", "--json")
    [listed] = map(json.loads, out.splitlines())
    assert status == 0 and (listed["state"], [a["event"] for a in listed["audit"]]) == (
        "closed", ["raised", "acknowledged", "resolved"])
    assert [i.event for i in site.outbox()] == ["raised", "resolved"]  # what is forwarded
    # the wearer asking for help reopens it, whatever a responder did
    site.ingest(alarm(DEV, 2, p.DOUBLE_TAP, ref=1))
    assert site.incidents(DEV)[0].state == "needs_help"
    # a duress alarm's wearer is never prompted
    site.ingest(alarm(DEV, 3, p.DURESS))
    duress = site.incidents(DEV)[1]
    assert act(site, duress.id, "prompt_double_tap").status == 409
    assert site.audit(duress.id) == ["raised"]


def _short_id(kind, identifier):
    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


def test_wearer_profiles_and_beacons_set_by_the_cli_are_in_what_is_forwarded(site):
    assert site.vigil("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--contact",
                      LEAD, "--notes", "diabetic", "--zone", "7")[0] == 0
    assert site.vigil("beacon", "add", "ble", HALL, "--place", "Main hall", "--floor", "G",
                      "--room", "Reception")[0] == 0
    status, out, _ = site.vigil("wearer", "list", "--json")
    assert status == 0 and [(w["name"], w["zone"], len(w["contacts"])) for w in map(
        json.loads, out.splitlines())] == [("A. Worker", 7, 1)]
    status, out, _ = site.vigil("beacon", "list", "--json")
    assert [(b["place"], b["short_id"]) for b in map(json.loads, out.splitlines())] == [
        ("Main hall", _short_id("ble", HALL).hex())]
    heard = (2, ((b"\xb0\x00\x00\x01", -40), (_short_id("ble", HALL), -58)))
    site.ingest(alarm(DEV, 1, beacons=heard))
    [raised] = site.outbox()
    snapshot = raised.snapshot
    assert snapshot["wearer"] == {"name": "A. Worker", "notes": "diabetic", "contacts": [
        {"name": "B. Lead", "phone": "+44 1234 567890", "relation": "supervisor"}]}
    assert snapshot["zone"] == 7
    location = snapshot["location"]
    assert (location["source"], location["place"], location["floor"], location["room"]) == (
        "ble", "Main hall", "G", "Reception")
    # a check-in heard elsewhere while the alarm is open: its new place is forwarded
    assert site.vigil("beacon", "add", "wifi", AP, "--place", "Plant room")[0] == 0
    site.ingest(signed(p.CheckIn(DEV, 2, wifi=(1, ((_short_id("wifi", AP), -50),)))))
    moved = site.outbox()[1]
    assert (moved.event, moved.snapshot["location"]["place"],
            moved.snapshot["location"]["source"]) == ("location_updated", "Plant room", "wifi")
    # an operator's change is in the next event queued
    assert site.vigil("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--zone", "8")[0] \
        == 0
    assert site.vigil("beacon", "remove", "ble", HALL)[0] == 0
    site.ingest(alarm(DEV, 3, p.DOUBLE_TAP, ref=1), alarm(DEV, 4, beacons=heard))
    confirms, fourth = site.outbox()[2:]
    assert (confirms.event, confirms.snapshot["zone"], confirms.snapshot["wearer"]["contacts"]
            ) == ("wearer_confirms", 8, [])
    assert fourth.snapshot["location"] is None  # the beacon's place is gone: nothing known


def test_a_stored_downlink_goes_out_again_until_its_receipt_comes(site):
    site.ingest(alarm(DEV, 1))
    site.forward()  # the DELIVERED ack, stored
    [(topic, frame)] = site.pump()
    delivered = _decoded(frame)
    assert (topic, delivered.stage, delivered.ref) == ("vigil/down/%08x" % DEV, p.DELIVERED, 1)
    assert site.pump() == []  # the broker took it: sent
    site.later(11)  # past its first wait (downlinks.REOFFER_S), heard from with no receipt
    assert [o.reoffered for o in site.ingest(checkin(DEV, 2))] == [1]
    assert site.pump() == [(topic, frame)]  # the same bytes: the same counter
    # the wearable's receipt confirms it (no ack for a receipt): never offered again
    receipt = site.ingest(signed(p.Receipt(DEV, 3, delivered.counter)))
    assert results(receipt) == ["new"] and receipt[0].downlink is None
    [stored] = site.downlinks(DEV)
    assert stored.confirmed_at is not None
    site.later(4000)
    assert [o.reoffered for o in site.ingest(checkin(DEV, 4))] == [0]
    assert site.pump() == []


def test_a_double_tap_before_its_alarm_waits_for_it_or_raises_an_incident_of_its_own(site):
    # the tap for alarm 1 comes first: kept, and applied when the alarm arrives
    site.ingest(alarm(DEV, 2, p.DOUBLE_TAP, ref=1))
    assert site.incidents(DEV) == []
    site.ingest(alarm(DEV, 1))
    [first] = site.incidents(DEV)
    assert first.state == "needs_help" and site.audit(first.id) == ["raised", "wearer_confirms"]
    # the tap for alarm 3, which never comes: after the wait it raises an SOS of its own
    site.ingest(alarm(DEV, 4, p.DOUBLE_TAP, ref=3))
    site.later(5)
    site.promote_early_taps()
    assert len(site.incidents(DEV)) == 1  # not yet (incidents.double_tap_wait_s: 15 s)
    site.later(11)
    site.promote_early_taps()
    second = site.incidents(DEV)[1]
    assert (second.counter, second.kind, second.state) == (3, "SOS", "needs_help")
    site.promote_early_taps()  # once
    # the alarm, arriving at last, joins it
    site.ingest(alarm(DEV, 3))
    assert len(site.incidents(DEV)) == 2
    assert site.audit(second.id) == ["raised", "wearer_confirms", "alarm_arrived"]


def test_a_stored_downlink_fallen_below_the_wearables_window_is_signed_afresh(site):
    sent = [ack_of(o).counter for o in site.ingest(alarm(DEV, 1))]
    site.forward()
    [(_, first)] = site.pump()
    sent.append(_decoded(first).counter)
    # twenty frames acked meanwhile: its counter is now 20 below the device's latest
    sent += [ack_of(o).counter for o in site.ingest(*[checkin(DEV, c) for c in range(2, 22)])]
    site.later(11)
    outcome = site.ingest(checkin(DEV, 22))
    assert outcome[0].reoffered == 1
    [(_, again)] = site.pump()
    resigned = _decoded(again)
    assert (resigned.stage, resigned.ref) == (p.DELIVERED, 1)
    sent += [resigned.counter, ack_of(outcome[0]).counter]
    assert sent == sorted(set(sent)) and resigned.counter > sent[-3]  # a fresh counter
    # a receipt for its first signature (sent before the wearable had the new one) confirms it
    site.ingest(signed(p.Receipt(DEV, 23, _decoded(first).counter)))
    [stored] = site.downlinks(DEV)
    assert stored.confirmed_at is not None and stored.frame == again


def test_retention_deletes_old_frames_and_their_copies_are_then_stale(site):
    old = [alarm(DEV, 1)] + [checkin(DEV, c) for c in range(2, 71)]
    site.ingest(*old)
    site.later(31 * 86400)  # past [store] retain_days (30)
    site.ingest(checkin(DEV, 71))
    site.prune()
    assert site.frame_count(DEV) == 64  # the device's window kept
    # a copy of a deleted frame is refused as stale, never taken for a late new one; one
    # still kept is a retransmission
    assert results(site.ingest(old[0], old[6], old[7])) == [
        "stale_counter", "stale_counter", "retransmission"]
    assert [i.counter for i in site.incidents(DEV)] == [1]  # incidents are the record


def test_a_v1_unit_is_answered_in_v1_until_a_v2_frame_of_its_verifies(site):
    site.add_device(OTHER, None, "--protocol", "1", "--counter-floor", "1")
    old = site.ingest(signed(p.Alarm(OTHER, 1, p.SOS), version=1))
    assert results(old) == ["new"] and p.peek(old[0].downlink[1]).version == 1
    site.forward()
    assert [p.peek(d.frame).version for d in site.downlinks(OTHER)] == [1]  # DELIVERED in v1
    # re-flashed: its v2 frame raises the device to v2 for good; a v1 frame left in its outbox
    # is still acked in v1 (the version it can read), every stored downlink is sealed in v2
    mixed = site.ingest(alarm(OTHER, 2), signed(p.Alarm(OTHER, 3, p.FALL), version=1))
    assert [p.peek(o.downlink[1]).version for o in mixed] == [2, 1]
    site.stop()
    site.start()
    site.forward()
    assert [p.peek(d.frame).version for d in site.downlinks(OTHER)] == [1, 2, 2]


def test_dc09_sequence_numbers_and_clock_offset_survive_a_restart(site):
    state = site.dc09_state()
    # a row's number is taken at its first attempt and kept on every retransmission
    assert [state.sequence_for(10), state.sequence_for(11), state.sequence_for(10)] == [1, 2, 1]
    assert state.next_sequence() == 3  # a NULL link test's
    state.set_clock_offset(-2.5)  # the receiving centre's NAK said its clock is behind
    assert site.vigil("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--zone", "9",
                      "--dc09-account", "5a17")[0] == 0
    site.stop()
    site.start()
    state = site.dc09_state()
    assert [state.sequence_for(10), state.sequence_for(12)] == [1, 4]
    assert state.clock_offset == -2.5
    assert (state.wearer(DEV).zone, state.wearer(DEV).dc09_account) == (9, "5A17")
    site.vigil("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--zone", "10")
    assert state.wearer(DEV).zone == 10  # read for each message, as last committed


def _record(site):
    """What the gateway recorded of its incidents, as responders get it: each incident, its
    audit trail, each event queued for forwarding with its snapshot. (A LOST_CONTACT's
    deadline is the database clock's on PostgreSQL: left out.)"""
    record = []
    for incident in site.incidents():
        record.append(tuple(incident))
        record += [(incident.id,) + entry for entry in site.audit(incident.id, details=True)]
    for item in site.outbox():
        record.append((item.id, item.incident_id, item.key, item.event,
                       json.dumps(item.snapshot, sort_keys=True)))
    return [re.sub(r"\(deadline \d+\)", "(deadline)", repr(entry)) for entry in record]


def _incidents_scenario(site):
    # a lost contact and its end, a late alarm held back by it, a double tap, a duress alarm
    # with a fix, a location update, responders' actions (one refused, one silent), an early
    # tap promoted and its alarm arriving
    site.add_device(DEV, None, "--counter-floor", "1")
    site.add_device(OTHER)
    site.vigil("wearer", "set", "%08x" % DEV, "--name", "A. Worker", "--contact", LEAD,
               "--zone", "7")
    site.ingest(checkin(DEV, 1, interval=1), alarm(OTHER, 50))
    site.wait_until(site.mark(), 1 + GRACE_S + 0.3)
    site.supervise()  # DEV lost (OTHER checks in every 300 s)
    site.later(5)
    site.ingest(alarm(DEV, 2, age=40), alarm(DEV, 4, p.DOUBLE_TAP, ref=2), alarm(OTHER, 20))
    site.later(1)
    site.ingest(alarm(DEV, 3, p.DURESS, location=(515000000, -1270000, 12)))
    site.ingest(signed(p.CheckIn(DEV, 5, location=(515100000, -1270000, 12, 3))))
    site.forward()
    site.forward()
    act(site, 3, "acknowledge")
    act(site, 3, "resolve")
    act(site, 5, "prompt_double_tap")
    act(site, 5, "help_dispatched")
    site.later(20)
    site.ingest(alarm(DEV, 7, p.DOUBLE_TAP, ref=6))
    site.later(16)
    site.promote_early_taps()
    site.ingest(alarm(DEV, 6, p.FALL))
    return _record(site)


def _downlinks_scenario(site):
    # acks of copies, a v1 unit, DELIVERED acks and actions published, a re-offer signed
    # afresh, receipts for a first and a second signature, retention and a stale copy
    record = []

    def ingest(*messages):
        record.extend((o.result, o.reason, o.counter, o.downlink, o.reoffered)
                      for o in site.ingest(*messages))

    site.add_device(DEV, None, "--counter-floor", "1")
    site.add_device(OTHER, None, "--protocol", "1", "--interval", "60")
    ingest(alarm(DEV, 1), signed(p.Alarm(OTHER, 5, p.SOS), version=1), alarm(DEV, 1))
    site.forward()
    record.append(sorted(site.pump()))
    ingest(*[checkin(DEV, c) for c in range(2, 25)])
    site.later(12)
    ingest(checkin(DEV, 25), alarm(OTHER, 6))
    record.append(sorted(site.pump()))
    act(site, 1, "prompt_double_tap")
    act(site, 2, "acknowledge")
    record.append(sorted(site.pump()))
    ingest(signed(p.Receipt(DEV, 26, 2)), signed(p.Receipt(DEV, 27, 30)))
    site.forward()
    site.later(31 * 86400)
    ingest(checkin(DEV, 100), alarm(DEV, 1))
    site.prune()
    ingest(alarm(DEV, 1), checkin(DEV, 30), checkin(DEV, 50))
    for device_id in (DEV, OTHER):
        record += [tuple(d) for d in site.downlinks(device_id)]
        record.append((site.frame_count(device_id), site.downlink_counter(device_id)))
    _, out, _ = site.vigil("device", "list", "--json")
    record += [sorted((k, v) for k, v in json.loads(line).items() if k != "added_at")
               for line in out.splitlines()]  # (added_at: the CLI's clock)
    record += [(i.id, i.event, i.attempts, i.delivered_at is not None) for i in site.outbox()]
    return [repr(entry) for entry in record] + _record(site)


@pytest.mark.parametrize("scenario, size", [(_incidents_scenario, 31),
                                            (_downlinks_scenario, 53)])
def test_one_scenario_leaves_the_same_record_on_both_backends(scenario, size, pg_store_url,
                                                               tmp_path):
    # every incident, audit entry and queued event, every ack and stored downlink (the same
    # counters: the same bytes), as responders and wearables get them
    records = []
    for backend, url in ((SQLITE, None), (POSTGRESQL, pg_store_url)):
        folder = tmp_path / backend
        folder.mkdir()
        site = Site(backend, folder, url)
        site.clock.now = 1_800_000_000.0  # (the records hold the gateway's times)
        _requests.n = 0
        try:
            records.append(scenario(site))
        finally:
            site.stop()
    assert len(records[0]) == size
    assert records[0] == records[1]
