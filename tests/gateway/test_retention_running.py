# Retention ([store] retain_days) in a running gateway (`vigil gateway run`, a real Mosquitto,
# a webhook that delivers): what is older than the retention goes while the gateway runs -
# frames, delivered events, downlinks that went out - the open incidents and their audit
# stay, and the replay protection does not weaken: a copy of a pruned frame is refused as
# stale (below the device's history floor, which the pruning moved), not taken as new.
#
# The gateway has no clock a test can move, and prunes at its first supervision round after
# start, then hourly (retention.PRUNE_EVERY_S). So a first run takes real traffic, the test
# then ages part of it in the stopped gateway's database (as if 40 days had gone by), and the
# gateway started again prunes it in its first round.
#
# The second test: a pruned DC-09 event's sequence number is not taken again by a new event.
import os
import queue
import sqlite3
import sys
import uuid

import pytest

import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from vigil_gateway.pipeline import WINDOW_SIZE
from vigil_gateway.retention import DAY_S
from vigil_responder import ResponderBackend
from vigil_tools.broker import free_port

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "forwarding"))
from sia_receiver import start_receiver  # noqa: E402

DEV, QUIET = 0x0CC00001, 0x0CC00002
SECRET = b"webhook-secret-for-retention-0123456789"
AGED = 100         # DEV's frames with counters 1..AGED are aged past the retention
TOP = 200          # DEV's highest counter in the first run
SKIPPED = 120      # a counter DEV never sent: above the floor, below the replay window
QUIET_TOP = 80     # QUIET sends 1..80 in the first run, then nothing: all of it is old
WINDOW = WINDOW_SIZE  # each device's 64 highest frames stay whatever their age (its window)


@pytest.fixture
def backend():
    b = ResponderBackend(SECRET).start()
    yield b
    b.stop()


def _db(gw):
    return sqlite3.connect(gw.dir / "data" / "gateway.db")


def _v2(device, frame):
    return p.encode(frame, device.key, 2)


def _checkin(device):
    return _v2(device, p.CheckIn(device.device_id, device.next_counter(), 80, 0, 0))


def _rows(conn, sql, *args):
    return conn.execute(sql, args).fetchall()


def test_a_running_gateway_prunes_and_replays_stay_refused(mosquitto, gateway_factory,
                                                           devices, backend, tmp_path):
    write_secret(tmp_path / "hook.secret", SECRET)
    prefix = "retention-" + uuid.uuid4().hex[:8]
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": prefix},
                         store={"retain_days": 30},
                         supervision={"check_every_s": 3.0},
                         forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
                         **{"forward.webhook": {"url": backend.url,
                                                "secret_file": str(tmp_path / "hook.secret")}})
    gw.add_device(DEV, key_for(DEV))
    gw.add_device(QUIET, key_for(QUIET))
    gw.start()
    wearable = devices(mosquitto.port, DEV, key_for(DEV), prefix=prefix, client_id=prefix)
    quiet = devices(mosquitto.port, QUIET, key_for(QUIET), prefix=prefix,
                    client_id=prefix + "-quiet")

    # The first run: DEV (protocol v2) sends two alarms, whose incidents stay open and whose
    # events are delivered (the wearable takes their DELIVERED acks and sends its receipts),
    # then check-ins up to TOP, SKIPPED never sent; QUIET (v1) checks in QUIET_TOP times.
    # Every frame is kept here, as exact bytes, as a replaying attacker would keep them.
    sent, acked = {}, []
    for kind in (p.SOS, p.FALL):
        frame = _v2(wearable, p.Alarm(DEV, wearable.next_counter(), kind))
        sent[wearable.counter] = frame
        acked.append(wearable.counter)
        wearable.publish(frame)
    wait_for(lambda: len(backend.events) == 2, 15, "both raised events delivered")
    wait_for(lambda: sum(isinstance(f, p.Ack) and f.stage == p.DELIVERED
                         for f in list(wearable.downlinks.queue)) == 2, 15,
             "both DELIVERED acks")
    for ack in [f for f in list(wearable.downlinks.queue)
                if isinstance(f, p.Ack) and f.stage == p.DELIVERED]:
        frame = _v2(wearable, p.Receipt(DEV, wearable.next_counter(), ack.counter))
        sent[wearable.counter] = frame
        wearable.publish(frame)
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlink_receipts_total{outcome="confirmed"}', 0) == 2, 10,
        "both receipts")
    while wearable.counter < TOP:
        frame = _checkin(wearable)
        if wearable.counter != SKIPPED:
            sent[wearable.counter] = frame
            acked.append(wearable.counter)
            wearable.publish(frame, wait=False)
    quiet_sent = {}
    while quiet.counter < QUIET_TOP:
        frame = quiet.checkin()
        quiet_sent[quiet.counter] = frame
        quiet.publish(frame, wait=False)
    wearable.wait_acked(acked)
    quiet.wait_acked(quiet_sent)
    gw.stop()

    conn = _db(gw)
    with conn:
        incidents = _rows(conn, "SELECT id, counter, kind, state FROM incidents ORDER BY id")
        audit = _rows(conn, "SELECT * FROM audit ORDER BY id")
        assert [(c, k, s) for _, c, k, s in incidents] == [(1, "SOS", "open"),
                                                            (2, "FALL", "open")]
        assert len(audit) >= 2
        assert len(_rows(conn, "SELECT id FROM outbox WHERE delivered_at IS NOT NULL")) == 2
        assert len(_rows(conn, "SELECT id FROM downlinks WHERE confirmed_at IS NOT NULL")) == 2
        assert _rows(conn, "SELECT device_id, count(*), min(counter), max(counter) FROM frames "
                     "GROUP BY device_id ORDER BY device_id") == [
            (DEV, TOP - 1, 1, TOP), (QUIET, QUIET_TOP, 1, QUIET_TOP)]
        assert _rows(conn, "SELECT history_floor FROM contact ORDER BY device_id") == [
            (0,), (0,)]
        # 40 days go by for DEV's frames up to AGED and all of QUIET's, the events, the
        # downlinks, the incidents and their audit; DEV's frames above AGED are recent.
        age = 40 * DAY_S
        conn.execute("UPDATE frames SET received_at = received_at - ? WHERE device_id = ? "
                     "OR counter <= ?", (age, QUIET, AGED))
        conn.execute("UPDATE outbox SET created_at = created_at - ?, next_at = next_at - ?, "
                     "delivered_at = delivered_at - ?", (age, age, age))
        conn.execute("UPDATE downlinks SET created_at = created_at - ?, "
                     "mqtt_sent_at = mqtt_sent_at - ?, confirmed_at = confirmed_at - ?",
                     (age, age, age))
        conn.execute("UPDATE incidents SET opened_at = opened_at - ?, updated_at = updated_at - ?",
                     (age, age))
        conn.execute("UPDATE audit SET at = at - ?", (age,))
        aged_audit = _rows(conn, "SELECT * FROM audit ORDER BY id")
    conn.close()

    # While the gateway is down, DEV checks in and the SOS is replayed: the broker keeps both
    # for the gateway's session, so the second run takes them before its first supervision
    # round - the SOS still a retransmission (its frame is there) - and then prunes, running.
    wearable.publish(_checkin(wearable))
    wearable.publish(sent[1])
    gw.start()
    wait_for(lambda: any(e["event"] == "pruned" for e in gw.log_events()), 15,
             "the running gateway's pruning")
    started = max(i for i, e in enumerate(gw.log_events()) if e["event"] == "gateway_started")
    events = [e["event"] for e in gw.log_events()[started:]
              if e["event"] in ("retransmission", "pruned")]
    assert events == ["retransmission", "pruned"], events  # the SOS, then the pruning
    wearable.wait_acked([1, TOP + 1])
    [pruned] = [e for e in gw.log_events() if e["event"] == "pruned"]
    assert (pruned["frames"], pruned["events"], pruned["downlinks"]) == (
        AGED + QUIET_TOP - WINDOW, 2, 2), pruned
    assert gw.get("/healthz")[0] == 200

    conn = _db(gw)
    try:
        # Only the old frames went, and never a device's WINDOW highest: every recent one of
        # DEV stays, though below its window, and QUIET keeps its window, old as it is.
        assert _rows(conn, "SELECT device_id, count(*), min(counter), max(counter) FROM frames "
                     "GROUP BY device_id ORDER BY device_id") == [
            (DEV, TOP - AGED, AGED + 1, TOP + 1),
            (QUIET, WINDOW, QUIET_TOP - WINDOW + 1, QUIET_TOP)]
        assert TOP + 1 - WINDOW > AGED + 1  # some of DEV's kept frames are below its window
        # The history floors moved past what went.
        assert _rows(conn, "SELECT device_id, history_floor FROM contact ORDER BY device_id") == [
            (DEV, AGED), (QUIET, QUIET_TOP - WINDOW)]
        assert _rows(conn, "SELECT count(*) FROM outbox") == [(0,)]
        assert _rows(conn, "SELECT count(*) FROM downlinks") == [(0,)]
        # The open incidents and their audit are the record: all there, as they were.
        assert _rows(conn, "SELECT id, counter, kind, state FROM incidents ORDER BY id") == \
            incidents
        assert _rows(conn, "SELECT * FROM audit ORDER BY id") == aged_audit
    finally:
        conn.close()

    # Replays through the running gateway: copies of the pruned alarms and of pruned
    # check-ins are refused as stale (below the floor): they raise nothing and get no ack. A
    # kept frame below the window, and QUIET's last, are retransmissions; a counter never
    # seen above the floor is taken (late), and so is DEV's next new one.
    stale = gw.rejections("stale_counter")
    retrans, new = gw.frames("retransmission"), gw.frames("new")
    for device in (wearable, quiet):
        with device.lock:
            device.acked.clear()
    for counter in (1, 2, 3, AGED):  # SOS, FALL, a receipt, a check-in
        wearable.publish(sent[counter])
    quiet.publish(quiet_sent[QUIET_TOP - WINDOW])
    wait_for(lambda: gw.rejections("stale_counter") == stale + 5, 10, "five stale replays")
    wearable.publish(sent[AGED + 1])
    quiet.publish(quiet_sent[QUIET_TOP])
    wearable.publish(_v2(wearable, p.CheckIn(DEV, SKIPPED, 80, 0, 0)))
    wearable.publish(_checkin(wearable))
    wearable.wait_acked([AGED + 1, SKIPPED, wearable.counter])
    quiet.wait_acked([QUIET_TOP])
    assert gw.frames("retransmission") == retrans + 2
    assert gw.frames("new") == new + 2
    assert gw.rejections("stale_counter") == stale + 5
    with wearable.lock:
        assert not {1, 2, 3, AGED} & set(wearable.acked)
    with quiet.lock:
        assert set(quiet.acked) == {QUIET_TOP}
    assert [(i["counter"], i["state"]) for i in gw.incidents()] == [(1, "open"), (2, "open")]
    assert len(backend.events) == 2  # nothing raised, nothing forwarded again


def _dc09_event(events, code):
    """The next event of `code` the receiver took (NULL link tests, RP, are skipped)."""
    while True:
        got = events.get(timeout=20)
        if got.code == code:
            return got


def test_pruned_dc09_events_leave_their_sequence_numbers_to_no_new_event(
        mosquitto, gateway_factory, devices, tmp_path):
    # DC-09 pairs a message and its ACK, and a receiver tells a repeat from a new event, by
    # the message's sequence number: each outbox row keeps the one it took at its first
    # attempt. The SQLite outbox's ids are reused once its highest rows are deleted (as
    # pruning the delivered events of a quiet month does): the next alarm must not take the
    # number a pruned event had, or an ARC may take it for that old event sent again.
    port = free_port()
    events = queue.Queue()
    receiver = start_receiver(port, {"1234AB": None}, events)
    try:
        prefix = "retention-dc09-" + uuid.uuid4().hex[:8]
        gw = gateway_factory(mosquitto.port, mqtt={"prefix": prefix},
                             store={"retain_days": 30}, supervision={"check_every_s": 0.2},
                             forward={"backoff_min_s": 0.05, "backoff_max_s": 0.3},
                             **{"forward.dc09": {"host": "127.0.0.1", "port": port,
                                                 "account": "1234AB",
                                                 "null_interval_s": 3600}})
        gw.add_device(DEV, key_for(DEV))
        gw.cli("wearer", "set", "%08x" % DEV, "--name", "W", "--zone", "12")
        gw.start()
        wearable = devices(mosquitto.port, DEV, key_for(DEV), prefix=prefix, client_id=prefix)
        wearable.publish(wearable.alarm(p.SOS))
        first = _dc09_event(events, "PA")
        wait_for(lambda: gw.cli("outbox", "--pending", "--json").stdout.strip() == "", 15,
                 "the SOS delivered")
        gw.stop()
        conn = _db(gw)
        with conn:
            [(taken,)] = _rows(conn, "SELECT max(sequence) FROM dc09_state")
            age = 40 * DAY_S
            conn.execute("UPDATE outbox SET created_at = created_at - ?, next_at = next_at - ?, "
                         "delivered_at = delivered_at - ?", (age, age, age))
        conn.close()

        gw.start()
        wait_for(lambda: any(e["event"] == "pruned" for e in gw.log_events()), 15,
                 "the running gateway's pruning")
        [pruned] = [e for e in gw.log_events() if e["event"] == "pruned"]
        assert pruned["events"] == 1
        wearable.publish(wearable.alarm(p.DURESS))
        second = _dc09_event(events, "HA")
        assert second.sequence != first.sequence, (first.sequence, second.sequence)
        assert int(second.sequence) > taken  # the next number, as for any new event
    finally:
        receiver.stop()
