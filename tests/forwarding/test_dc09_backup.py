# A backup receiver (EN 50136-1 dual path): an alarm the primary does not acknowledge goes to
# the secondary with the same sequence number and account; each path has its own NULL
# supervision, its own up/down state and an operator alert when it fails. Two pysiaalarm
# receivers, the primary behind a proxy that can hold its ACK past the timeout.
import asyncio
import time

from sia_receiver import ReplyProxy, start_receiver
from test_dc09_forwarder import item
from vigil_gateway import dc09
from vigil_gateway.db import open_database
from vigil_gateway.forward_dc09 import Dc09State, Dc09Transport
from vigil_gateway.wearers import Wearers
from vigil_tools.broker import free_port

KEY = "0123456789ABCDEF0123456789ABCDEF"


def transport(tmp_path, primary_port, secondary_port, timeout_s=5.0):
    conn = open_database(str(tmp_path))
    state = Dc09State(conn)
    Wearers(conn).set(0xC0FFEE, "W", zone=3)
    return Dc09Transport("127.0.0.1", primary_port, dc09.Account("BBB", KEY), state,
                         "SIA-DCS", timeout_s, backup=("127.0.0.1", secondary_port))


def test_primary_dead_the_secondary_gets_the_alarm(tmp_path):
    secondary_port = free_port()
    secondary = start_receiver(secondary_port, {"BBB": KEY})
    try:
        t = transport(tmp_path, free_port(), secondary_port)   # nothing on the primary
        row = item("SOS", "raised")
        assert asyncio.run(t.deliver(row)).ok
        got = secondary.events.get(timeout=5)
        assert (got.code, got.account, int(got.sequence)) == ("PA", "BBB",
                                                              t.state.sequence_for(row.id))
        assert [p.link_up for p in t.paths] == [False, True] and t.link_up is True
    finally:
        secondary.stop()


def test_an_ack_late_past_the_timeout_sends_it_to_the_secondary_with_the_same_number(tmp_path):
    primary_port, secondary_port = free_port(), free_port()
    primary = start_receiver(primary_port, {"BBB": KEY})
    secondary = start_receiver(secondary_port, {"BBB": KEY})

    def late(message, reply):
        time.sleep(1.0)      # past the 0.3 s ACK timeout
        return reply
    proxy = ReplyProxy(free_port(), primary_port, late)
    try:
        t = transport(tmp_path, proxy.server.server_address[1], secondary_port, timeout_s=0.3)
        assert asyncio.run(t.deliver(item("DURESS", "raised"))).ok
        at_primary = primary.events.get(timeout=5)
        at_secondary = secondary.events.get(timeout=5)
        # both receivers saw it: the ARC pairs the two by account and sequence number
        assert (at_primary.account, at_primary.sequence, at_primary.code) == \
            (at_secondary.account, at_secondary.sequence, at_secondary.code) == \
            ("BBB", at_primary.sequence, "HA")
        assert t.paths[0].link_up is False
    finally:
        proxy.stop()
        primary.stop()
        secondary.stop()


def test_each_path_has_its_own_null_supervision_and_alerts_when_it_fails(tmp_path, caplog):
    primary_port, secondary_port = free_port(), free_port()
    secondary = start_receiver(secondary_port, {"BBB": KEY})
    primary = None
    try:
        t = transport(tmp_path, primary_port, secondary_port)
        with caplog.at_level("WARNING", logger="vigil_gateway.forward_dc09"):
            assert asyncio.run(t.link_test()).ok                  # the secondary answers
            assert asyncio.run(t.link_test()).ok
            assert [p.link_up for p in t.paths] == [False, True]
            down = [r for r in caplog.records if r.getMessage() == "dc09_path_down"]
            assert len(down) == 1                                  # one alert per failure
            primary = start_receiver(primary_port, {"BBB": KEY})
            assert asyncio.run(t.link_test()).ok
            assert [p.link_up for p in t.paths] == [True, True]
            assert [r.getMessage() for r in caplog.records].count("dc09_path_up") == 1
        secondary.stop()
        secondary = None
        assert asyncio.run(t.link_test()).ok and [p.link_up for p in t.paths] == [True, False]
    finally:
        for r in (primary, secondary):
            if r is not None:
                r.stop()


def test_while_the_primary_is_down_alarms_go_to_the_secondary_first(tmp_path):
    """An alarm does not wait out the primary's timeout on every attempt while the primary is
    known down and the secondary answers."""
    secondary_port = free_port()
    secondary = start_receiver(secondary_port, {"BBB": KEY})
    try:
        t = transport(tmp_path, free_port(), secondary_port)
        assert [p.name for p in t._order()] == ["primary", "secondary"]
        assert asyncio.run(t.link_test()).ok                       # the primary seen down
        assert [p.name for p in t._order()] == ["secondary", "primary"]
        assert asyncio.run(t.deliver(item("SOS", "raised"))).ok
        assert "PA" in [secondary.events.get(timeout=5).code for _ in range(2)]  # NULL, PA
    finally:
        secondary.stop()


def test_both_paths_down_is_one_failure_naming_each(tmp_path):
    t = transport(tmp_path, free_port(), free_port())
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and not result.alert
    assert "primary: cannot reach" in result.error and "secondary: cannot reach" in result.error
    assert t.link_up is False
