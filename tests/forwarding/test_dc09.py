# DC-09 messages against a real receiver: pysiaalarm's, on loopback, plain and AES.
import datetime
import re
import socket

import pytest
from sia_receiver import start_receiver
from vigil_gateway import dc09
from vigil_tools.broker import free_port

KEY = "0123456789ABCDEF0123456789ABCDEF"  # 32 characters: AES-256


@pytest.fixture
def receiver():
    """pysiaalarm's receiver with a plain account AAA and an encrypted account BBB."""
    port = free_port()
    client = start_receiver(port, {"AAA": None, "BBB": KEY})
    yield port, client.events
    client.stop()


def exchange(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(line)
        data = b""
        while not dc09.reply_complete(data) and len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def test_crc_is_crc16_arc():
    assert dc09.crc16(b"123456789") == 0xBB3D


def test_plain_sia_dcs_panic_with_location_is_acknowledged(receiver):
    port, events = receiver
    account = dc09.Account("AAA")
    event = dc09.Event("PA", 120, zone=7, location=(51.5007800, -0.1275700), text="SOS 00c0ffee")
    reply = dc09.parse_reply(exchange(port, dc09.encode_event(account, 12, event, now())),
                             account)
    assert (reply.kind, reply.sequence) == ("ACK", 12)
    got = events.get(timeout=5)
    assert (got.code, got.account, got.ri) == ("PA", "AAA", "1")
    assert "X000W07.654" in got.x_data and "Y51N30.047" in got.x_data


def test_encrypted_adm_cid_duress_is_acknowledged_encrypted(receiver):
    port, events = receiver
    account = dc09.Account("BBB", key=KEY)
    line = dc09.encode_event(account, 13, dc09.Event("HA", 121, zone=7), now(), fmt="ADM-CID")
    assert line.startswith(b"\n") and b'"*ADM-CID"0013L0#BBB[' in line
    assert b"|1121" not in line and b"]_" not in line  # the event is inside the ciphertext
    reply = dc09.parse_reply(exchange(port, line), account)
    assert (reply.kind, reply.sequence) == ("ACK", 13)
    assert events.get(timeout=5).code == "HA"


def test_every_aes_key_length_works(receiver):
    port, _ = receiver
    for key in ("0123456789ABCDEF", "0123456789ABCDEF01234567"):
        client_account = dc09.Account("CCC", key=key)
        p2 = free_port()
        c = start_receiver(p2, {"CCC": key})
        try:
            reply = dc09.parse_reply(exchange(p2, dc09.encode_event(
                client_account, 1, dc09.Event("PA", 120, zone=1), now())), client_account)
            assert reply.kind == "ACK"
            assert c.events.get(timeout=5).code == "PA"
        finally:
            c.stop()


def test_null_link_test_is_acknowledged(receiver):
    port, _ = receiver
    account = dc09.Account("BBB", key=KEY)
    reply = dc09.parse_reply(exchange(port, dc09.encode_null(account, 14, now())), account)
    assert reply.kind == "ACK"


def test_a_stale_clock_gets_a_nak_carrying_the_receivers_time(receiver):
    port, events = receiver
    account = dc09.Account("AAA")
    late = now() - datetime.timedelta(minutes=10)
    reply = dc09.parse_reply(exchange(port, dc09.encode_event(
        account, 15, dc09.Event("PA", 120, zone=1), late)), account)
    assert reply.kind == "NAK"
    assert abs((reply.receiver_time - now()).total_seconds()) < 5
    assert events.empty()


def test_unknown_account_and_unknown_code(receiver):
    port, _ = receiver
    unknown = dc09.Account("DDD")
    reply = dc09.parse_reply(exchange(port, dc09.encode_event(
        unknown, 16, dc09.Event("PA", 120, zone=1), now())), unknown)
    assert reply.kind == "NAK" and reply.receiver_time is None
    account = dc09.Account("AAA")
    reply = dc09.parse_reply(exchange(port, dc09.encode_event(
        account, 17, dc09.Event("AQ", 120, zone=1), now())), account)
    assert reply.kind == "DUH"


def test_a_corrupt_line_gets_no_framed_reply(receiver):
    port, _ = receiver
    account = dc09.Account("AAA")
    line = bytearray(dc09.encode_event(account, 18, dc09.Event("PA", 120, zone=1), now()))
    line[20] ^= 0x01
    assert dc09.parse_reply(exchange(port, bytes(line)), account).kind == "NONE"


def test_bad_settings_and_replies_are_clear_errors():
    with pytest.raises(dc09.Dc09Error, match="16, 24 or 32"):
        dc09.Account("AAA", key="short")
    with pytest.raises(dc09.Dc09Error, match="hex digits"):
        dc09.Account("XYZ!")
    with pytest.raises(dc09.Dc09Error, match="CRC"):
        dc09.parse_reply(b'\n00000005"ACK"\r', dc09.Account("AAA"))
    assert "0123" not in repr(dc09.Account("AAA", key=KEY))


def from_degrees_minutes(text):
    """A DC-09 location value back to signed degrees ('000W07.654' -> -0.12757)."""
    found = re.fullmatch(r"(\d{2,3})([NSEW])(\d{2}\.\d+)", text)
    degrees, hemisphere, minutes = found.groups()
    value = int(degrees) + float(minutes) / 60
    return -value if hemisphere in "SW" else value


@pytest.mark.parametrize("where", [(51.50078, -0.12757), (-33.8688, 151.2093),
                                   (0.0, 0.0), (-89.99999, -179.99999)])
def test_location_in_the_dc09_form_read_by_both_decoders(receiver, where):
    """[X<ddd><E|W><mm.mmm>][Y<dd><N|S><mm.mmm>]: pysiaalarm passes it through, siadc09 reads
    it; both give back the position to a thousandth of a minute."""
    from siadc09 import message
    port, events = receiver
    line = dc09.encode_event(dc09.Account("AAA"), 19, dc09.Event("PA", 120, zone=7,
                                                                 location=where), now())
    assert dc09.parse_reply(exchange(port, line), dc09.Account("AAA")).kind == "ACK"
    got = events.get(timeout=5)
    blocks = dict(re.findall(r"\[?([XY])([^\]]+)\]?", got.x_data))
    second = {x.prefix: x.value for x in message.parse_frame(line).xdata}
    assert second == blocks
    lat, lon = from_degrees_minutes(blocks["Y"]), from_degrees_minutes(blocks["X"])
    assert abs(lat - where[0]) < 1 / 60000 and abs(lon - where[1]) < 1 / 60000
    assert len(blocks["X"]) == 10 and len(blocks["Y"]) == 9


def test_time_of_occurrence_goes_in_h_extended_data(receiver):
    from siadc09 import message
    port, events = receiver
    occurred = now() - datetime.timedelta(minutes=7)
    for fmt in ("SIA-DCS", "ADM-CID"):
        event = dc09.Event("PA", 120, zone=7, text="SOS", occurred=occurred)
        line = dc09.encode_event(dc09.Account("AAA"), 20, event, now(), fmt=fmt)
        assert dc09.parse_reply(exchange(port, line), dc09.Account("AAA")).kind == "ACK", fmt
        got = events.get(timeout=5)
        assert "H" + dc09.timestamp(occurred)[1:] in got.x_data
        (h,) = [x for x in message.parse_frame(line).xdata if x.prefix == "H"]
        assert h.value == occurred.replace(microsecond=0)
        assert ("ISOS" in got.x_data) == (fmt == "SIA-DCS")  # ADM-CID: one block, the time


def test_key_forms():
    """DC-09 keys as ARCs issue them (32/48/64 hex digits: 128/192/256-bit binary), the older
    16/24/32-character form (its ASCII bytes), and 'hex:'/'text:' to settle 32 hex digits."""
    hex256 = "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"
    assert dc09.parse_key(hex256) == bytes.fromhex(hex256)
    assert dc09.parse_key(hex256[:48]) == bytes.fromhex(hex256[:48])
    assert dc09.parse_key("hex:" + hex256[:32]) == bytes.fromhex(hex256[:32])
    assert dc09.parse_key("text:" + KEY) == KEY.encode()
    assert dc09.parse_key("my-sixteen-chars") == b"my-sixteen-chars"
    assert dc09.parse_key("  0123456789ABCDEF01234567 \n") == b"0123456789ABCDEF01234567"
    for bad, says in ((KEY, "could be a 128-bit key in hex or a 256-bit key"),
                      ("hex:" + hex256[:30], "32, 48 or 64 hex digits"),
                      ("short", "32, 48 or 64 hex digits"), ("x" * 40, "16, 24 or 32"),
                      ("text:" + "é" * 16, "16, 24 or 32")):
        with pytest.raises(dc09.Dc09Error, match=says) as err:
            dc09.parse_key(bad)
        assert bad.split(":")[-1] not in str(err.value)


def test_a_hex_key_talks_to_a_receiver_holding_the_same_bytes(receiver):
    """pysiaalarm uses its key string's ASCII bytes: the hex of those bytes is the same key."""
    port, events = receiver
    account = dc09.Account("BBB", key=dc09.parse_key(KEY.encode().hex()))
    reply = dc09.parse_reply(exchange(port, dc09.encode_event(
        account, 21, dc09.Event("PA", 120, zone=1), now())), account)
    assert reply.kind == "ACK" and reply.encrypted


def test_an_ambiguous_key_file_stops_the_gateway_naming_the_setting(tmp_path):
    from vigil_gateway import config as gateway_config
    from vigil_gateway.db import open_database
    from vigil_gateway.errors import ConfigError
    from vigil_gateway.service import make_transports
    key_file = tmp_path / "arc.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    cfg = gateway_config.load_dict({"forward": {"dc09": {
        "host": "127.0.0.1", "port": 9, "account": "BBB", "key_file": str(key_file)}}},
        str(tmp_path))
    with pytest.raises(ConfigError) as err:
        make_transports(cfg, open_database(str(tmp_path)))
    assert err.value.key == "forward.dc09.key_file" and "hex:" in str(err.value)
    assert KEY not in str(err.value)
    key_file.write_text("text:" + KEY + "\n")
    (transport,) = make_transports(cfg, open_database(str(tmp_path)))
    assert transport.account.key == KEY.encode()
