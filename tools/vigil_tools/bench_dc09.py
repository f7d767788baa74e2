"""`vigil bench dc09`: how fast a DC-09 receiver back after an outage gets the queue.

One run, in one process: the gateway's own pipeline, outbox, forwarding loop and DC-09
transport (SQLite with fsync per commit, as the gateway runs), and pysiaalarm's receiver on
loopback as the alarm receiving centre.
  1. baseline: --alarms alarms forwarded to a receiver that is up, back to back;
  2. outage: the receiver is down while the alarms arrive and for --outage-min minutes, which
     pass on the forwarding clock (each row backs off as in service: every attempt is a real
     refused connection) in a fraction of a second; then the forwarding loop runs on the real
     clock, the receiver starts, and the figures are timed from the moment it accepts
     connections: the first alarm acknowledged (the NULL link tests while the link is down run
     every 2 s, probe_interval_s's default), the whole queue drained.
`first_due_s` and `last_due_s`: when the first and the last row would have been tried again by
their own backoff alone (without the flush when the link is back).
The last line is key=value pairs for scripts. Goals: first alarm within 5 s, 100 within 15 s.
"""
import asyncio
import logging
import os
import socket
import tempfile
import threading
import time

import vigil_protocol as p

from . import ToolError
from .broker import free_port

_DEVICE = 0x00D00000
_ACCOUNT = "1234AB"


class _Clock:
    """The real clock plus a shift the outage phase moves."""

    def __init__(self):
        self.shift = 0.0

    def __call__(self):
        return time.time() + self.shift


def _receiver(port):
    try:
        from pysiaalarm import SIAAccount, SIAClient
    except ImportError:
        raise ToolError("vigil bench dc09 needs pysiaalarm (make setup installs it)") from None
    client = SIAClient("127.0.0.1", port, [SIAAccount(_ACCOUNT)], function=lambda event: None)
    client.start()
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return client
        except OSError:
            time.sleep(0.01)
    client.stop()
    raise ToolError("pysiaalarm's receiver did not start on port %d" % port)


class _Site:
    """A gateway's forwarding half on its own database, forwarding to DC-09 only."""

    def __init__(self, folder, port, clock, alarms):
        from vigil_gateway import dc09
        from vigil_gateway.db import open_database
        from vigil_gateway.downlinks import Downlinks
        from vigil_gateway.forward_dc09 import Dc09State, Dc09Transport
        from vigil_gateway.forwarding import Forwarding
        from vigil_gateway.metrics import Metrics
        from vigil_gateway.outbox import Outbox
        from vigil_gateway.pipeline import REASONS, Message, Pipeline
        from vigil_gateway.registry import Registry
        from vigil_gateway.store import Store
        from vigil_gateway.topics import Topics
        from vigil_gateway.wearers import Wearers

        conn = open_database(folder)
        registry = Registry(conn, os.path.join(folder, "keys"), clock)
        wearers = Wearers(conn)
        self.store = Store(conn)
        self.outbox = Outbox(conn, ("dc09",), (1.0, 300.0), 3600.0)
        metrics = Metrics(REASONS)
        pipeline = Pipeline(registry, self.store, Topics("vigil"), metrics, clock, self.outbox)
        downlinks = Downlinks(conn, registry, pipeline)
        self.transport = Dc09Transport("127.0.0.1", port, dc09.Account(_ACCOUNT),
                                       Dc09State(conn), "SIA-DCS", 5.0)
        self.forwarding = Forwarding(self.store, self.outbox, downlinks, [self.transport],
                                     metrics, clock, pipeline, lambda: None)
        self.acked = []  # time.monotonic() of each delivery
        deliver = self.transport.deliver

        async def timed(item):
            result = await deliver(item)
            if result.ok:
                self.acked.append(time.monotonic())
            return result
        self.transport.deliver = timed
        # one wearer per alarm: each its own incident, so none waits behind another
        for i in range(alarms):
            device = _DEVICE + i
            key = bytes((device * 7 + j) & 0xFF for j in range(32))
            registry.add(device, key, interval_s=3600)
            wearers.set(device, "W%d" % i, zone=i % 999 + 1)  # zones of the site account
            frame = p.encode(p.Alarm(device, 1, p.SOS), p.DeviceKey(key))
            pipeline.process([Message("vigil/up/%08x" % device, frame)])

    def pending(self):
        return len(self.outbox.items(pending_only=True))


async def _until_drained(site, timeout_s):
    tasks = site.forwarding.tasks(null_interval_s=60.0, probe_interval_s=2.0)
    try:
        deadline = time.monotonic() + timeout_s
        while site.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _baseline(folder, alarms):
    port = free_port()
    receiver = _receiver(port)
    try:
        site = _Site(folder, port, time.time, alarms)
        start = time.monotonic()
        asyncio.run(_until_drained(site, 120))
        if site.pending():
            raise ToolError("baseline: %d alarms not delivered in 120 s" % site.pending())
        return time.monotonic() - start
    finally:
        receiver.stop()


def _outage(folder, alarms, outage_min, down_s):
    port = free_port()
    clock = _Clock()
    site = _Site(folder, port, clock, alarms)
    # the outage: minutes of failed attempts on the forwarding clock, real refused connections
    for step in range(0, int(outage_min * 60) + 1, 5):
        clock.shift = float(step)
        asyncio.run(site.forwarding.round(site.transport))
    attempts = sum(i.attempts for i in site.outbox.items())
    waiting = [i.next_at - clock() for i in site.outbox.items(pending_only=True)]
    result = {}

    def start_later():
        time.sleep(down_s)  # the loop runs on the real clock and still finds the link down
        result["receiver"] = _receiver(port)
        result["up_at"] = time.monotonic()
    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        asyncio.run(_until_drained(site, down_s + 120))
    finally:
        starter.join()
        if "receiver" in result:
            result["receiver"].stop()
    if site.pending():
        raise ToolError("after the outage: %d alarms not delivered in 120 s" % site.pending())
    up = result["up_at"]
    return {"first_ack_s": max(0.0, site.acked[0] - up), "drain_s": site.acked[-1] - up,
            "first_due_s": max(0.0, min(waiting)), "last_due_s": max(waiting),
            "outage_attempts": attempts}


def dc09(alarms=100, outage_min=10.0, down_s=3.0):
    quiet = logging.getLogger("vigil_gateway")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # thousands of refused attempts are the point, not news
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-dc09-") as tmp:
            base = _baseline(os.path.join(tmp, "baseline"), alarms)
            f = _outage(os.path.join(tmp, "outage"), alarms, outage_min, down_s)
    finally:
        quiet.setLevel(level)
    f.update(alarms=alarms, outage_min=outage_min, baseline_drain_s=base,
             baseline_per_alarm_ms=1000.0 * base / alarms,
             queue_after_first_s=f["drain_s"] - f["first_ack_s"])
    f["queue_vs_baseline"] = f["queue_after_first_s"] / base if base else 0.0
    return f


def dc09_command(args):
    f = dc09(args.alarms, args.outage_min)
    print("Vigil DC-09 recovery benchmark (pysiaalarm receiver on loopback, SQLite fsync per "
          "commit)")
    print("baseline: %d alarms to a receiver that is up   %8.2f s  (%.1f ms each)"
          % (f["alarms"], f["baseline_drain_s"], f["baseline_per_alarm_ms"]))
    print("outage of %.0f min (%d refused attempts); by their own backoff the rows would be "
          "retried %.0f-%.0f s later" % (f["outage_min"], f["outage_attempts"],
                                         f["first_due_s"], f["last_due_s"]))
    print("receiver back: first alarm acknowledged after   %8.2f s  (goal 5 s)"
          % f["first_ack_s"])
    print("               all %d acknowledged after        %8.2f s  (goal 15 s; the queue "
          "behind the first %.2f x baseline)" % (f["alarms"], f["drain_s"],
                                                 f["queue_vs_baseline"]))
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in f.items()))
    return 0


def register_bench(bench_sub):
    cmd = bench_sub.add_parser("dc09", help="DC-09: the queue after a receiver outage")
    cmd.add_argument("--alarms", type=int, default=100, help="alarms queued during the outage")
    cmd.add_argument("--outage-min", type=float, default=10.0, help="outage length, minutes")
    cmd.set_defaults(func=dc09_command)
