# The stored-downlink pump of one worker on PostgreSQL (service.py's pump is SQLite's): it
# publishes the downlinks it claims (downlinks_pg.PostgresDownlinks) on their devices' MQTT
# topics; the broker routes each to its wearable, whichever worker published it.
#
# Rules:
#   the pump sleeps until a downlink is made or re-offered by any worker (LISTEN, on a thread of
#   its own), or poll_s passes (a due retry, a lease run out, a notification lost with a
#   connection);
#   a claimed downlink is published once (QoS 1, confirmed); sent is written only when the
#   broker's PUBACK took it (reason 0); one not taken (16: no session subscribed; a refusal)
#   waits and is offered again (downlinks_pg.RETRY_S), and at once when its device is next
#   heard from; no PUBACK within the lease leaves it to whichever worker claims it next;
#   nothing is claimed while the broker is not connected;
#   the pump uses a connection of its own (its PostgresStore): its short transactions never
#   join an ingest batch's;
#   a store failure is logged and the round tried again: it never stops the pump.
import asyncio
import logging
import threading
import time

import vigil_protocol as p

from . import logs
from .errors import StoreError
from .mqtt_link import NO_SUBSCRIBERS, NOT_QUEUED

log = logging.getLogger("vigil_gateway.downlinks")


class PostgresDownlinkPump:
    def __init__(self, downlinks, link, topics, listener, metrics=None, clock=time.time,
                 lease_s=30.0, poll_s=5.0, batch=200):
        self.downlinks = downlinks  # PostgresDownlinks on the pump's own PostgresStore
        self.link = link            # publish(topic, payload, confirm=True), connected (Event)
        self.topics = topics
        self.listener = listener    # downlinks_pg.Listener
        self.metrics = metrics
        self.clock = clock
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.batch = batch
        self.wake = asyncio.Event()
        self._stopped = threading.Event()

    async def run(self):
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._listen, args=(loop,), daemon=True,
                                  name="vigil-downlinks-listen")
        thread.start()
        try:
            while True:
                self.wake.clear()
                if self.link.connected.is_set():
                    try:
                        await self.round()
                    except StoreError as exc:
                        logs.event(log, logging.ERROR, "downlink_pump_failed", error=str(exc))
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._stopped.set()

    def _listen(self, loop):
        while not self._stopped.is_set():
            if self.listener.wait(1.0) and not self._stopped.is_set():
                try:
                    loop.call_soon_threadsafe(self.wake.set)
                except RuntimeError:  # the loop is closed: the pump is over
                    return
        self.listener.close()

    async def round(self):
        """Claim what is due, publish it, and record what the broker answered; returns the
        number published."""
        claimed = self.downlinks.claim(self.lease_s, self.batch)
        if not claimed:
            return 0
        waiting = {}
        for d in claimed:
            future = self.link.publish(self.topics.down(d.device_id), d.frame, confirm=True)
            waiting[future] = d
        done, _ = await asyncio.wait(list(waiting), timeout=self.lease_s / 2)
        for future in done:
            d = waiting[future]
            reason = future.result()
            what = "DELIVERED" if d.kind == "ack" else p.ACTIONS.get(d.code, str(d.code))
            if reason == 0:
                self.downlinks.sent(d, self.clock())
                if self.metrics is not None:
                    self.metrics.downlinks.inc("mqtt", what)
                logs.event(log, logging.INFO, "downlink_sent", path="mqtt", what=what,
                           device="%08x" % d.device_id, ref=d.ref, counter=d.counter)
            else:
                self.downlinks.not_taken(d)
                name = ("no_subscriber" if reason == NO_SUBSCRIBERS else
                        "not_queued" if reason == NOT_QUEUED else "refused")
                if self.metrics is not None:
                    self.metrics.downlink_retries.inc(name)
                logs.event(log, logging.WARNING, "downlink_not_taken",
                           device="%08x" % d.device_id, ref=d.ref, counter=d.counter,
                           reason=name, code=reason)
        return len(claimed)
