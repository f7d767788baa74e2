# Retention on PostgreSQL (retention.py unchanged, on store_pg, outbox_pg and downlinks_pg):
# old frames go and every worker refuses their copies as stale; delivered events and sent
# downlinks go, waiting ones stay.
import time

import pytest

import vigil_protocol as p
from pg_workers import TOPICS, Worker, key_for
from vigil_gateway.downlinks_pg import PostgresDownlinks
from vigil_gateway.outbox_pg import ForwardingOutbox
from vigil_gateway.pipeline import WINDOW_SIZE, Message
from vigil_gateway.retention import DAY_S, Retention

DEV = 0x00C0FFEE
NOW = 1_800_000_000.0


@pytest.fixture
def workers(pg_store_url, tmp_path):
    made = [Worker(pg_store_url, tmp_path / "keys", destinations=("webhook",))
            for _ in range(2)]
    made[0].add(DEV)
    yield made
    for worker in made:
        worker.close()


def _retention(worker):
    return Retention(worker.store, ForwardingOutbox(worker.store.outbox),
                     PostgresDownlinks(worker.store, worker.registry), 30, WINDOW_SIZE)


def _frame(frame):
    return Message(TOPICS.up(DEV), p.encode(frame, p.DeviceKey(key_for(DEV)), 2))


def checkin(counter):
    return _frame(p.CheckIn(DEV, counter, battery=80, interval=300))


def _send(worker, now, *messages):
    return [v.result for v in worker.ingest(list(messages), now=now)]


def test_old_frames_go_and_every_worker_refuses_their_copies_as_stale(workers):
    first, second = workers
    alarm = _frame(p.Alarm(DEV, 1, p.DURESS))
    old = [checkin(c) for c in range(2, 201) if c != 150]  # 150 never reached the gateway
    assert _send(first, NOW, alarm, *old) == ["new"] * 199
    later = NOW + 40 * DAY_S
    assert _send(second, later, *[checkin(c) for c in range(201, 211)]) == ["new"] * 10
    gone = _retention(second).prune(later)
    # everything older than 30 days but the device's 64 highest counters (147-210)
    assert gone["frames"] == 146 and first.store.frame_count(DEV) == 199 + 10 - 146
    # the worker that stored them has nothing cached to forget: it reads the floor
    assert _send(first, later, alarm, checkin(100), checkin(146)) == ["stale_counter"] * 3
    assert _send(first, later, checkin(150), checkin(147), checkin(205)) == [
        "new", "retransmission", "retransmission"]
    assert [c for c, _ in first.store.alarm_incidents(DEV)] == [1]  # the record stays


def test_the_window_survives_a_device_that_went_quiet(workers):
    first, second = workers
    _send(first, NOW, *[checkin(c) for c in range(1, 31)])
    assert _retention(second).prune(NOW + 400 * DAY_S)["frames"] == 0  # all its highest
    assert _send(first, NOW + 400 * DAY_S, checkin(30)) == ["retransmission"]


def test_delivered_events_and_sent_downlinks_go_waiting_ones_stay(workers):
    first, _ = workers
    now = time.time()  # (delivered_at is the database's clock: the workers' must agree)
    _send(first, now, _frame(p.Alarm(DEV, 1, p.SOS)), _frame(p.Alarm(DEV, 2, p.SOS)))
    outbox = ForwardingOutbox(first.store.outbox)
    [raised] = outbox.due("webhook", now, limit=1)  # the first incident's raise
    assert outbox.delivered(raised, now)
    with first.store.locked([DEV]):
        sent = first.downlinks.make(DEV, 1, "ack", p.DELIVERED, now)
        first.downlinks.make(DEV, 2, "action", p.ACKNOWLEDGED, now)  # never sent: stays
    claimed = first.downlinks.claim(lease_s=60)
    assert first.downlinks.sent(claimed[0], now) and claimed[0].id == sent.id
    gone = _retention(first).prune(now + 31 * DAY_S)
    assert (gone["events"], gone["downlinks"]) == (1, 1)
    assert [d.ref for d in first.downlinks.all(DEV)] == [2]
    assert outbox.pending_counts() == {"webhook": 1}
