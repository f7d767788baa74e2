# Gateway workers on one PostgreSQL database, as the tests drive them: each one the real
# pipeline (pipeline.py) on the PostgreSQL device state, fed signed frames, its outcomes
# reduced to what the store tests check (the verdict, the RECEIVED ack's counter).
from collections import namedtuple

import vigil_protocol as p
from vigil_gateway import StoreError
from vigil_gateway.device_state_pg import PostgresDeviceState
from vigil_gateway.downlinks_pg import PostgresDownlinks
from vigil_gateway.metrics import Metrics
from vigil_gateway.pipeline import REASONS, Message, Pipeline
from vigil_gateway.registry_pg import PostgresRegistry
from vigil_gateway.store_pg import PostgresStore
from vigil_gateway.topics import Topics

NEW = p.NEW
RETRANSMISSION = p.RETRANSMISSION
COUNTER_REUSE = "counter_reuse"
STALE_COUNTER = "stale_counter"
UNKNOWN_DEVICE = "unknown_device"
REVOKED_DEVICE = "revoked_device"

TOPICS = Topics("vigil")
# ack_counter: the downlink counter of the signed RECEIVED ack that went back (None: none)
Verdict = namedtuple("Verdict", "device_id counter result ack_counter")


def key_for(device_id):
    return bytes((device_id * 11 + i) & 0xFF for i in range(32))


def register(url, keys_dir, devices):
    """Register `devices` on the database `url` with their test keys (key_for), as
    `vigil gateway device add` would, their key files under `keys_dir`."""
    store = PostgresStore(url)
    try:
        registry = PostgresRegistry(store, str(keys_dir))
        for device_id in devices:
            registry.add(device_id, key_for(device_id), counter_floor=1)
    finally:
        store.close()


def alarm(device_id, counter, kind=p.SOS, ref=0, age=None):
    """An alarm as the wearable sends it: signed, v2, on the device's uplink topic."""
    frame = p.Alarm(device_id, counter, kind, ref=ref, age=age)
    return Message(TOPICS.up(device_id), p.encode(frame, p.DeviceKey(key_for(device_id)), 2))


def receipt(device_id, counter, downlink_counter):
    """The wearable's receipt for the stored downlink it verified."""
    frame = p.Receipt(device_id, counter, downlink_counter)
    return Message(TOPICS.up(device_id), p.encode(frame, p.DeviceKey(key_for(device_id)), 2))


def checkin(device_id, counter, interval=0):
    frame = p.CheckIn(device_id, counter, interval=interval)
    return Message(TOPICS.up(device_id), p.encode(frame, p.DeviceKey(key_for(device_id)), 2))


class Worker:
    """One gateway worker: its own connection, pipeline and clock."""

    def __init__(self, url, keys_dir, **store_options):
        self.store = PostgresStore(url, **store_options)
        self.registry = PostgresRegistry(self.store, str(keys_dir), clock=lambda: 1.0)
        self.now = 10.0
        self.metrics = Metrics(REASONS)
        # every retransmission acked (the re-ack limit is a worker's own, and not tested here)
        self.pipeline = Pipeline(self.registry, self.store, TOPICS, self.metrics,
                                 lambda: self.now, self.store.events, reack_interval_s=0,
                                 state=PostgresDeviceState(self.store))
        self.downlinks = PostgresDownlinks(self.store, self.registry, self.pipeline)

    def add(self, device_id, counter_floor=1, interval_s=None):
        self.registry.add(device_id, key_for(device_id), interval_s=interval_s,
                          counter_floor=counter_floor)

    def ingest(self, messages, now=10.0):
        """One batch through the pipeline, committed: its Verdicts."""
        self.now = now
        return [verdict(o) for o in self.pipeline.process(messages)]

    def write(self, messages, now=10.0):
        """The batch up to its commit, the transaction (and the devices' locks) held."""
        self.now = now
        return [verdict(o) for o in self.pipeline.write(messages)]

    def commit(self):
        try:
            self.pipeline.state.commit()
        except self.pipeline.state.errors as exc:
            raise StoreError(str(exc)) from None

    def close(self):
        self.store.close()


def verdict(outcome):
    ack = None
    if outcome.downlink is not None:
        key = p.DeviceKey(key_for(outcome.device_id))
        ack = p.decode(outcome.downlink[1], key, p.DOWN).counter
    return Verdict(outcome.device_id, outcome.counter, outcome.reason or outcome.result, ack)
