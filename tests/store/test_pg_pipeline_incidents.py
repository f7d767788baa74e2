# The pipeline's incident rules (incidents.py, the same code as on SQLite) on the PostgreSQL
# store, with the frames of one wearer handed to different workers: a worker knows only what
# the database says, never what it saw itself.
import json

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import NEW, TOPICS, Worker, alarm, key_for, receipt
from vigil_gateway.pipeline import Message

DEV = 0x00C0FFEE
HOOK = "webhook"


@pytest.fixture
def workers(pg_store_url, tmp_path):
    made = [Worker(pg_store_url, tmp_path / "keys", destinations=(HOOK,)) for _ in range(2)]
    made[0].add(DEV)
    yield made
    for worker in made:
        worker.close()


def _incidents(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT counter, kind, state FROM incidents ORDER BY id").fetchall()


def _events(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT key, snapshot FROM outbox ORDER BY id").fetchall()


def test_a_double_tap_another_worker_takes_confirms_the_alarm(workers, pg_store_url):
    first, second = workers
    assert [v.result for v in first.ingest([alarm(DEV, 5)])] == [NEW]
    assert [v.result for v in second.ingest([alarm(DEV, 6, p.DOUBLE_TAP, ref=5)])] == [NEW]
    assert _incidents(pg_store_url) == [(5, "SOS", "needs_help")]
    assert [k for k, _ in _events(pg_store_url)] == ["00c0ffee-5-raised",
                                                     "00c0ffee-5-wearer_confirms"]


def test_a_tap_kept_by_one_worker_joins_its_alarm_arriving_at_another(workers, pg_store_url):
    first, second = workers
    first.ingest([alarm(DEV, 6, p.DOUBLE_TAP, ref=5)])  # before its alarm: kept
    assert _incidents(pg_store_url) == []
    second.ingest([alarm(DEV, 5)])  # no cache of "devices with a kept tap" to miss it
    assert _incidents(pg_store_url) == [(5, "SOS", "needs_help")]


def test_a_late_alarm_is_raised_marked_late_with_its_lateness_in_the_event(workers,
                                                                          pg_store_url):
    first, _ = workers
    first.ingest([alarm(DEV, 5, age=90)], now=1000.0)  # it waited 90 s on the wearable
    [(key, snapshot)] = _events(pg_store_url)
    late = json.loads(snapshot)["late"]
    assert key == "00c0ffee-5-raised"
    assert 80 <= late["late_s"] <= 90  # (the frame carries its age in coarse steps)
    assert late["raised_at"] == 1000.0 - late["late_s"]
    assert first.metrics.late_alarms.values[("age",)] == 1


def test_a_tap_whose_alarm_never_comes_raises_its_incident_at_any_worker(workers,
                                                                        pg_store_url):
    first, second = workers
    first.ingest([alarm(DEV, 6, p.DOUBLE_TAP, ref=5)], now=100.0)
    store = second.store
    with store.transaction():
        assert store.lock_early_tap_devices(100.0 - 30.0) == {}  # not waited long enough
        assert second.pipeline.incidents.promote_early_taps(120.0, 30.0) == []
    with store.transaction():
        assert list(store.lock_early_tap_devices(130.0 - 30.0)) == [DEV]
        [raised] = second.pipeline.incidents.promote_early_taps(130.0, 30.0)
    assert (raised.counter, raised.kind, raised.state) == (5, "SOS", "needs_help")
    first.ingest([alarm(DEV, 5)], now=140.0)  # the alarm itself: it joins, raises nothing
    assert _incidents(pg_store_url) == [(5, "SOS", "needs_help")]


def test_the_wearables_receipt_for_a_prompt_is_audited_as_played(workers, pg_store_url):
    first, second = workers
    first.ingest([alarm(DEV, 5)])
    with first.store.locked([DEV]):
        prompt = first.downlinks.make(DEV, 5, "action", p.PROMPT_DOUBLE_TAP, 11.0)
    second.ingest([receipt(DEV, 6, prompt.counter)], now=12.0)  # heard by another worker
    with psycopg.connect(pg_store_url) as conn:
        audit = [r[0] for r in conn.execute("SELECT event FROM audit ORDER BY id").fetchall()]
    assert audit == ["raised", "prompt_played"]
    assert [k for k, _ in _events(pg_store_url)] == ["00c0ffee-5-raised",
                                                     "00c0ffee-5-prompt_played"]


def test_a_check_in_at_another_worker_updates_the_open_alarm_s_location(workers, pg_store_url):
    first, second = workers
    key = p.DeviceKey(key_for(DEV))

    def located(frame):
        return Message(TOPICS.up(DEV), p.encode(frame, key, 2, size=48))

    first.ingest([located(p.Alarm(DEV, 5, p.SOS, location=(515007000, -1246000, 9, 2)))],
                 now=100.0)
    second.ingest([located(p.CheckIn(DEV, 6, location=(515100000, -1246000, 5, 1)))],
                  now=110.0)  # ~1 km away: news
    second.ingest([located(p.CheckIn(DEV, 7, location=(515100100, -1246000, 5, 1)))],
                  now=120.0)  # 11 m on: none
    events = _events(pg_store_url)
    assert [k for k, _ in events] == ["00c0ffee-5-raised", "00c0ffee-5-location_updated-1"]
    update = json.loads(events[1][1])
    assert update["location"]["lat"] == pytest.approx(51.51)
    assert _incidents(pg_store_url) == [(5, "SOS", "open")]  # and nothing raised
