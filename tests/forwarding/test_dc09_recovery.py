# A DC-09 receiver back after an outage gets the whole queue at once, oldest first: the
# forwarding loop with a clock the test moves (ten minutes of outage pass in a few rounds),
# a real Dc09Transport, and pysiaalarm's receiver started when the outage ends. How fast that
# is goes in `vigil bench dc09`, not here.
import asyncio
import re
import subprocess
import sys

import pytest
from forwarding_site import DEV, Site
from sia_receiver import ReplyProxy, start_receiver

import vigil_protocol as p
from vigil_gateway import dc09
from vigil_gateway.forward_dc09 import Dc09State, Dc09Transport
from vigil_gateway.forwarding import Forwarding
from vigil_tools.broker import free_port

KINDS = [p.SOS, p.DURESS, p.FALL, p.NO_MOTION]


@pytest.fixture
def arc(tmp_path):
    """A site forwarding to DC-09 only; the receiver (behind a proxy that records each
    message) is started by the test."""
    site = Site(tmp_path, destinations=("dc09",))
    site.wearers.set(DEV, "W", zone=3)
    port = free_port()
    transport = Dc09Transport("127.0.0.1", port, dc09.Account("AAA"), Dc09State(site.conn),
                              "SIA-DCS", 5.0)
    site.forwarding = Forwarding(site.store, site.outbox, site.downlinks, [transport],
                                 site.metrics, site.clock, site.pipeline, site._ready)
    started = []

    def start():
        receiver_port = free_port()
        started.append(start_receiver(receiver_port, {"AAA": None}))
        started.append(ReplyProxy(port, receiver_port))
        return started[-1]
    yield site, transport, start
    for s in started:
        s.stop()


def drive(site, transport, seconds):
    end = site.clock.now + seconds
    while site.clock.now < end:
        site.round(transport)
        site.clock.now += 5.0


def sent_codes(proxy):
    """What went to the receiver, in order: SIA codes, NULL for a link test."""
    return [m.group(1).decode() if m else "NULL" for m in
            (re.search(rb"Nri1/([A-Z]{2})", line) for line in proxy.sent)]


def test_a_null_answered_after_an_outage_sends_the_whole_queue_oldest_first(arc):
    site, transport, start = arc
    for kind in KINDS:
        site.alarm(kind)
    drive(site, transport, 600)                       # ten minutes: the receiver is down
    assert transport.link_up is False
    assert site.outbox.due("dc09", site.clock.now) == []   # every row backed off
    proxy = start()
    assert asyncio.run(site.forwarding.link_test(transport)).ok
    assert site.round(transport) == len(KINDS)        # no clock moved: all due at once
    assert sent_codes(proxy) == ["NULL", "PA", "HA", "MA", "QA"]   # oldest first
    assert site.outbox.items(pending_only=True) == []
    assert [a.stage for a in site.decoded_downlinks()] == [p.DELIVERED] * len(KINDS)


def test_the_first_row_accepted_after_an_outage_brings_the_rest(arc):
    site, transport, start = arc
    site.alarm(p.SOS)
    drive(site, transport, 300)
    site.alarm(p.DURESS)                              # queued later: backs off on its own
    site.alarm(p.FALL)
    drive(site, transport, 30)
    pending = site.outbox.items(pending_only=True)
    site.clock.now = min(r.next_at for r in pending)  # the first row's time, not the others'
    due = site.outbox.due("dc09", site.clock.now)
    assert 1 <= len(due) < len(pending)
    proxy = start()
    assert site.round(transport) == len(due)
    assert site.round(transport) == len(pending) - len(due)   # at once, not at their time
    assert sorted(sent_codes(proxy)) == ["HA", "MA", "PA"]


def test_no_flush_while_the_link_stays_up(arc):
    site, transport, start = arc
    start()
    site.alarm(p.SOS)
    assert site.round(transport) == 1
    assert asyncio.run(site.forwarding.link_test(transport)).ok
    assert site.forwarding.link_ok == {"dc09": True}


def test_bench_dc09_prints_figures_and_a_key_value_line():
    proc = subprocess.run([sys.executable, "-m", "vigil_tools.cli", "bench", "dc09", "--alarms",
                           "5", "--outage-min", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    figures = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    assert {"first_ack_s", "drain_s", "baseline_drain_s", "last_due_s"} <= set(figures)
    assert figures["alarms"] == "5"
