# Late alarms (protocol/SPEC.md section 12): delivered like any other, marked late with the
# time they were raised at the latest, and counted - judged on the age the wearable sealed in
# the frame, on a later frame that came first, and on contact lost meanwhile.
import pytest

import vigil_protocol as p
from test_pipeline import DEV, KEY, Site
from vigil_gateway import lateness
from vigil_gateway.incidents import Incidents
from vigil_gateway.outbox import Outbox
from vigil_gateway.supervision import Supervisor


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def sealed(counter, kind=p.SOS, age=0, ref=0):
    return p.encode(p.Alarm(DEV, counter, kind, ref=ref, age=age), KEY, 2)


def raised(site):
    incident = site.store.incidents()[-1]
    return incident, site.store.lateness(incident.id), site.store.audit(incident.id)[0]


def test_judge_adds_what_is_certain_and_reports_what_is_possible():
    assert lateness.judge(1000.0) == (1000.0, 0.0, "", None)
    assert lateness.judge(1000.0, age_s=95) == (905.0, 95.0, "age", None)
    assert lateness.judge(1000.0, age_s=10, higher_first_at=700.0) == (
        690.0, 310.0, "age,order", None)
    # Lost contact: maybe held since last heard, but nothing certain.
    judged = lateness.judge(1000.0, silent_since=400.0)
    assert (judged.late_s, judged.held_up_to_s) == (0.0, 600.0)
    assert lateness.is_late(judged, 30) and not lateness.is_late(lateness.judge(9.0, 29), 30)


def test_an_alarm_that_waited_on_the_wearable_is_raised_and_marked_late(site):
    # The 8-bit v2 age holds 95 s as 92 s (within 1/16, rounded down: a lower bound).
    assert site.results(sealed(1, p.DURESS, age=95)) == ["new"]
    incident, late, audit = raised(site)
    assert (incident.kind, incident.state) == ("DURESS", "open")
    assert late.basis == "age" and late.late_s == 92
    assert late.raised_at == site.clock() - 92
    assert audit.detail == "raised; LATE: raised at least 92 s before it arrived (it waited " \
                           "on the wearable)"  # the age once, not again as "waited 92s"
    assert site.metrics.late_alarms.get("age") == 1


def test_an_alarm_that_came_at_once_is_not_marked(site):
    assert site.results(sealed(1, age=3), sealed(2)) == ["new", "new"]
    assert all(site.store.lateness(i.id) is None for i in site.store.incidents())
    assert "LATE" not in site.store.audit(1)[0].detail
    assert site.metrics.late_alarms.get("age") == 0


def test_an_alarm_held_back_while_later_frames_came_is_late_by_their_lead(site):
    site.send(p.encode(p.CheckIn(DEV, 8, 90, 0, 60), KEY, 2))
    site.clock.now += 200
    site.send(p.encode(p.CheckIn(DEV, 9, 90, 0, 60), KEY, 2))
    site.clock.now += 50
    assert site.results(sealed(7, p.SOS, age=4)) == ["new"]  # withheld, released now
    _, late, audit = raised(site)
    # Counter 8 came 250 s ago: alarm 7 was sealed before it, and waited 4 s before that.
    assert (late.late_s, late.basis) == (254, "age,order")
    assert late.raised_at == site.clock() - 254
    assert "a later frame of the device came first" in audit.detail
    assert site.metrics.late_alarms.get("order") == 1


def test_an_alarm_that_ends_a_lost_contact_may_have_been_held(site):
    supervisor = Supervisor(site.store, site.registry, default_interval_s=300, grace_s=30,
                            pipeline=site.pipeline)
    site.send(p.encode(p.CheckIn(DEV, 1, 90, 0, 60), KEY, 2))
    site.clock.now += 100
    [lost] = supervisor.check(site.clock())
    site.clock.now += 500
    assert site.results(sealed(2, p.FALL)) == ["new"]
    incident, late, audit = raised(site)
    assert incident.kind == "FALL"
    assert (late.late_s, late.held_up_to_s) == (0, 600)
    assert "possibly held back up to 600 s" in audit.detail
    assert site.metrics.late_alarms.get("silence") == 1
    assert site.store.incident(lost.id).state == "closed"  # and contact is restored


def test_the_webhook_snapshot_carries_the_lateness(site):
    outbox = Outbox(site.conn, ["webhook"])
    site.pipeline.incidents = Incidents(site.store, outbox)
    site.send(sealed(1, p.SOS, age=600))
    [item] = outbox.items()
    late = item.snapshot["late"]
    assert late["basis"] == "age" and 560 <= late["late_s"] <= 600
    assert late["raised_at"] == site.clock() - late["late_s"]


def test_alarms_from_below_the_first_frame_are_taken_when_the_start_is_known(site):
    from gateway_harness import key_for
    from vigil_gateway.pipeline import Message

    def results(device, *counters):
        frames = [p.encode(p.Alarm(device, c, p.SOS), key_for(device), 2) for c in counters]
        return [o.reason or o.result for o in site.pipeline.process(
            [Message("vigil/up/%08x" % device, f) for f in frames])]

    # A new unit (its key made at registration): two reboots out of reach skipped counter
    # blocks, so its later alarm arrives first; the earlier ones are still its own.
    site.registry.add(0x51, key_for(0x51), counter_floor=0)
    assert results(0x51, 300) == ["new"]
    site.clock.now += 60
    assert results(0x51, 5, 6, 5) == ["new", "new", "retransmission"]
    assert site.store.lateness(site.store.incident_for_alarm(0x51, 5).id).basis == "order"
    # Started over by provisioning at 1000: below it nothing can be this unit's.
    site.registry.add(0x52, key_for(0x52), counter_floor=1000)
    assert results(0x52, 1300, 1000, 999) == ["new", "new", "stale_counter"]
    # Not known (a key that was in service elsewhere): its first frame less the window.
    site.registry.add(0x53, key_for(0x53))
    assert results(0x53, 300, 5, 237) == ["new", "stale_counter", "new"]
