# Persist before ack on PostgreSQL: a worker publishes the wearable's RECEIVED ack, and sends
# the broker its PUBACK, only once the batch's transaction has committed. The test holds the
# commit itself: a deferred constraint trigger on `frames` (it fires at COMMIT) waits for an
# advisory lock the test holds, so the batch has written its frame and waits in COMMIT. Until
# the test lets it go there is no ack at the wearable, no PUBACK to the broker, and nothing to
# see from another connection; a commit that fails acks nothing either, and the batch goes
# through once the database takes it.
import asyncio
import threading
import time

import psycopg

import vigil_protocol as p
from pg_workers import key_for
from test_pg_workers_mqtt import DEVICES, _config, _ids, _Wearables
from vigil_gateway.mqtt_link import MqttLink
from vigil_gateway.registry_pg import PostgresRegistry
from vigil_gateway.service_pg import PostgresGateway
from vigil_gateway.store_pg import PostgresStore

DEV = DEVICES[0]
HOLD = 4242  # the advisory lock the trigger waits for

_TRIGGER = """
CREATE TABLE vigil_test_refuse (why text);
CREATE FUNCTION vigil_test_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM vigil_test_refuse) THEN
        RAISE EXCEPTION 'the test refuses this commit';
    END IF;
    PERFORM pg_advisory_xact_lock(%d);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER vigil_test_hold AFTER INSERT ON frames
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION vigil_test_at_commit();
""" % HOLD


class _RecordingLink(MqttLink):
    """The real MQTT link, noting when it sends the broker a PUBACK (ack())."""

    pubacks = []

    def ack(self, token):
        _RecordingLink.pubacks.append(time.monotonic())
        MqttLink.ack(self, token)


def _frames(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM frames").fetchone()[0]


def _worker(config, url):
    started, box = threading.Event(), {}

    def run():
        async def main():
            box["loop"] = asyncio.get_running_loop()
            gateway = box["gateway"] = PostgresGateway(config, url, link_factory=_RecordingLink)
            task = asyncio.create_task(gateway.run())
            await asyncio.wait_for(gateway.link.connected.wait(), 10)
            started.set()
            await task

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    return box, thread


def test_the_ack_and_the_puback_wait_for_the_commit(pg_store_url, tmp_path, mosquitto_factory):
    # a broker of its own: the session's broker holds other tests' retained status messages,
    # and the worker would PUBACK those too
    mosquitto = mosquitto_factory()
    store = PostgresStore(pg_store_url)
    PostgresRegistry(store, str(tmp_path / "gateway" / "keys")).add(
        DEV, key_for(DEV), counter_floor=1)
    store.close()
    with psycopg.connect(pg_store_url, autocommit=True) as conn:
        conn.execute(_TRIGGER)
    holder = psycopg.connect(pg_store_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
    _RecordingLink.pubacks = []
    box, thread = _worker(_config(tmp_path, mosquitto.port, "persist-%d" % next(_ids)),
                          pg_store_url)
    wearables = _Wearables(mosquitto.port)
    try:
        frame = p.encode(p.Alarm(DEV, 1, p.SOS), p.DeviceKey(key_for(DEV)), 2)
        wearables.publish(DEV, frame)
        time.sleep(2.0)  # the batch is written and waits in COMMIT
        assert wearables.acks[DEV] == [] and _RecordingLink.pubacks == []
        assert _frames(pg_store_url) == 0  # not committed: nobody else sees it
        released = time.monotonic()
        holder.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not wearables.acks[DEV]:
            time.sleep(0.05)
        assert [ref for _, ref in wearables.acks[DEV]] == [1]
        assert len(_RecordingLink.pubacks) == 1 and _RecordingLink.pubacks[0] >= released
        assert _frames(pg_store_url) == 1

        # A commit that fails: nothing acked, nothing PUBACKed; taken once the database can.
        with psycopg.connect(pg_store_url, autocommit=True) as conn:
            conn.execute("INSERT INTO vigil_test_refuse VALUES ('the disk')")
        wearables.publish(DEV, p.encode(p.Alarm(DEV, 2, p.SOS), p.DeviceKey(key_for(DEV)), 2))
        time.sleep(3.0)
        assert [ref for _, ref in wearables.acks[DEV]] == [1] and \
            len(_RecordingLink.pubacks) == 1
        assert _frames(pg_store_url) == 1
        with psycopg.connect(pg_store_url, autocommit=True) as conn:
            conn.execute("DELETE FROM vigil_test_refuse")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(wearables.acks[DEV]) < 2:
            time.sleep(0.05)
        assert sorted(ref for _, ref in wearables.acks[DEV]) == [1, 2]
        assert len(_RecordingLink.pubacks) == 2 and _frames(pg_store_url) == 2
    finally:
        wearables.stop()
        holder.close()
        box["loop"].call_soon_threadsafe(box["gateway"].stop)
        thread.join(30)
