# The pipeline, incidents and supervision without a broker: batches of messages in, outcomes,
# store contents and acks out, with a clock the test controls.
import sqlite3

import pytest

import vigil_protocol as p
from gateway_harness import key_for
from vigil_gateway import StoreError
from vigil_gateway.db import open_database
from vigil_gateway.metrics import Metrics
from vigil_gateway.pipeline import REASONS, Message, Pipeline
from vigil_gateway.registry import Registry
from vigil_gateway.store import Store
from vigil_gateway.supervision import Supervisor
from vigil_gateway.topics import Topics

DEV = 0x00C0FFEE
KEY = key_for(DEV)
TOPIC = "vigil/up/00c0ffee"


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


class Site:
    """A gateway's state on disk; `restart()` opens it again as a fresh process would."""

    def __init__(self, path):
        self.path = path
        self.clock = Clock()
        self.open()
        self.registry.add(DEV, KEY, interval_s=60)

    def open(self):
        self.conn = open_database(str(self.path))
        self.registry = Registry(self.conn, str(self.path / "keys"), self.clock)
        self.store = Store(self.conn)
        self.metrics = Metrics(REASONS)
        self.pipeline = Pipeline(self.registry, self.store, Topics("vigil"), self.metrics,
                                 self.clock)

    def restart(self):
        self.conn.close()
        self.open()

    def send(self, *frames):
        return self.pipeline.process([Message(TOPIC, f) for f in frames])

    def results(self, *frames):
        return [o.reason or o.result for o in self.send(*frames)]


def alarm(counter, kind=p.SOS, ref=0):
    return p.encode(p.Alarm(DEV, counter, kind, ref=ref), KEY)


def test_acks_are_signed_with_fresh_downlink_counters_that_survive_restart(site):
    first = site.send(alarm(1), alarm(1))
    site.restart()
    second = site.send(alarm(2))
    acks = [p.decode(o.downlink[1], KEY, p.DOWN) for o in first + second]
    assert [(a.ref, a.counter) for a in acks] == [(1, 1), (1, 2), (2, 3)]
    assert all(o.downlink[0] == "vigil/down/00c0ffee" for o in first + second)


def test_the_window_is_rebuilt_from_the_store_after_a_restart(site):
    site.send(*[alarm(c) for c in range(1, 101)])
    site.restart()
    assert site.results(alarm(100), alarm(10), alarm(99, p.FALL), alarm(10, p.FALL),
                        alarm(101)) == ["retransmission", "retransmission", "counter_reuse",
                                        "counter_reuse", "new"]
    assert len(site.store.incidents()) == 101


def test_late_frames_are_accepted_above_the_history_floor_and_stale_below(site):
    assert site.results(alarm(1), alarm(300), alarm(5), alarm(5)) == [
        "new", "new", "new", "retransmission"]
    assert site.metrics.late_frames.get() == 1
    other = 0x00000777
    site.registry.add(other, key_for(other))
    topic = "vigil/up/00000777"
    frames = [p.encode(p.Alarm(other, c, p.SOS), key_for(other)) for c in (500, 436, 437)]
    outcomes = site.pipeline.process([Message(topic, f) for f in frames])
    assert [o.reason or o.result for o in outcomes] == ["new", "stale_counter", "new"]


def test_a_failed_commit_acknowledges_nothing_and_forgets_nothing(site, monkeypatch):
    real_insert = site.store.insert_frame

    def broken(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(site.store, "insert_frame", broken)
    with pytest.raises(StoreError):
        site.send(alarm(1), alarm(2))
    assert site.store.frame_count() == 0
    monkeypatch.setattr(site.store, "insert_frame", real_insert)
    assert site.results(alarm(1), alarm(2)) == ["new", "new"]  # not taken for retransmissions
    assert site.store.frame_count() == 2


def test_double_tap_confirms_even_a_closed_incident_and_an_unknown_ref_is_kept(site):
    site.send(alarm(1, p.SOS))
    [incident] = site.store.incidents()
    from vigil_gateway.incidents import RESOLVED, Incidents

    with site.store.transaction():
        Incidents(site.store).apply(incident, RESOLVED, site.clock())
    assert site.results(alarm(3, p.DOUBLE_TAP, ref=1), alarm(4, p.DOUBLE_TAP, ref=2)) == [
        "new", "new"]
    [incident] = site.store.incidents()
    assert incident.state == "needs_help"
    assert [a.event for a in site.store.audit(incident.id)] == [
        "raised", "resolved", "wearer_confirms"]
    assert "reopened" in site.store.audit(incident.id)[-1].detail
    assert site.store.take_early_taps(DEV, 2)[0].counter == 4  # waits for alarm 2 (incidents.py)


def test_supervision_raises_lost_contact_once_and_records_the_return(site):
    supervisor = Supervisor(site.store, site.registry, default_interval_s=300, grace_s=30,
                            pipeline=site.pipeline)
    never_seen = 0x00000999
    site.registry.add(never_seen, key_for(never_seen))
    site.send(p.encode(p.CheckIn(DEV, 1, 90, 0, 120), KEY))  # announces 120 s
    site.clock.now += 149
    assert supervisor.check(site.clock()) == []
    site.clock.now += 2
    [lost] = supervisor.check(site.clock())
    assert (lost.device_id, lost.kind, lost.counter) == (DEV, "LOST_CONTACT", None)
    site.clock.now += 1000
    assert supervisor.check(site.clock()) == []  # one at a time
    site.send(alarm(2, p.LOW_BATTERY))
    lost = site.store.incident(lost.id)
    assert lost.state == "closed"
    assert [a.event for a in site.store.audit(lost.id)] == ["raised", "contact_restored"]
    assert site.store.contact(DEV).lost_incident is None
    site.registry.revoke(DEV)
    site.clock.now += 10000
    assert supervisor.check(site.clock()) == []  # revoked and never-seen devices: not supervised


def test_a_fault_on_one_message_holds_it_back_and_commits_the_others(site, monkeypatch):
    real = site.pipeline.incidents.raise_alarm

    def faulty(device_id, counter, *args):
        if counter == 2:
            raise RuntimeError("a bug")
        return real(device_id, counter, *args)

    monkeypatch.setattr(site.pipeline.incidents, "raise_alarm", faulty)
    outcomes = site.send(alarm(1), alarm(2), alarm(3))
    assert [(o.reason or o.result, o.hold) for o in outcomes] == [
        ("new", False), ("internal_error", True), ("new", False)]
    assert outcomes[1].downlink is None
    assert sorted(i.counter for i in site.store.incidents()) == [1, 3]
    assert site.store.frame_tag(DEV, 2) is None  # nothing half-written
    monkeypatch.setattr(site.pipeline.incidents, "raise_alarm", real)
    assert site.results(alarm(2)) == ["new"]  # redelivered later: accepted


def test_a_replayed_frame_is_acked_again_at_most_once_a_second(site):
    frame = alarm(1)
    assert site.send(frame)[0].downlink is not None
    # A flood of replays in one second: the first is acked again, the rest are not (an
    # attacker must not turn the gateway into a downlink amplifier), and all are counted.
    flood = site.send(*[frame] * 50)
    assert [o.result for o in flood] == ["retransmission"] * 50
    assert [o.downlink is not None for o in flood] == [True] + [False] * 49
    assert site.metrics.reacks_suppressed.get() == 49
    site.clock.now += 0.5
    assert site.send(frame)[0].downlink is None
    # The wearable's own retransmissions come at least 1.5 s apart: each is acked.
    for _ in range(3):
        site.clock.now += 1.5
        assert site.send(frame)[0].downlink is not None
    # Per counter: another alarm's retransmission is not held back by this one's.
    site.send(alarm(2))
    assert site.send(alarm(2))[0].downlink is not None
    acks = [p.decode(o.downlink[1], KEY, p.DOWN).counter for o in site.send(alarm(3))]
    assert acks == [1 + 1 + 3 + 1 + 1 + 1]  # one downlink counter per ack actually made
