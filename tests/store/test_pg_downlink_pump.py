# Stored downlinks on PostgreSQL after they are made: the wearable's receipt and the re-offer
# of one not confirmed, handled by whichever worker hears the wearable (pipeline.py on
# downlinks_pg.PostgresDownlinks), and the workers' pumps (downlink_pump_pg.py) publishing
# each one through a real Mosquitto, woken by LISTEN/NOTIFY.
import asyncio
import itertools
import threading
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest

import vigil_protocol as p
from pg_workers import NEW, TOPICS, Worker, alarm, key_for, receipt
from vigil_gateway import config, downlinks_pg
from vigil_gateway.downlink_pump_pg import PostgresDownlinkPump
from vigil_gateway.downlinks_pg import Listener, PostgresDownlinks
from vigil_gateway.mqtt_link import MqttLink
from vigil_gateway.registry_pg import PostgresRegistry
from vigil_gateway.store_pg import PostgresStore

DEV = 0x00C0FFEE
_ids = itertools.count(1)  # client ids: no test resumes another's session on the broker


@pytest.fixture
def workers(pg_store_url, tmp_path):
    made = [Worker(pg_store_url, tmp_path / "keys") for _ in range(2)]
    yield made
    for worker in made:
        worker.close()


def _make(worker, device_id, ref, code=p.DELIVERED, kind="ack", at=10.0):
    with worker.store.locked([device_id]):
        return worker.downlinks.make(device_id, ref, kind, code, at)


def _send(worker, at):
    """What a pump does once the broker's PUBACK took them: every due one marked sent."""
    claimed = worker.downlinks.claim(lease_s=60)
    assert all(worker.downlinks.sent(d, at) for d in claimed)
    return claimed


def test_a_receipt_heard_by_another_worker_confirms_its_downlink(workers):
    first, second = workers
    first.add(DEV)
    first.ingest([alarm(DEV, 5)], now=10.0)  # its RECEIVED ack took counter 1
    made = _make(first, DEV, 5)
    assert made.counter == 2
    assert p.decode(made.frame, p.DeviceKey(key_for(DEV)), p.DOWN).code == p.DELIVERED
    _send(first, at=11.0)
    [outcome] = second.ingest([receipt(DEV, 6, made.counter)], now=12.0)
    assert outcome.result == NEW and outcome.ack_counter is None  # a receipt is not acked
    [stored] = first.downlinks.all(DEV)
    assert stored.confirmed_at == 12.0
    assert second.metrics.receipts.values[("confirmed",)] == 1
    second.ingest([alarm(DEV, 7)], now=100.0)  # heard long after: nothing to offer again
    assert first.downlinks.all(DEV)[0].mqtt_sent_at == 11.0


def test_an_unconfirmed_downlink_is_offered_again_once_its_wait_is_over(workers, pg_store_url):
    first, second = workers
    first.add(DEV)
    made = _make(first, DEV, 5)
    _send(first, at=20.0)
    second.ingest([alarm(DEV, 1)], now=25.0)  # 5 s after it went out: too soon
    assert first.downlinks.all(DEV)[0].mqtt_sent_at == 20.0
    with psycopg.connect(pg_store_url, autocommit=True) as listener:
        listener.execute("LISTEN %s" % downlinks_pg.CHANNEL)
        second.ingest([alarm(DEV, 2)], now=31.0)  # 11 s after: offered again, pumps woken
        woken = list(listener.notifies(timeout=30, stop_after=1))
    [again] = first.downlinks.all(DEV)
    assert (again.mqtt_sent_at, again.offers) == (None, 1)
    assert [n.payload for n in woken] == [str(DEV)]
    assert [d.id for d in second.downlinks.claim(lease_s=60)] == [made.id]  # any pump's now


class _Wearables:
    """A subscriber on every device's downlink topic (MQTT 5, QoS 1), as the wearables'
    sessions are: what it received, by device."""

    def __init__(self, port):
        self.got = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="wearables-%d" % next(_ids), protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, props: c.subscribe(
            TOPICS.down(DEV).rsplit("/", 1)[0] + "/+", qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def _settings(port, name, tmp_path):
    return config.load_dict({"gateway": {"data_dir": str(tmp_path / name)},
                             "mqtt": {"host": "127.0.0.1", "port": port, "client_id": name}},
                            str(tmp_path)).mqtt


async def _pumps(url, keys_dir, port, tmp_path, n, poll_s, run=True):
    """n workers' links and pumps, each pump on a connection of its own, running (or, with
    run False, left for the test to call round())."""
    made = []
    for index in range(n):
        store = PostgresStore(url)
        registry = PostgresRegistry(store, str(keys_dir))
        name = "worker%d-%d" % (index, next(_ids))
        link = MqttLink(_settings(port, name, tmp_path), TOPICS, lambda m: None)
        pump = PostgresDownlinkPump(PostgresDownlinks(store, registry), link, TOPICS,
                                    Listener(url), poll_s=poll_s, lease_s=10.0)
        tasks = [asyncio.create_task(link.run())]
        if run:
            tasks.append(asyncio.create_task(pump.run()))
        made.append((store, link, pump, tasks))
    for _, link, _, _ in made:
        await asyncio.wait_for(link.connected.wait(), 10)
    return made


async def _stop(pumps):
    for store, link, pump, tasks in pumps:
        for task in tasks[1:]:
            task.cancel()
        link.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        store.close()


def test_pumps_of_two_workers_publish_each_downlink_once_woken_by_notify(
        pg_store_url, tmp_path, mosquitto):
    devices = (0x41, 0x42, 0x43)
    maker = Worker(pg_store_url, tmp_path / "keys")
    wearables = _Wearables(mosquitto.port)
    try:
        for device_id in devices:
            maker.add(device_id)

        async def scenario():
            # polling once a minute: only a NOTIFY can get these out within the test
            pumps = await _pumps(pg_store_url, tmp_path / "keys", mosquitto.port, tmp_path, 2,
                                 poll_s=60)
            try:
                await asyncio.sleep(0.5)  # both idle, listening
                for ref in range(1, 11):
                    for device_id in devices:
                        _make(maker, device_id, ref)
                deadline = time.monotonic() + 30
                while len(wearables.got) < 30 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # a second copy, if any, would come by now
            finally:
                await _stop(pumps)

        asyncio.run(scenario())
        stored = maker.downlinks.all()
        assert len(wearables.got) == 30
        assert sorted(wearables.got) == sorted((TOPICS.down(d.device_id), d.frame)
                                               for d in stored)  # each once
        assert all(d.mqtt_sent_at is not None for d in stored)
    finally:
        wearables.stop()
        maker.close()


def test_a_downlink_no_session_takes_waits_and_goes_when_its_device_is_heard(
        pg_store_url, tmp_path, mosquitto_factory):
    # A broker of its own: on the shared one, a session another test left subscribed to the
    # device's topic (persistent sessions keep their subscriptions) would take the downlink.
    mosquitto = mosquitto_factory()
    worker = Worker(pg_store_url, tmp_path / "keys")  # nobody subscribes to its topic
    try:
        worker.add(DEV)
        _make(worker, DEV, 5)

        async def one_round():
            pumps = await _pumps(pg_store_url, tmp_path / "keys", mosquitto.port, tmp_path, 1,
                                 poll_s=60, run=False)
            try:
                return await pumps[0][2].round()
            finally:
                await _stop(pumps)

        assert asyncio.run(one_round()) == 1  # published: PUBACK 16, no subscriber
        [d] = worker.downlinks.all(DEV)
        assert d.mqtt_sent_at is None
        assert worker.downlinks.claim(lease_s=60) == []  # it waits (5 s, doubling)
        worker.ingest([alarm(DEV, 1)], now=50.0)  # the wearable is back: due at once
        assert [c.id for c in worker.downlinks.claim(lease_s=60)] == [d.id]
    finally:
        worker.close()
