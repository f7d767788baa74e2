# vigil_gateway_commit_seconds on a PostgreSQL worker times the batch's COMMIT itself: a
# deferred trigger on `frames` (it fires at COMMIT) makes each COMMIT take 0.3 s more, and every
# observation is that long, one per batch committed (as many as vigil_gateway_commits_total).
import asyncio
import threading
import time

import psycopg
from prometheus_client.parser import text_string_to_metric_families

import vigil_protocol as p
from pg_workers import key_for
from test_pg_workers_mqtt import DEVICES, _config, _ids, _Wearables
from vigil_gateway.registry_pg import PostgresRegistry
from vigil_gateway.service_pg import PostgresGateway
from vigil_gateway.store_pg import PostgresStore

DEV = DEVICES[0]
SLOW_S = 0.3

_SLOW_COMMIT = """
CREATE FUNCTION vigil_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(%s);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER vigil_test_slow AFTER INSERT ON frames
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION vigil_test_slow_commit();
""" % SLOW_S


def _commits(gateway):
    """(commits_total, the histogram's count, its sum, {le: cumulative count}) as /metrics
    shows them."""
    families = {f.name: f for f in text_string_to_metric_families(gateway.metrics.render())}
    histogram = families["vigil_gateway_commit_seconds"]
    assert histogram.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    buckets = {float(le): v for (name, le), v in values.items() if name.endswith("_bucket")}
    total = [s.value for s in families["vigil_gateway_commits"].samples
             if s.name == "vigil_gateway_commits_total"][0]
    return (total, values[("vigil_gateway_commit_seconds_count", None)],
            values[("vigil_gateway_commit_seconds_sum", None)], buckets)


def test_the_histogram_times_each_commit(pg_store_url, tmp_path, mosquitto_factory):
    mosquitto = mosquitto_factory()  # its own: no other test's retained messages to commit
    store = PostgresStore(pg_store_url)
    PostgresRegistry(store, str(tmp_path / "gateway" / "keys")).add(
        DEV, key_for(DEV), counter_floor=1)
    store.close()
    with psycopg.connect(pg_store_url, autocommit=True) as conn:
        conn.execute(_SLOW_COMMIT)
    started, box = threading.Event(), {}

    def run():
        async def main():
            box["loop"] = asyncio.get_running_loop()
            gateway = box["gateway"] = PostgresGateway(
                _config(tmp_path, mosquitto.port, "commit-%d" % next(_ids)), pg_store_url)
            task = asyncio.create_task(gateway.run())
            await asyncio.wait_for(gateway.link.connected.wait(), 10)
            started.set()
            await task

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    wearables = _Wearables(mosquitto.port)
    try:
        gateway = box["gateway"]
        assert _commits(gateway)[:2] == (0, 0)
        for counter in (1, 2, 3):  # one at a time: a batch (and a COMMIT) each
            wearables.publish(DEV, p.encode(p.Alarm(DEV, counter, p.SOS),
                                            p.DeviceKey(key_for(DEV)), 2))
            _wait(lambda: len(wearables.acks[DEV]) == counter)
        total, count, seconds, buckets = _commits(gateway)
        assert total == count == 3
        assert buckets[0.2] == 0 and buckets[0.5] == 3  # each one took the trigger's 0.3 s
        assert 3 * SLOW_S <= seconds < 3 * 0.5
    finally:
        wearables.stop()
        box["loop"].call_soon_threadsafe(box["gateway"].stop)
        thread.join(30)


def _wait(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("no ack")
