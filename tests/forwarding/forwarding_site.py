# A gateway's forwarding state without a broker: pipeline, outbox, downlinks and the
# forwarding loop over a clock the test moves, with transports the test controls.
# (A module of its own, not conftest.py: test folders' conftest modules shadow each other.)
import asyncio
import os
import sys

import vigil_protocol as p
from vigil_gateway.db import open_database
from vigil_gateway.downlinks import Downlinks
from vigil_gateway.forwarding import Forwarding
from vigil_gateway.metrics import Metrics
from vigil_gateway.outbox import Outbox
from vigil_gateway.pipeline import REASONS, Message, Pipeline
from vigil_gateway.registry import Registry
from vigil_gateway.store import Store
from vigil_gateway.topics import Topics
from vigil_gateway.wearers import Wearers

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import key_for  # noqa: E402

DEV = 0x00C0FFEE
KEY = key_for(DEV)


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


class Result:
    def __init__(self, ok, error=None, alert=False):
        self.ok, self.error, self.alert = ok, error, alert


class Backend:
    """A destination the test switches up and down; records every attempt."""

    def __init__(self, name="webhook"):
        self.name = name
        self.up = True
        self.attempts = []   # (key, ok)
        self.accepted = []   # keys, in delivery order, duplicates kept

    async def deliver(self, item):
        self.attempts.append((item.key, self.up))
        if self.up:
            self.accepted.append(item.key)
            return Result(True)
        return Result(False, "backend down")

    async def close(self):
        pass


class Site:
    def __init__(self, path, destinations=("webhook",), max_age_s=120.0, rng=lambda: 1.0):
        self.path = path
        self.clock = Clock()
        self.destinations = destinations
        self.max_age_s = max_age_s
        self.rng = rng
        self.open()
        self.registry.add(DEV, KEY, interval_s=60)
        self.counter = 0

    def open(self, transports=None):
        self.conn = open_database(str(self.path))
        self.registry = Registry(self.conn, str(self.path / "keys"), self.clock)
        self.store = Store(self.conn)
        self.wearers = Wearers(self.conn)
        self.metrics = Metrics(REASONS)
        self.outbox = Outbox(self.conn, self.destinations, (1.0, 60.0), self.max_age_s,
                             self.rng)
        self.pipeline = Pipeline(self.registry, self.store, Topics("vigil"), self.metrics,
                                 self.clock, self.outbox)
        self.downlinks = Downlinks(self.conn, self.registry, self.pipeline)
        self.ready = 0
        self.forwarding = Forwarding(self.store, self.outbox, self.downlinks,
                                     transports or [], self.metrics, self.clock, self.pipeline,
                                     self._ready)

    def _ready(self):
        self.ready += 1

    def restart(self, transports=None):
        self.conn.close()
        self.open(transports)

    def alarm(self, kind=p.SOS, ref=0, **ext):
        self.counter += 1
        frame = p.encode(p.Alarm(DEV, self.counter, kind, ref=ref, **ext), p.DeviceKey(KEY))
        self.pipeline.process([Message("vigil/up/%08x" % DEV, frame)])
        return self.counter

    def round(self, transport):
        return asyncio.run(self.forwarding.round(transport))

    def decoded_downlinks(self):
        key = p.DeviceKey(KEY)
        return [p.decode(d.frame, key, p.DOWN) for d in self.downlinks.all(DEV)]
