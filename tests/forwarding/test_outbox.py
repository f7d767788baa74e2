# The durable outbox and the forwarding loop, with a clock the test moves: backends down for
# minutes then back, gateway restarts, ordering, idempotency, age alerts, DELIVERED downlinks.
import pytest

import vigil_protocol as p
from forwarding_site import DEV, Backend, Site
from vigil_gateway.downlinks import ACK


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def drive(site, backend, seconds, step=1.0):
    """Run forwarding rounds while `seconds` of the test's clock pass."""
    end = site.clock.now + seconds
    while site.clock.now < end:
        site.round(backend)
        site.clock.now += step


def test_backend_down_for_minutes_then_back_delivers_each_event_once_in_order(site):
    backend = Backend()
    sos = site.alarm(p.SOS)
    duress = site.alarm(p.DURESS)
    site.clock.now += 1
    site.alarm(p.DOUBLE_TAP, ref=sos)          # SOS incident: raised, then wearer_confirms
    backend.up = False
    drive(site, backend, 600)                  # ten minutes down
    assert backend.accepted == []
    failures = [a for a in backend.attempts if not a[1]]
    assert 3 <= len(failures) < 60            # backed off, not hammered every second
    backend.up = True
    drive(site, backend, 120)
    keys = backend.accepted
    assert sorted(keys) == sorted(set(keys))   # once each
    assert keys.index("%08x-%d-raised" % (DEV, sos)) < keys.index(
        "%08x-%d-wearer_confirms" % (DEV, sos))
    assert set(keys) == {"%08x-%d-raised" % (DEV, sos), "%08x-%d-raised" % (DEV, duress),
                         "%08x-%d-wearer_confirms" % (DEV, sos)}
    assert site.outbox.items(pending_only=True) == []


def test_later_event_waits_for_the_earlier_one_of_its_incident(site):
    backend = Backend()
    sos = site.alarm(p.SOS)
    site.alarm(p.DOUBLE_TAP, ref=sos)
    first, second = site.outbox.items()
    # the first fails once: the second must not overtake it while the first backs off
    backend.up = False
    site.round(backend)
    backend.up = True
    site.round(backend)
    assert backend.accepted == []
    assert [i.id for i in site.outbox.due("webhook", site.clock.now + 3600)] == [first.id]
    site.clock.now += 3600
    site.round(backend)
    site.round(backend)
    assert backend.accepted == [first.key, second.key]


def test_old_event_alerts_once_and_stays_queued(tmp_path):
    site = Site(tmp_path, max_age_s=30)
    site.alarm(p.SOS)
    site.clock.now += 31
    old = site.outbox.too_old(site.clock.now)
    assert [i.event for i in old] == ["raised"]
    assert site.outbox.too_old(site.clock.now + 100) == []      # one alert per event
    assert len(site.outbox.items(pending_only=True)) == 1       # still queued for replay
    assert site.outbox.overdue_count(site.clock.now) == 1


def test_gateway_restart_between_commit_and_forwarding_loses_nothing(site):
    site.alarm(p.SOS)
    site.alarm(p.FALL)
    site.restart()                              # as after a kill: nothing forwarded yet
    backend = Backend()
    site.round(backend)
    assert len(backend.accepted) == 2


def test_delivered_then_crash_before_marking_resends_the_same_key(site, monkeypatch):
    backend = Backend()
    sos = site.alarm(p.SOS)

    def crash(item, now):
        raise RuntimeError("killed between the 2xx and the commit")

    monkeypatch.setattr(site.outbox, "delivered", crash)
    with pytest.raises(RuntimeError):
        site.round(backend)
    monkeypatch.undo()
    site.restart()
    site.round(backend)
    # sent twice with one idempotency key: the backend sees one event
    assert backend.accepted == ["%08x-%d-raised" % (DEV, sos)] * 2
    assert len(site.downlinks.all()) == 1


def test_delivered_alarm_gets_one_signed_delivered_downlink(tmp_path):
    site = Site(tmp_path, destinations=("webhook", "dc09"))
    hook, arc = Backend("webhook"), Backend("dc09")
    sos = site.alarm(p.SOS)
    last_ack_counter = site.store.downlink_counter(DEV)
    site.round(hook)
    site.round(arc)
    frames = site.decoded_downlinks()
    assert len(frames) == 1                     # once per alarm, whoever accepted first
    ack = frames[0]
    assert isinstance(ack, p.Ack) and ack.stage == p.DELIVERED and ack.ref == sos
    assert ack.counter == last_ack_counter + 1  # a fresh counter, after the RECEIVED ack's
    assert site.store.downlink_counter(DEV) == ack.counter
    # the pipeline's next RECEIVED ack continues after it
    site.alarm(p.SOS)
    assert site.store.downlink_counter(DEV) == ack.counter + 1
    assert site.downlinks.find(DEV, sos, ACK, p.DELIVERED).counter == ack.counter


def test_snapshot_carries_wearer_and_location(site):
    site.wearers.set(DEV, "A. Worker", [{"name": "B. Lead", "phone": "+44 1", "relation": "x"}],
                     "night shift", zone=7)
    site.alarm(p.DURESS, location=(515007000, -1246000, 12))
    item = site.outbox.items()[0]
    snap = item.snapshot
    assert snap["wearer"]["name"] == "A. Worker" and snap["zone"] == 7
    assert snap["location"]["lat"] == pytest.approx(51.5007)
    assert snap["location"]["lon"] == pytest.approx(-0.1246)
    assert snap["incident"]["kind"] == "DURESS"
    assert snap["audit"][0]["event"] == "raised"


def test_a_second_double_tap_is_audited_not_forwarded_again(site):
    sos = site.alarm(p.SOS)
    site.alarm(p.DOUBLE_TAP, ref=sos)
    site.alarm(p.DOUBLE_TAP, ref=sos)
    assert [i.event for i in site.outbox.items()] == ["raised", "wearer_confirms"]


def test_backoff_doubles_with_jitter_up_to_the_max(tmp_path):
    draws = iter([0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    site = Site(tmp_path, rng=lambda: next(draws))
    site.alarm(p.SOS)
    delays = []
    for _ in range(9):
        item = site.outbox.items(pending_only=True)[0]
        delays.append(site.outbox.failed(item, site.clock.now, "down"))
    # step 1, 2, 4, ... capped at 60 s; jitter keeps 50-100 % of the step
    assert delays[:3] == [0.5, 2.0, 3.0]
    assert delays[3:6] == [8.0, 16.0, 32.0]
    assert delays[6:] == [60.0, 60.0, 60.0]
