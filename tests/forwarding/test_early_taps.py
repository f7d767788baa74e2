# A DOUBLE_TAP that arrives before the alarm it answers is never dropped: kept, it is applied
# when the alarm arrives (also after a restart, or in the same batch); if the alarm has not come
# within the wait it raises an incident of its own (SOS, for that alarm's counter, needs_help),
# forwarded like any other, which the late alarm then joins. With a clock the test moves.
import vigil_protocol as p
from forwarding_site import DEV, KEY, Site
from vigil_gateway.pipeline import Message

TOPIC = "vigil/up/%08x" % DEV
WAIT_S = 15.0


def frame(counter, kind=p.SOS, ref=0):
    return p.encode(p.Alarm(DEV, counter, kind, ref=ref), p.DeviceKey(KEY))


def send(site, *frames):
    outcomes = site.pipeline.process([Message(TOPIC, f) for f in frames])
    assert all(o.downlink is not None for o in outcomes)  # each one acknowledged (RECEIVED)
    return [o.result for o in outcomes]


def promote(site):
    with site.store.transaction():
        return site.pipeline.incidents.promote_early_taps(site.clock(), WAIT_S)


def trail(site, incident):
    return [(a.event, a.detail) for a in site.store.audit(incident.id)]


def test_a_tap_before_its_alarm_is_applied_when_the_alarm_arrives(tmp_path):
    site = Site(tmp_path)
    assert send(site, frame(1, p.FALL), frame(3, p.DOUBLE_TAP, ref=2)) == ["new", "new"]
    assert [i.counter for i in site.store.incidents()] == [1]  # the tap waits for alarm 2
    assert site.metrics.early_taps.get("kept") == 1
    site.clock.now += 5
    assert send(site, frame(2, p.SOS)) == ["new"]
    incident = site.store.incident_for_alarm(DEV, 2)
    assert (incident.kind, incident.state) == ("SOS", "needs_help")
    assert trail(site, incident) == [
        ("raised", "raised"),
        ("wearer_confirms", "wearer confirms they need help; double tap, frame 3 (it came "
                            "before its alarm)")]
    assert [i.event for i in site.outbox.items() if i.incident_id == incident.id] == [
        "raised", "wearer_confirms"]  # forwarded in order
    site.clock.now += 60
    assert promote(site) == []  # nothing left waiting
    assert len(site.store.incidents()) == 2


def test_in_one_batch_and_across_a_restart(tmp_path):
    site = Site(tmp_path)
    send(site, frame(2, p.DOUBLE_TAP, ref=1), frame(1, p.SOS))  # reordered within a batch
    assert site.store.incident_for_alarm(DEV, 1).state == "needs_help"
    send(site, frame(4, p.DOUBLE_TAP, ref=3))
    site.restart()  # the kept tap is on disk
    send(site, frame(3, p.NO_MOTION))
    incident = site.store.incident_for_alarm(DEV, 3)
    assert (incident.kind, incident.state) == ("NO_MOTION", "needs_help")


def test_a_tap_whose_alarm_never_comes_raises_an_incident_of_its_own(tmp_path):
    site = Site(tmp_path)
    send(site, frame(7, p.DOUBLE_TAP, ref=5), frame(8, p.DOUBLE_TAP, ref=5))
    site.clock.now += WAIT_S - 1
    assert promote(site) == []
    site.clock.now += 1
    [incident] = promote(site)
    assert (incident.device_id, incident.counter, incident.kind, incident.state) == (
        DEV, 5, "SOS", "needs_help")
    assert trail(site, incident) == [
        ("raised", "raised; from the wearer's double tap (frame 7): the alarm it answers "
                   "(counter 5) has not arrived within 15 s"),
        ("wearer_confirms", "wearer confirms they need help; double tap, frame 7 (it came "
                            "before its alarm)"),
        ("wearer_confirms", "wearer confirms they need help; double tap, frame 8 (it came "
                            "before its alarm)")]
    keys = [i.key for i in site.outbox.items()]
    assert keys == ["%08x-5-raised" % DEV, "%08x-5-wearer_confirms" % DEV]
    # A responder's action names alarm 5, the one open on the wearable.
    from vigil_gateway.actions import ActionsApi

    api = ActionsApi(site.store, site.pipeline.incidents, site.downlinks,
                     {"arc": "token-0123456789abcdef"}, site.clock)
    reply = api.handle("POST", "/v1/incidents/%d/actions" % incident.id,
                       {"authorization": "Bearer token-0123456789abcdef",
                        "content-type": "application/json"},
                       b'{"action": "acknowledge", "request_id": "req-early-1", "sent_at": %f}'
                       % site.clock.now)
    assert reply.status == 200
    [action] = [f for f in site.decoded_downlinks() if isinstance(f, p.Action)]
    assert (action.ref, action.action) == (5, p.ACKNOWLEDGED)
    # The alarm arriving late joins that incident: stored and acknowledged, nothing new raised.
    site.clock.now += 30
    assert send(site, frame(5, p.FALL)) == ["new"]
    assert [i.id for i in site.store.incidents()] == [incident.id]
    assert trail(site, incident)[-1] == (
        "alarm_arrived", "the FALL alarm itself arrived (after its double tap raised this "
                         "incident); LATE: raised at least 45 s before it arrived (a later "
                         "frame of the device came first)")  # its tap, a higher counter
    assert site.store.lateness(incident.id).late_s == 45
    assert site.store.frame_tag(DEV, 5) is not None
    # And another tap on it is an ordinary confirmation.
    send(site, frame(9, p.DOUBLE_TAP, ref=5))
    assert trail(site, incident)[-1][0] == "wearer_confirms"
    assert promote(site) == []
