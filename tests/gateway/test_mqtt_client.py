# The gateway's paho client (mqtt_client.LeanClient) without a broker: bytes written into one
# end of a socket pair, read through paho's own loop_read(), must give the same messages and
# publish confirmations as paho alone, whether they take the client's short paths or paho's.
import select
import socket
import struct

import paho.mqtt.client as mqtt
import pytest

from vigil_gateway.mqtt_client import LeanClient


def _packet(first, body):
    length, n = b"", len(body)
    while True:
        n, digit = n >> 7, n & 0x7F
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + length + body


def _publish(topic, mid, payload, qos=1, properties=b"\x00", dup=False):
    t = topic.encode()
    body = struct.pack(">H", len(t)) + t + (struct.pack(">H", mid) if qos else b"")
    return _packet(0x30 | qos << 1 | (0x08 if dup else 0), body + properties + payload)


def _connected(cls):
    """A client 'connected' to one end of a socket pair; .broker is the other end."""
    c = cls(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5,
            manual_ack=True)
    ours, c.broker = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours
    c.messages, c.published = [], []
    c.on_message = lambda cl, u, m: c.messages.append(
        (m.topic, m.mid, m.qos, m.dup, m.payload))
    c.on_publish = lambda cl, u, mid, reason, props: c.published.append((mid, reason.value))
    return c


@pytest.fixture(params=[LeanClient, mqtt.Client], ids=["lean", "paho"])
def client(request):
    c = _connected(request.param)
    yield c
    c.socket().close()
    c.broker.close()


def _read_all(c):
    """Read as the gateway's event loop does, until nothing is left to read."""
    while True:
        c.loop_read()
        if isinstance(c, LeanClient) and c.buffered():
            continue
        if not select.select([c.socket()], [], [], 0)[0]:
            return


def test_a_burst_of_publishes_in_one_read_gives_every_message(client):
    burst = b"".join(_publish("vigil/up/%08x" % i, i, b"frame-%d" % i) for i in range(1, 301))
    client.broker.sendall(burst)
    _read_all(client)
    assert client.messages == [("vigil/up/%08x" % i, i, 1, False, b"frame-%d" % i)
                               for i in range(1, 301)]


def test_publishes_paho_decodes_itself_give_the_same_fields(client):
    # with properties (a message expiry interval), at QoS 0, a duplicate, an empty payload
    client.broker.sendall(_publish("vigil/up/a", 7, b"x", properties=b"\x05\x02\x00\x00\x00\x3c")
                          + _publish("vigil/up/b", 0, b"y", qos=0)
                          + _publish("vigil/up/c", 9, b"z", dup=True)
                          + _publish("vigil/up/d", 10, b""))
    _read_all(client)
    assert client.messages == [("vigil/up/a", 7, 1, False, b"x"),
                               ("vigil/up/b", 0, 0, False, b"y"),
                               ("vigil/up/c", 9, 1, True, b"z"),
                               ("vigil/up/d", 10, 1, False, b"")]


def test_pubacks_confirm_publishes_with_or_without_a_reason_code(client):
    infos = [client.publish("vigil/down/%08x" % i, b"ack", qos=1) for i in range(3)]
    mids = [info.mid for info in infos]
    client.broker.sendall(_packet(0x40, struct.pack(">H", mids[0]))            # plain
                          + _packet(0x40, struct.pack(">HB", mids[1], 0x10))   # no subscribers
                          + _packet(0x40, struct.pack(">H", 999)))             # unknown id
    _read_all(client)
    assert client.published == [(mids[0], 0), (mids[1], 0x10)]
    assert infos[0].is_published() and infos[1].is_published()
    assert not infos[2].is_published()


def test_the_lean_client_decodes_plain_publishes_and_pubacks_without_paho(monkeypatch):
    from paho.mqtt import _packet as paho_decoders

    def not_here(*args):
        raise AssertionError("decoded by paho")

    monkeypatch.setattr(paho_decoders, "decode_publish", not_here)
    monkeypatch.setattr(paho_decoders, "decode_puback", not_here)
    client = _connected(LeanClient)
    info = client.publish("vigil/down/00000001", b"ack", qos=1)
    client.broker.sendall(_publish("vigil/up/00000001", 5, b"frame")
                          + _packet(0x40, struct.pack(">H", info.mid)))
    _read_all(client)
    assert client.messages == [("vigil/up/00000001", 5, 1, False, b"frame")]
    assert client.published == [(info.mid, 0)]
    client.socket().close()
    client.broker.close()
