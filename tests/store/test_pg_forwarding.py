# Forwarding across workers on PostgreSQL: forwarding.py's own loops, each worker's on its
# own connection, over outbox_pg.ForwardingOutbox (claims with a lease) and PostgresDownlinks:
# every incident event delivered once, in order per incident; one DELIVERED downlink per
# alarm, with a counter of its own; a one-sender destination (DC-09) served by one worker at a
# time.
import asyncio
import threading
import time

import psycopg

import vigil_protocol as p
from pg_workers import Worker, alarm, key_for
from vigil_gateway.dc09_pg import PostgresDc09State
from vigil_gateway.forwarding import Forwarding
from vigil_gateway.outbox_pg import ForwardingOutbox

HOOK = "webhook"
DEVICES = tuple(range(0x51, 0x57))


class _Result:
    def __init__(self, ok, error=None):
        self.ok, self.error, self.alert = ok, error, False


class _Backend:
    """A responder backend shared by the workers' destinations: what it accepted, in order,
    and by whom."""

    def __init__(self):
        self.accepted = []  # (worker, key)


class _Destination:
    def __init__(self, backend, worker_name, name=HOOK):
        self.backend = backend
        self.worker_name = worker_name
        self.name = name

    async def deliver(self, item):
        await asyncio.sleep(0.002)  # the exchange: the other worker's loop runs meanwhile
        self.backend.accepted.append((self.worker_name, item.key))
        return _Result(True)

    async def close(self):
        pass


def _forwarding(worker, destination, senders=None, lease_s=30.0):
    outbox = ForwardingOutbox(worker.store.outbox, (0.05, 0.2), 120.0, lease_s,
                              senders=senders)
    return Forwarding(worker.store, outbox, worker.downlinks, [destination], worker.metrics,
                      time.time, worker.pipeline, lambda: None)


def _pending(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                            ).fetchone()[0]


def _run_loops(forwardings, url, timeout=60):
    """Each worker's loop on an event loop (thread) of its own, until nothing is pending."""
    done = threading.Event()
    errors = []

    def run(forwarding):
        async def main():
            task = asyncio.create_task(forwarding.run(forwarding.transports[0]))
            while not done.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        try:
            asyncio.run(main())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in forwardings]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    while _pending(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a second delivery of anything, if there were one, would be in by now
    done.set()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_workers_deliver_every_event_once_in_order_with_one_delivered_ack_per_alarm(
        pg_store_url, tmp_path):
    workers = [Worker(pg_store_url, tmp_path / "keys", destinations=(HOOK,)) for _ in range(3)]
    backend = _Backend()
    try:
        for device_id in DEVICES:
            workers[0].add(device_id)
        for counter in range(1, 6):  # per device: 5 alarms, each confirmed by a double tap
            workers[0].ingest([alarm(d, counter) for d in DEVICES])
            workers[1].ingest([alarm(d, 100 + counter, p.DOUBLE_TAP, ref=counter)
                               for d in DEVICES])
        _run_loops([_forwarding(w, _Destination(backend, i)) for i, w in enumerate(workers)],
                   pg_store_url)
        keys = [key for _, key in backend.accepted]
        expected = ["%08x-%d-%s" % (d, c, e) for d in DEVICES for c in range(1, 6)
                    for e in ("raised", "wearer_confirms")]
        assert sorted(keys) == sorted(expected)  # each once, whichever worker claimed it
        for key in expected[::2]:  # an incident's raise reached the backend before its tap
            assert keys.index(key) < keys.index(key.replace("raised", "wearer_confirms"))
        assert len({worker for worker, _ in backend.accepted}) > 1  # the queue was shared
        for device_id in DEVICES:
            made = workers[0].downlinks.all(device_id)
            assert sorted(d.ref for d in made) == [1, 2, 3, 4, 5]  # one DELIVERED per alarm
            assert all(d.kind == "ack" and d.code == p.DELIVERED for d in made)
            acks = [p.decode(d.frame, p.DeviceKey(key_for(device_id)), p.DOWN) for d in made]
            assert [a.ref for a in acks] == [d.ref for d in made]
            # ten RECEIVED acks took 1..10: each DELIVERED has a counter past them, none twice
            assert sorted(a.counter for a in acks) == list(range(11, 16))
    finally:
        for worker in workers:
            worker.close()


def test_a_one_sender_destination_is_served_by_one_worker_then_by_the_next(pg_store_url,
                                                                          tmp_path):
    first, second = (Worker(pg_store_url, tmp_path / "keys", destinations=("dc09",))
                     for _ in range(2))
    try:
        first.add(DEVICES[0])
        first.ingest([alarm(DEVICES[0], c) for c in range(1, 4)])
        outboxes = [ForwardingOutbox(w.store.outbox, lease_s=0.5, senders={
            "dc09": PostgresDc09State(w.store).try_become_sender}) for w in (first, second)]
        claimed = outboxes[0].due("dc09", time.time(), limit=1)
        assert [i.key for i in claimed] == ["%08x-1-raised" % DEVICES[0]]
        time.sleep(0.6)  # its lease ran out: the row is free, but not the centre
        assert outboxes[1].due("dc09", time.time()) == []
        first.store.close()  # the sender's session ends (a worker dies): its lock goes
        deadline = time.monotonic() + 10  # (with the server's backend, a moment later)
        taken = []
        while not taken and time.monotonic() < deadline:
            taken = outboxes[1].due("dc09", time.time(), limit=1)
            time.sleep(0.02)
        assert [i.key for i in taken] == ["%08x-1-raised" % DEVICES[0]]
    finally:
        first.close()
        second.close()


def test_a_row_another_worker_holds_is_not_due_for_this_one_until_its_lease_ends(
        pg_store_url, tmp_path):
    first, second = (Worker(pg_store_url, tmp_path / "keys", destinations=(HOOK,))
                     for _ in range(2))
    try:
        first.add(DEVICES[0])
        first.ingest([alarm(DEVICES[0], 1)])
        mine, theirs = (ForwardingOutbox(w.store.outbox, lease_s=30.0) for w in (first, second))
        assert theirs.next_due_at(HOOK) <= time.time() + 1  # due now, for anyone
        [held] = mine.due(HOOK, time.time())
        # not "due now" for the other worker's loop, which would spin on rows it cannot take
        assert theirs.next_due_at(HOOK) > time.time() + 25
        assert theirs.due(HOOK, time.time()) == []
        assert mine.release() == 1  # stopping: given back, due at once for the others
        assert [i.key for i in theirs.due(HOOK, time.time())] == [held.key]
    finally:
        first.close()
        second.close()
