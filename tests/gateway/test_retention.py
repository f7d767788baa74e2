# Retention ([store] retain_days): old frames, delivered events and sent downlinks go; the
# replay protection does not weaken, and incidents with their audit stay.
import pytest

import vigil_protocol as p
from test_pipeline import DEV, KEY, TOPIC, Site
from vigil_gateway.downlinks import ACTION, Downlinks
from vigil_gateway.incidents import Incidents
from vigil_gateway.outbox import Outbox
from vigil_gateway.pipeline import WINDOW_SIZE, Message
from vigil_gateway.retention import DAY_S, Retention


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    site.outbox = Outbox(site.conn, ["webhook"])
    site.pipeline.incidents = Incidents(site.store, site.outbox)
    site.downlinks = Downlinks(site.conn, site.registry, site.pipeline)
    site.retention = Retention(site.store, site.outbox, site.downlinks, 30, WINDOW_SIZE)
    return site


def checkin(counter):
    return p.encode(p.CheckIn(DEV, counter, battery=80, interval=300), KEY, 2)


def send(site, *frames):
    return [o.reason or o.result for o in site.pipeline.process([Message(TOPIC, f)
                                                                  for f in frames])]


def test_old_frames_go_and_their_copies_are_refused_as_stale(site):
    alarm = p.encode(p.Alarm(DEV, 1, p.DURESS), KEY, 2)
    old = [checkin(c) for c in range(2, 201) if c != 150]  # 150 never reached the gateway
    assert send(site, alarm, *old) == ["new"] * 199
    site.clock.now += 40 * DAY_S
    assert send(site, *[checkin(c) for c in range(201, 211)]) == ["new"] * 10
    gone = site.retention.prune(site.clock())
    # Everything older than 30 days goes but the device's 64 highest counters (147-210).
    assert gone["frames"] == 146 and site.store.frame_count() == 199 + 10 - 146
    site.pipeline.forget()
    # A copy of the pruned duress alarm, or of any pruned frame: stale, not a new alarm.
    assert send(site, alarm, checkin(100), checkin(146)) == ["stale_counter"] * 3
    # A frame never seen above what was pruned is still taken (late); kept ones are known.
    assert send(site, checkin(150), checkin(147), checkin(205)) == [
        "new", "retransmission", "retransmission"]
    # The incident and its audit are the record: never pruned.
    [incident] = site.store.incidents()
    assert incident.kind == "DURESS" and site.store.audit(incident.id)


def test_the_window_survives_a_device_that_went_quiet(site):
    send(site, *[checkin(c) for c in range(1, 31)])
    site.clock.now += 400 * DAY_S
    assert site.retention.prune(site.clock())["frames"] == 0  # all 30 are its highest
    site.pipeline.forget()
    assert send(site, checkin(30)) == ["retransmission"]


def test_delivered_events_and_sent_downlinks_go_waiting_ones_stay(site):
    send(site, p.encode(p.Alarm(DEV, 1, p.SOS), KEY, 2))
    [event] = site.outbox.items()
    site.store.begin()
    sent = site.downlinks.make(DEV, 1, ACTION, p.ACKNOWLEDGED, site.clock())
    waiting = site.downlinks.make(DEV, 1, ACTION, p.RESOLVED, site.clock())
    site.downlinks.mark(sent.id, "mqtt", site.clock())
    site.outbox.delivered(event, site.clock())
    site.conn.commit_or_rollback()
    site.clock.now += 31 * DAY_S
    gone = site.retention.prune(site.clock())
    assert (gone["events"], gone["downlinks"]) == (1, 1)
    assert [d.id for d in site.downlinks.all()] == [waiting.id]
    assert site.store.incidents()


def test_retention_runs_at_most_hourly_and_zero_keeps_everything(site):
    assert site.retention.due(site.clock())
    site.retention.prune(site.clock())
    assert not site.retention.due(site.clock() + 3599)
    assert site.retention.due(site.clock() + 3600)
    keep_all = Retention(site.store, site.outbox, site.downlinks, 0, WINDOW_SIZE)
    assert not keep_all.due(site.clock())


def test_the_benchmark_prints_both_sizes():
    from vigil_cli import vigil

    out = vigil("bench", "retention", "--devices", "2", "--days", "4", "--retain-days", "1")
    assert out.returncode == 0, out.stderr
    figures = dict(pair.split("=") for pair in out.stdout.splitlines()[-1].split())
    assert int(figures["pruned_frames"]) < int(figures["kept_all_frames"]) == 2 * 4 * 289
    assert float(figures["pruned_over_kept_used"]) < 1
    # incidents and their audit are never pruned: an alarm a day per device, all there
    assert int(figures["pruned_incidents"]) == int(figures["kept_all_incidents"]) == 2 * 4
