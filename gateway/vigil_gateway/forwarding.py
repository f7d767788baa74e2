# The forwarding loops: outbox rows to their destinations, DELIVERED acks back to the wearable.
#
# Rules:
#   one loop per destination; each round takes the due rows (the oldest undelivered row of each
#   incident whose time has come) and delivers them one by one, in row order;
#   a delivered row and, for an alarm's `raised` event, the DELIVERED downlink are written in
#   one transaction (the downlink once per alarm, whichever destination accepted first);
#   a failed row backs off (outbox.failed); a refusal the destination will repeat (DC-09 DUH, an
#   unknown account) is an operator alert each time it happens: logged at error and counted;
#   rows older than forward.max_event_age_s raise one alert each (log + metric) and stay queued;
#   the loop sleeps until the next row is due, or until woken (a commit queued new rows);
#   a link that comes back (a NULL link test, or any row, accepted after the transport's
#   link_up was False) makes every row queued for that destination due at once, oldest first:
#   a receiver back after an outage gets the queue now, not at each row's backed-off time;
#   while the link is down NULL link tests run every probe_interval_s, not null_interval_s.
import asyncio
import logging
import time

import vigil_protocol as p

from . import logs
from .downlinks import ACK
from .registry import device_hex

log = logging.getLogger("vigil_gateway.forwarding")
_IDLE_S = 1.0


class _Wake:
    """One asyncio.Event per destination loop; set() wakes them all."""

    def __init__(self, names):
        self.events = {name: asyncio.Event() for name in names}

    def set(self):
        for event in self.events.values():
            event.set()


class Forwarding:
    def __init__(self, store, outbox, downlinks, transports, metrics, clock, pipeline,
                 downlink_ready):
        self.store = store
        self.outbox = outbox
        self.downlinks = downlinks
        self.transports = list(transports)
        self.metrics = metrics
        self.clock = clock
        self.pipeline = pipeline
        self.downlink_ready = downlink_ready  # called after a downlink is stored
        self.wake = _Wake([t.name for t in self.transports])
        self.link_ok = {}  # destination -> result of its last NULL link test

    def tasks(self, null_interval_s=None, probe_interval_s=None):
        made = [asyncio.create_task(self.run(t), name="forward-" + t.name)
                for t in self.transports]
        made.append(asyncio.create_task(self._watch_age(), name="forward-age"))
        for t in self.transports:
            if hasattr(t, "link_test") and null_interval_s:
                made.append(asyncio.create_task(
                    self._link_tests(t, null_interval_s, probe_interval_s or null_interval_s),
                    name="dc09-null"))
        return made

    async def run(self, transport):
        wake = self.wake.events[transport.name]
        while True:
            wake.clear()  # before the round: a commit during it wakes the next one at once
            try:
                await self.round(transport)
            except Exception as exc:  # a forwarding fault must not stop the gateway
                logs.event(log, logging.ERROR, "forwarding_failed", destination=transport.name,
                           error=repr(exc))
                await asyncio.sleep(_IDLE_S)
            next_at = self.outbox.next_due_at(transport.name)
            delay = _IDLE_S if next_at is None else max(0.0, min(_IDLE_S, next_at - self.clock()))
            if delay > 0:
                try:
                    await asyncio.wait_for(wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def round(self, transport):
        """Deliver every due row once; returns how many were delivered."""
        delivered = 0
        for item in self.outbox.due(transport.name, self.clock()):
            was_down = getattr(transport, "link_up", None) is False
            result = await transport.deliver(item)
            now = self.clock()
            if result.ok:
                self._delivered(transport, item, now)
                delivered += 1
                if was_down:
                    self.link_back(transport, "delivery")
                continue
            with self.store.transaction():
                delay = self.outbox.failed(item, now, result.error or "failed")
            self.metrics.forward_attempts.inc(transport.name, "failed")
            level = logging.ERROR if getattr(result, "alert", False) else logging.WARNING
            if level == logging.ERROR:
                self.metrics.forward_alerts.inc(transport.name, "refused")
            logs.event(log, level, "forward_failed", destination=transport.name,
                       incident=item.incident_id, what=item.event, key=item.key,
                       attempts=item.attempts + 1, error=result.error,
                       retry_in_s=round(delay, 3))
        return delivered

    def _delivered(self, transport, item, now):
        downlink = None
        snapshot = item.snapshot
        try:
            with self.store.transaction():
                self.outbox.delivered(item, now)
                counter = snapshot["incident"]["counter"]
                if item.event == "raised" and counter is not None:
                    downlink = self.downlinks.make(item.device_id, counter, ACK, p.DELIVERED, now)
        except Exception:
            self.pipeline.forget()  # a counter may have been allocated and rolled back
            raise
        self.metrics.forward_attempts.inc(transport.name, "delivered")
        logs.event(log, logging.INFO, "forward_delivered", destination=transport.name,
                   incident=item.incident_id, what=item.event, key=item.key,
                   device=device_hex(item.device_id))
        if downlink is not None:
            self.downlink_ready()

    async def _watch_age(self):
        while True:
            now = self.clock()
            with self.store.transaction():
                old = self.outbox.too_old(now)
            for item in old:
                self.metrics.forward_alerts.inc(item.destination, "too_old")
                logs.event(log, logging.ERROR, "forward_overdue", destination=item.destination,
                           incident=item.incident_id, what=item.event, key=item.key,
                           age_s=round(now - item.created_at, 1), attempts=item.attempts,
                           last_error=item.last_error)
            self.metrics.forward_overdue.set(self.outbox.overdue_count(now))
            await asyncio.sleep(_IDLE_S)

    def link_back(self, transport, how):
        """The destination answers again: everything queued for it is due now."""
        with self.store.transaction():
            queued = self.outbox.retry_now(transport.name, self.clock())
        logs.event(log, logging.INFO, "forward_link_back", destination=transport.name, how=how,
                   queued=queued)
        self.wake.events[transport.name].set()

    async def link_test(self, transport):
        """One NULL link test; answered after a failed one (or a link seen down), the link is
        back."""
        was_down = self.link_ok.get(transport.name) is False or \
            getattr(transport, "link_up", None) is False
        result = await transport.link_test()
        self.link_ok[transport.name] = result.ok
        self.metrics.dc09_link.set(1 if result.ok else 0)
        if result.ok and was_down:
            self.link_back(transport, "link_test")
        if not result.ok:
            logs.event(log, logging.ERROR, "dc09_link_test_failed", error=result.error)
        return result

    async def _link_tests(self, transport, interval_s, probe_s):
        # Wakes every probe_s so that a link seen down (by a NULL or by a row) is probed that
        # often at once, not after the rest of a null_interval_s sleep.
        step = min(interval_s, probe_s)
        last = time.monotonic()
        while True:
            await asyncio.sleep(step)
            down = self.link_ok.get(transport.name) is False or \
                getattr(transport, "link_up", None) is False
            if down or time.monotonic() - last >= interval_s - step / 2:
                last = time.monotonic()
                await self.link_test(transport)
