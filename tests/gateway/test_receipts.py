# Receipts (SPEC section 3): a v2 wearable confirms each stored downlink it takes; what it has
# not confirmed is offered again - the same bytes - once it is heard from after a wait that
# doubles. The pipeline and the downlinks table, with a clock the test moves.
import sqlite3

import pytest

import vigil_protocol as p
from gateway_harness import key_for
from test_pipeline import DEV, KEY, Site
from vigil_gateway.db import open_database
from vigil_gateway.downlinks import ACTION, REOFFER_S, Downlinks
from vigil_gateway.registry import Registry
from vigil_gateway.store import Store

OLD = 0x000001D1


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    site.downlinks = Downlinks(site.conn, site.registry, site.pipeline)
    site.counter = 0
    return site


def uplink(site, frame_cls=p.CheckIn, *args, device=DEV, key=KEY, version=2):
    site.counter += 1
    frame = frame_cls(device, site.counter, *args) if args else frame_cls(device, site.counter)
    topic = "vigil/up/%08x" % device
    from vigil_gateway.pipeline import Message
    return site.pipeline.process([Message(topic, p.encode(frame, key, version))])[0]


def action(site, code=p.ACKNOWLEDGED, device=DEV, ref=1):
    """A stored action downlink, published and taken by the broker."""
    site.store.begin()
    made = site.downlinks.make(device, ref, ACTION, code, site.clock())
    site.downlinks.mark(made.id, "mqtt", site.clock())
    site.conn.commit_or_rollback()
    return made


def row(site, made):
    return next(d for d in site.downlinks.all() if d.id == made.id)


def test_a_receipt_confirms_its_downlink_and_is_acknowledged_by_nothing(site):
    made = action(site)
    outcome = uplink(site, p.Receipt, made.counter)
    assert outcome.result == "new" and outcome.downlink is None
    assert row(site, made).confirmed_at == site.clock()
    assert site.metrics.receipts.get("confirmed") == 1
    # A repeat (the wearable answers every copy) changes nothing and is counted as such.
    uplink(site, p.Receipt, made.counter)
    assert site.metrics.receipts.get("repeat") == 1
    site.clock.now += 3600
    assert uplink(site).reoffered == 0  # confirmed: never offered again


def test_an_unconfirmed_downlink_is_offered_again_when_the_wearable_is_heard(site):
    made = action(site)
    site.clock.now += REOFFER_S[0] - 1
    assert uplink(site).reoffered == 0  # its receipt may still be on its way
    site.clock.now += 2
    assert uplink(site).reoffered == 1
    again = row(site, made)
    assert (again.mqtt_sent_at, again.ble_sent_at, again.offers) == (None, None, 1)
    assert again.frame == made.frame and again.counter == made.counter  # the same bytes
    assert site.metrics.receipts.get("offered_again") == 1
    # Published again; the next wait is twice as long.
    site.downlinks.mark(made.id, "mqtt", site.clock())
    site.clock.now += 2 * REOFFER_S[0] - 1
    assert uplink(site).reoffered == 0
    site.clock.now += 2
    assert uplink(site).reoffered == 1
    # Not while it waits to be published: only what was sent is offered again.
    site.clock.now += 1000
    assert uplink(site).reoffered == 0
    site.downlinks.mark(made.id, "mqtt", site.clock())
    uplink(site, p.Receipt, made.counter)
    site.clock.now += 10 ** 5
    assert uplink(site).reoffered == 0


def test_a_receipt_names_its_downlink_by_the_low_bits(site):
    site.store.set_downlink_counter(DEV, 0x400000 + 5)
    made = action(site)  # counter 0x400006
    assert made.counter == 0x400006
    uplink(site, p.Receipt, made.counter)  # travels as 6
    assert row(site, made).confirmed_at is not None


def test_only_new_v2_frames_offer_again(site):
    site.registry.add(OLD, key_for(OLD), protocol=1)
    old = action(site, device=OLD)
    made = action(site)
    site.clock.now += 100
    # A v1 unit sends no receipts: for it "sent" stays the broker's PUBACK.
    assert uplink(site, device=OLD, key=key_for(OLD), version=1).reoffered == 0
    assert row(site, old).mqtt_sent_at is not None
    # A replayed frame is no sign of life.
    from vigil_gateway.pipeline import Message
    frame = p.encode(p.CheckIn(DEV, 500), KEY, 2)
    site.pipeline.process([Message("vigil/up/%08x" % DEV, frame)])
    site.downlinks.mark(made.id, "mqtt", site.clock())
    site.clock.now += 100
    [outcome] = site.pipeline.process([Message("vigil/up/%08x" % DEV, frame)])
    assert outcome.result == "retransmission" and outcome.reoffered == 0


def test_a_downlinks_table_from_before_receipts_gets_its_columns(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "gateway.db"))
    conn.execute("CREATE TABLE downlinks (id INTEGER PRIMARY KEY, device_id INTEGER NOT NULL, "
                 "counter INTEGER NOT NULL, ref INTEGER NOT NULL, kind TEXT NOT NULL, "
                 "code INTEGER NOT NULL, frame BLOB NOT NULL, created_at REAL NOT NULL, "
                 "mqtt_sent_at REAL, ble_sent_at REAL, UNIQUE (device_id, ref, kind, code))")
    conn.execute("INSERT INTO downlinks VALUES (1, 7, 3, 1, 'action', 1, x'00', 1.0, 2.0, NULL)")
    conn.commit()
    conn.close()
    conn = open_database(str(tmp_path))
    from vigil_gateway.pipeline import Pipeline
    from vigil_gateway.topics import Topics
    registry = Registry(conn, str(tmp_path / "keys"))
    downlinks = Downlinks(conn, registry, Pipeline(registry, Store(conn), Topics("vigil")))
    [old] = downlinks.all()
    assert (old.counter, old.mqtt_sent_at, old.confirmed_at, old.offers) == (3, 2.0, None, 0)


def test_a_late_receipt_confirms_before_anything_is_offered_again(site):
    made = action(site)
    site.clock.now += 600  # the wearable was away; the broker kept the downlink for it
    outcome = uplink(site, p.Receipt, made.counter)
    assert outcome.reoffered == 0 and row(site, made).mqtt_sent_at is not None


def test_a_prompts_receipt_tells_the_responder_the_wearable_played_it(site):
    from vigil_gateway.incidents import Incidents
    from vigil_gateway.outbox import Outbox

    outbox = Outbox(site.conn, ["webhook"])
    site.pipeline.incidents = Incidents(site.store, outbox)
    assert uplink(site, p.Alarm, p.SOS).result == "new"  # counter 1: the incident
    prompt = action(site, p.PROMPT_DOUBLE_TAP, ref=1)
    other = action(site, p.ACKNOWLEDGED, ref=1)
    site.clock.now += 2
    uplink(site, p.Receipt, other.counter)
    uplink(site, p.Receipt, prompt.counter)
    uplink(site, p.Receipt, prompt.counter)  # a repeat: said once
    [incident] = site.store.incidents()
    played = [a for a in site.store.audit(incident.id) if a.event == "prompt_played"]
    assert [(a.at, a.detail) for a in played] == [
        (site.clock(), "the wearable played the prompt to tap twice; receipt, frame 3")]
    assert [i.event for i in outbox.items()] == ["raised", "prompt_played"]


# -- signed afresh: a stored downlink offered again from below the wearable's window --------

def _acks(site, n):
    """n check-ins, each acked with a fresh downlink counter; returns the last ack's counter."""
    for _ in range(n):
        outcome = uplink(site)
    return p.decode(outcome.downlink[1], p.DeviceKey(KEY), p.DOWN).counter


def _offer_again(site, *made):
    """Published (PUBACK), then the wait over: the next check-in offers them again."""
    for d in made:
        site.downlinks.mark(d.id, "mqtt", site.clock())
    site.clock.now += REOFFER_S[1] + 1
    return uplink(site)


def test_a_downlink_offered_again_within_the_window_keeps_its_bytes(site):
    from vigil_gateway.downlinks import RESIGN_BELOW

    made = action(site)  # counter 1
    assert _acks(site, RESIGN_BELOW - 1) == made.counter + RESIGN_BELOW - 1  # just inside
    outcome = _offer_again(site)
    assert outcome.reoffered == 1
    again = row(site, made)
    assert (again.counter, again.frame) == (made.counter, made.frame)
    assert site.conn.execute("SELECT count(*) FROM downlink_old_counters").fetchone()[0] == 0


def test_a_downlink_offered_again_from_below_the_window_is_signed_afresh(site):
    from vigil_gateway.downlinks import RESIGN_BELOW

    first = action(site, p.ACKNOWLEDGED)               # counter 1
    second = action(site, p.HELP_DISPATCHED)           # counter 2
    latest = _acks(site, RESIGN_BELOW - 1)             # 3 .. RESIGN_BELOW + 1
    # The first is just far enough below; the second only once the first has taken a counter.
    assert latest - first.counter == RESIGN_BELOW and latest - second.counter == RESIGN_BELOW - 1
    outcome = _offer_again(site, first, second)
    assert outcome.reoffered == 2
    # Fresh counters, in the order the two were made, from the device's own counter in the
    # batch's transaction: the check-in's ack comes after them and nothing is used twice.
    a, b = row(site, first), row(site, second)
    ack = p.decode(outcome.downlink[1], p.DeviceKey(KEY), p.DOWN)
    assert (a.counter, b.counter, ack.counter) == (latest + 1, latest + 2, latest + 3)
    assert site.store.downlink_counter(DEV) == latest + 3
    for d, old, code in ((a, first, p.ACKNOWLEDGED), (b, second, p.HELP_DISPATCHED)):
        frame = p.decode(d.frame, p.DeviceKey(KEY), p.DOWN)
        assert (frame.counter, frame.ref, frame.action) == (d.counter, old.ref, code)
        assert frame.version == 2
        assert (d.mqtt_sent_at, d.ble_sent_at, d.offers) == (None, None, 1)  # to go out again
    # A receipt for the first signature, on its way when the second was made, confirms it;
    # one for the new signature confirms the other. Nothing is offered again after that.
    uplink(site, p.Receipt, first.counter)
    uplink(site, p.Receipt, b.counter)
    assert row(site, first).confirmed_at is not None
    assert row(site, second).confirmed_at is not None
    assert site.metrics.receipts.get("confirmed") == 2
    uplink(site, p.Receipt, a.counter)  # the new signature's receipt too: a repeat
    assert site.metrics.receipts.get("repeat") == 1
    site.downlinks.mark(first.id, "mqtt", site.clock())
    site.downlinks.mark(second.id, "mqtt", site.clock())
    site.clock.now += REOFFER_S[1] + 1
    assert uplink(site).reoffered == 0


def test_a_downlink_the_wearable_is_past_is_not_signed_afresh(site):
    from vigil_gateway.downlinks import RESIGN_BELOW

    # The prompt's receipt was lost; the wearable confirmed the dispatch made after it. Taken
    # again, the prompt would take the wearable back from HELP_DISPATCHED (alarms.py).
    prompt = action(site, p.PROMPT_DOUBLE_TAP)
    dispatch = action(site, p.HELP_DISPATCHED)
    uplink(site, p.Receipt, dispatch.counter)
    _acks(site, RESIGN_BELOW + 5)
    assert _offer_again(site, prompt).reoffered == 1
    again = row(site, prompt)
    assert (again.counter, again.frame) == (prompt.counter, prompt.frame)


def test_the_old_counters_of_pruned_downlinks_go_with_them(site):
    from vigil_gateway.downlinks import RESIGN_BELOW

    made = action(site)
    _acks(site, RESIGN_BELOW)
    _offer_again(site, made)
    uplink(site, p.Receipt, row(site, made).counter)
    old = "SELECT count(*) FROM downlink_old_counters"
    assert site.conn.execute(old).fetchone()[0] == 1
    site.store.begin()
    assert site.downlinks.prune(site.clock() + 1) == 1
    site.conn.commit_or_rollback()
    assert site.conn.execute(old).fetchone()[0] == 0


def test_a_restore_signs_again_what_will_be_sent_again(site):
    from vigil_gateway import downlinks as downlinks_module

    site.registry.add(OLD, key_for(OLD), protocol=1)
    sent_v2 = action(site, p.ACKNOWLEDGED)                  # sent, no receipt: offered again
    confirmed = action(site, p.PROMPT_DOUBLE_TAP, ref=2)   # the wearable has it
    uplink(site, p.Receipt, confirmed.counter)
    site.store.begin()
    unsent_v2 = site.downlinks.make(DEV, 1, ACTION, p.HELP_DISPATCHED, site.clock())
    site.conn.commit_or_rollback()
    sent_v1 = action(site, device=OLD)                      # v1: sent means sent
    site.store.begin()
    unsent_v1 = site.downlinks.make(OLD, 1, ACTION, p.RESOLVED, site.clock())
    site.conn.commit_or_rollback()
    moved = {DEV: 1_000_000 + site.store.downlink_counter(DEV),
             OLD: 1_000_000 + site.store.downlink_counter(OLD)}
    site.store.begin()
    for device, counter in moved.items():
        site.conn.execute("UPDATE downlink_counters SET last_counter = ? WHERE device_id = ?",
                          (counter, device))
    assert downlinks_module.restored(site.conn, site.registry) == 3
    site.conn.commit_or_rollback()
    keys = {DEV: p.DeviceKey(KEY), OLD: p.DeviceKey(key_for(OLD))}
    for d, counter, version in ((sent_v2, moved[DEV] + 1, 2), (unsent_v2, moved[DEV] + 2, 2),
                                (unsent_v1, moved[OLD] + 1, 1)):
        now = row(site, d)
        frame = p.decode(now.frame, keys[d.device_id], p.DOWN)
        assert (now.counter, frame.counter, frame.action, frame.version) == (
            counter, counter, d.code, version)
        assert (now.mqtt_sent_at, now.ble_sent_at) == (None, None)  # out at once
    for d in (confirmed, sent_v1):
        assert (row(site, d).counter, row(site, d).frame) == (d.counter, d.frame)
    assert site.store.downlink_counter(DEV) == moved[DEV] + 2
    assert site.store.downlink_counter(OLD) == moved[OLD] + 1
    # The backup's counter still names the first: a receipt from before the loss confirms it.
    site.pipeline.forget()
    uplink(site, p.Receipt, sent_v2.counter)
    assert row(site, sent_v2).confirmed_at is not None
