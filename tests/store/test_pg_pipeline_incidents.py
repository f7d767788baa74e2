# The pipeline's incident rules (incidents.py, the same code as on SQLite) on the PostgreSQL
# store, with the frames of one wearer handed to different workers: a worker knows only what
# the database says, never what it saw itself.
import json

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import NEW, Worker, alarm

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
