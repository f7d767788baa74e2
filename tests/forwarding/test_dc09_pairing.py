# DC-09 message pairing against real receivers: a retransmission keeps its sequence number
# (also after a restart); an ACK counts only when it echoes the message's sequence, receiver,
# line and account and, for an encrypted message, is an *ACK that decrypts with the key; a NAK
# with the receiver's time corrects the clock and the resend keeps the number; a NAK whose time
# agrees with ours, to an encrypted message, is reported as a wrong key. A proxy in front of
# pysiaalarm's receiver loses or changes its replies; siadc09's codec is a second receiver.
import asyncio
import re
import time

import pytest
from sia_receiver import ReplyProxy, reframe, start_receiver, start_siadc09_receiver
from test_dc09_forwarder import item
from vigil_gateway import dc09
from vigil_gateway.db import open_database
from vigil_gateway.forward_dc09 import Dc09State, Dc09Transport
from vigil_gateway.wearers import Wearers
from vigil_tools.broker import free_port

KEY = "0123456789ABCDEF0123456789ABCDEF"


@pytest.fixture(scope="module")
def receiver():
    port = free_port()
    client = start_receiver(port, {"AAA": None, "BBB": KEY, "CCC": None})
    yield port, client.events
    client.stop()


@pytest.fixture
def proxy(receiver):
    made = []

    def make(rewrite=lambda message, reply: reply):
        p = ReplyProxy(free_port(), receiver[0], rewrite)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def drain(events):
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return out


def accepted(events, sequence, n):
    """The next `n` events the receiver accepted with `sequence` (it hands events over after
    its ACK, so one from an earlier test may come first)."""
    got = []
    while len(got) < n:
        event = events.get(timeout=5)
        if int(event.sequence) == sequence:
            got.append(event)
    return got


def transport(tmp_path, port, account, clock=None):
    kwargs = {} if clock is None else {"clock": clock}
    conn = open_database(str(tmp_path))
    state = Dc09State(conn)
    Wearers(conn).set(0xC0FFEE, "W", zone=3)  # so the site account reports it
    return Dc09Transport("127.0.0.1", port, account, state, "SIA-DCS", 5.0, **kwargs)


def rewrite_ack(pattern, replacement):
    """A proxy rewrite changing the (plain) ACK's message text, CRC and length made again."""
    def rewrite(message, reply):
        text = reply.decode("ascii").strip("\n\r")[8:]
        return reframe(re.sub(pattern, replacement, text, count=1))
    return rewrite


def test_a_lost_ack_is_retransmitted_with_the_same_sequence_number(receiver, proxy, tmp_path):
    port, events = receiver
    drain(events)
    lost = {"n": 0}

    def lose_first(message, reply):
        lost["n"] += 1
        return None if lost["n"] == 1 else reply
    p = proxy(lose_first)
    row = item("SOS", "raised")
    t = transport(tmp_path, p.server.server_address[1], dc09.Account("AAA"))
    first = asyncio.run(t.deliver(row))
    assert not first.ok and not first.alert and "no reply" in first.error
    # the gateway restarts meanwhile: the number is on disk
    t2 = transport(tmp_path, p.server.server_address[1], dc09.Account("AAA"))
    assert asyncio.run(t2.deliver(row)).ok
    seqs = p.sequences()
    assert len(seqs) == 2 and seqs[0] == seqs[1]
    assert [e.code for e in accepted(events, seqs[0], 2)] == ["PA", "PA"]  # the ARC pairs them
    assert asyncio.run(t2.deliver(item("SOS", "resolved"))).ok  # a new row: a new number
    assert p.sequences()[-1] != seqs[0]


@pytest.mark.parametrize("pattern,replacement,reason", [
    (r'"ACK"(\d{4})', lambda m: '"ACK"%04d' % (int(m.group(1)) % 9999 + 1), "ack_sequence"),
    (r"#AAA\[", "#CCC[", "ack_account"),
    (r"L0#", "L7#", "ack_line"),
])
def test_an_ack_that_does_not_echo_the_message_is_not_a_delivery(receiver, proxy, tmp_path,
                                                                   pattern, replacement,
                                                                   reason):
    port, events = receiver
    p = proxy(rewrite_ack(pattern, replacement))
    t = transport(tmp_path, p.server.server_address[1], dc09.Account("AAA"))
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.alert and result.reason == reason
    assert t.counts[reason] == 1
    assert "not counted as its ACK" in result.error


def test_an_ack_from_another_receiver_number_is_not_a_delivery(receiver, proxy, tmp_path):
    p = proxy(rewrite_ack(r'"(\d{4})R12L', r'"\1R13L'))
    t = transport(tmp_path, p.server.server_address[1], dc09.Account("AAA", receiver="12"))
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.reason == "ack_receiver"
    t = transport(tmp_path, receiver[0], dc09.Account("AAA", receiver="12"))
    assert asyncio.run(t.deliver(item("SOS", "raised"))).ok  # pysiaalarm echoes R12


def test_an_encrypted_message_needs_an_encrypted_ack_that_decrypts(receiver, proxy, tmp_path):
    def plain_ack(message, reply):
        seq = re.search(rb'"\*SIA-DCS"(\d{4})', message).group(1).decode()
        return reframe('"ACK"%sL0#BBB[]' % seq)

    def other_key(message, reply):
        text = reply.decode("ascii").strip("\n\r")[8:]
        head, body = text.split("[", 1)
        clear = dc09._decrypt(KEY.encode(), body)
        return reframe(head + "[" + dc09._encrypt(b"F" * 32, clear.split("|", 1)[-1]))

    for rewrite, reason in ((plain_ack, "plain_ack"), (other_key, "ack_undecryptable")):
        p = proxy(rewrite)
        t = transport(tmp_path, p.server.server_address[1], dc09.Account("BBB", KEY))
        result = asyncio.run(t.deliver(item("DURESS", "raised")))
        assert not result.ok and result.reason == reason, result.error
        assert KEY not in result.error
    t = transport(tmp_path, proxy().server.server_address[1], dc09.Account("BBB", KEY))
    assert asyncio.run(t.deliver(item("DURESS", "raised"))).ok  # the real *ACK decrypts


def test_a_wrong_key_is_reported_as_a_wrong_key(receiver, tmp_path):
    port, events = receiver
    drain(events)
    wrong = "FEDCBA9876543210FEDCBA9876543210"
    t = transport(tmp_path, port, dc09.Account("BBB", wrong))
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.alert and result.reason == "wrong_key"
    assert "wrong key" in result.error and "BBB" in result.error
    assert wrong not in result.error and KEY not in result.error
    assert t.clock_corrections == 0 and t.state.clock_offset == 0  # the clock was fine


def test_a_naks_time_corrects_the_clock_and_the_resend_keeps_its_number(receiver, proxy,
                                                                        tmp_path):
    port, events = receiver
    drain(events)
    p = proxy()
    t = transport(tmp_path, p.server.server_address[1], dc09.Account("AAA"),
                  clock=lambda: time.time() - 600)
    assert asyncio.run(t.deliver(item("SOS", "raised"))).ok
    assert t.clock_corrections == 1
    seqs = p.sequences()
    assert len(seqs) == 2 and seqs[0] == seqs[1]
    assert accepted(events, seqs[0], 1)[0].code == "PA"


def test_naks_are_read_whichever_order_their_fields_come_in():
    account = dc09.Account("AAA")
    for message in ('"NAK"0000R0L0A0[]_12:26:00,12-01-2026',   # the standard's order
                    '"NAK"0000L0R0A0[]_12:26:00,12-01-2026',   # pysiaalarm's
                    '"NAK"0000NoneL0A0[]_12:26:00,12-01-2026'):
        reply = dc09.parse_reply(dc09.frame_line(message), account)
        assert reply.kind == "NAK" and reply.receiver_time.hour == 12, message
    reply = dc09.parse_reply(dc09.frame_line('"ACK"0042L3R12#AAA[]'), account)
    assert (reply.sequence, reply.line, reply.receiver, reply.account) == (42, "3", "12", "AAA")
    with pytest.raises(dc09.Dc09Error, match="two L"):
        dc09.parse_reply(dc09.frame_line('"ACK"0042L3L4#AAA[]'), account)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
def test_siadc09_receiver_acknowledges_and_its_ack_pairs(tmp_path, encrypted):
    port = free_port()
    server = start_siadc09_receiver(port, {"1234AB": KEY.encode() if encrypted else None})
    try:
        t = transport(tmp_path, port, dc09.Account("1234AB", KEY if encrypted else None))
        row = item("SOS", "raised")
        result = asyncio.run(t.deliver(row))
        assert result.ok, (result.error, server.errors.queue)
        msg = server.events.get(timeout=5)
        assert msg.encrypted == encrypted and msg.idtoken == "SIA-DCS"
        assert msg.seq == t.state.sequence_for(row.id)
        assert asyncio.run(t.link_test()).ok
    finally:
        server.stop()
