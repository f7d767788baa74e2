# The wearable's MQTT link on the real MicroPython unix port against brokers that misbehave:
# a proxy in front of the session's Mosquitto holds the broker's CONNACK, SUBACK or PUBACK
# for seconds, or answers garbage; brokers that refuse the device. The wearable's buttons
# must keep raising alarms on time, and the console must say what is wrong in one line.
import queue
import socket
import threading
import time

import pytest
import vigil_protocol as p

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9


def packets(buf):
    """Split off the whole MQTT packets at the start of buf: (packets, rest)."""
    out = []
    while len(buf) >= 2:
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return out, buf
            length |= (buf[i] & 0x7F) << shift
            i += 1
            if not buf[i - 1] & 0x80:
                break
            shift += 7
        if len(buf) < i + length:
            break
        out.append(buf[:i + length])
        buf = buf[i + length:]
    return out, buf


class StallingProxy:
    """Relays TCP between the wearable and the broker. The broker's packets keep their order;
    one of a type in `hold` ({type: seconds} or {type: (seconds, until)}) goes on that many
    seconds after it arrived, and what comes after it waits behind it; until
    time.monotonic() passes `until`, for ever if none is given. `garble[n]`, if set, is
    sent instead of anything from the broker on connection n (1-based), right after the
    wearable's CONNECT; `inject[n]` is sent after the broker's SUBACK on connection n."""

    def __init__(self, broker_port, hold=None):
        self.broker_port = broker_port
        self.hold = {}
        for kind, rule in (hold or {}).items():
            self.hold[kind] = rule if isinstance(rule, tuple) else (rule, float("inf"))
        self.garble = {}
        self.inject = {}
        self.held = []         # (packet type, seconds) of every packet held
        self.connections = 0
        self.lock = threading.Lock()
        self.sockets = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                n = self.connections
                self.sockets.append(client)
            threading.Thread(target=self._serve, args=(client, n), daemon=True).start()

    def _serve(self, client, n):
        if n in self.garble:
            try:
                client.recv(1024)  # the CONNECT
                client.sendall(self.garble[n])
                time.sleep(2)
            except OSError:
                pass
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.broker_port))
        with self.lock:
            self.sockets.append(upstream)
        threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
        out = queue.Queue()  # (when to send it, packet), in the broker's order
        threading.Thread(target=self._down, args=(out, client, n), daemon=True).start()
        buf = b""
        last = 0
        try:
            while True:
                data = upstream.recv(4096)
                if not data:
                    break
                whole, buf = packets(buf + data)
                for packet in whole:
                    kind = packet[0] >> 4
                    delay, until = self.hold.get(kind, (0, 0))
                    now = time.monotonic()
                    if delay and now < until:
                        self.held.append((kind, delay))
                    else:
                        delay = 0
                    last = max(last, now + delay)  # each held from its own arrival, in order
                    out.put((last, packet))
        except OSError:
            pass
        out.put((0, None))
        upstream.close()

    def _down(self, out, client, n):
        try:
            while True:
                when, packet = out.get()
                if packet is None:
                    break
                time.sleep(max(0, when - time.monotonic()))
                client.sendall(packet)
                if packet[0] >> 4 == SUBACK and n in self.inject:
                    client.sendall(self.inject[n])
        except OSError:
            pass
        client.close()

    @staticmethod
    def _up(client, upstream):
        try:
            while True:
                data = client.recv(4096)
                if not data:
                    break
                upstream.sendall(data)
        except OSError:
            pass
        upstream.close()

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass


def raised_alarms_reach_the_gateway_as_signed(gw, raised):
    """Every alarm the wearable raised (hex of its frame) arrived with its counter, kind and
    a valid MAC: byte for byte, or, for an alarm that waited for a link, sealed again once
    with the same counter and the seconds it waited as its age (SPEC section 12)."""
    alarms = gw.wait_frames("alarm", len(raised), timeout=15)
    assert len(alarms) >= len(raised)
    with gw.lock:
        delivered = {frame.counter: (raw, frame) for _, raw, frame in gw.uplinks
                     if not isinstance(frame, str)}
    for hex_frame in raised:
        first = p.decode(bytes.fromhex(hex_frame), gw.key, p.UP)
        raw, frame = delivered[first.counter]
        assert (frame.kind, frame.ref) == (first.kind, first.ref)
        assert raw.hex() == hex_frame or (first.age == 0 and frame.age >= 1), hex_frame
    return alarms


# What the proxy holds, and when the duress gesture comes: while CONNACK is held, or once
# CONNACK is in and SUBACK is held (the link's _DUE slot: 2, 9); the SOS comes while a
# PUBACK is held in both. Each stall stays inside its deadline (CONNACK 2 * ACK_MS, SUBACK
# and PUBACK ACK_MS: 10 s, 5 s, 5 s).
STALLS = {
    "connack": ({CONNACK: 5.0, PUBACK: 3.0}, CONNACK, {}),
    "suback": ({SUBACK: 2.0, PUBACK: 2.0}, SUBACK, {"duress_when": "suback"}),
}


@pytest.mark.parametrize("stalled", sorted(STALLS))
def test_buttons_raise_alarms_on_time_while_the_broker_holds_connack_suback_or_puback(
        scenario, fake_gateway, mosquitto, stalled):
    hold, awaited, settings = STALLS[stalled]
    gw = fake_gateway()
    proxy = StallingProxy(mosquitto.port, hold=hold)
    try:
        report = scenario("stall", port=proxy.port, timeout=120, **settings)
    finally:
        proxy.close()
    print("duress on flash %s ms after the gesture (%s held), SOS %s ms (PUBACK held)"
          % (report["duress_ms"], stalled.upper(), report["sos_ms"]))
    # The link was waiting for the packet held, at the gesture and when its alarm was raised.
    assert report["up_at_duress"] is False and report["awaiting_at_duress"] == awaited
    assert report["up_after_duress"] is False
    assert report["inflight_at_sos"] is True  # and here for a PUBACK
    assert (awaited, hold[awaited]) in proxy.held
    assert proxy.held.count((PUBACK, hold[PUBACK])) >= 2
    # A behavioural bound: the loop was never blocked for the seconds the broker stalled.
    assert 0 <= report["duress_ms"] < 500 and 0 <= report["sos_ms"] < 500
    assert report["acked"] is True
    alarms = raised_alarms_reach_the_gateway_as_signed(gw, report["raised"])
    assert sorted(f.kind for f in alarms) == [p.SOS, p.DURESS]
    # The stalls stayed within the link's deadlines: it never went down.
    assert report["mqtt"][0].startswith("mqtt: connected to 127.0.0.1:")
    assert not any("link down" in line for line in report["mqtt"][:-1]), report["mqtt"]
    assert report["played"] == []  # a duress alarm is open: nothing shown at all


def test_a_stall_past_the_deadlines_drops_the_link_and_every_alarm_goes_out_after(
        scenario, fake_gateway, mosquitto):
    gw = fake_gateway()
    # CONNACK held past its deadline (2 * ACK_MS, 2 s) for 8 s: every attempt times out; then
    # each PUBACK held past ACK_MS (1 s) for 6 s more.
    now = time.monotonic()
    proxy = StallingProxy(mosquitto.port, hold={CONNACK: (2.5, now + 8),
                                                PUBACK: (1.5, now + 14)})
    try:
        report = scenario("stall", port=proxy.port, mqtt_timing={"ACK_MS": 1000},
                          wait_up_ms=20000, timeout=120)
    finally:
        proxy.close()
    print("duress on flash %s ms after the gesture, SOS %s ms" % (report["duress_ms"],
                                                                 report["sos_ms"]))
    assert 0 <= report["duress_ms"] < 500 and 0 <= report["sos_ms"] < 500
    assert "mqtt: link down: no CONNACK within 2s" in report["mqtt"]
    assert "mqtt: link down: no PUBACK within 1s" in report["mqtt"]
    assert report["acked"] is True
    alarms = raised_alarms_reach_the_gateway_as_signed(gw, report["raised"])
    assert sorted(f.kind for f in alarms) == [p.SOS, p.DURESS]


def test_garbage_from_the_broker_drops_the_link_with_a_reason_and_never_the_app(
        scenario, fake_gateway, mosquitto):
    gw = fake_gateway()
    proxy = StallingProxy(mosquitto.port)
    proxy.garble[1] = b"\x20\x03\x00\x00\x00"           # a CONNACK one byte too long
    proxy.garble[2] = b"\xff\xff\xff\xff\xff\xff\xff"   # noise
    proxy.garble[3] = b"\x20\x02\x00\x05"               # a refusal
    proxy.inject[4] = b"\x50\x02\x00\x01"               # QoS 2 flow, once connected
    try:
        report = scenario("garbled", port=proxy.port, connects=2)
    finally:
        proxy.close()
    lines = report["mqtt"]
    assert lines[:3] == [
        "mqtt: link down: malformed packet from broker (CONNACK of 5 bytes)",
        "mqtt: link down: malformed packet from broker (remaining length longer than 4 bytes)",
        "mqtt: link down: broker refused: not authorised"], lines
    assert lines[3].startswith("mqtt: connected to 127.0.0.1:")
    assert lines[4] == ("mqtt: link down: malformed packet from broker "
                        "(unexpected PUBREC (flags 0))"), lines
    assert lines[5].startswith("mqtt: connected to 127.0.0.1:")
    assert report["up"] and report["acked"] and report["restarts"] == 0
    alarms = gw.wait_frames("alarm", 1)
    assert [(f.kind, f.counter) for f in alarms] == [(p.SOS, report["counter"])]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_console_says_why_the_link_is_down_from_the_first_attempt(
        scenario, mosquitto, mosquitto_factory, tmp_path):
    from tls_ca import make_ca

    secret = "dev-secret-7f3a"
    locked = mosquitto_factory(passwords={"00c0ffee": "the-right-one"},
                               acl="pattern readwrite vigil/#\n")
    tls = make_ca(tmp_path / "pki")
    other = make_ca(tmp_path / "other")
    tls_broker = mosquitto_factory(tls=tls)
    silent = socket.socket()  # takes the connection, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    stalling = StallingProxy(mosquitto.port, hold={PUBACK: 30.0})
    closed = free_port()
    try:
        report = scenario("link_diagnostics", mqtt_timing={"ACK_MS": 1000},
                          cases=[
                              {"port": locked.port, "password": secret},
                              {"port": closed},
                              {"host": "vigil-broker.invalid", "port": 1883},
                              {"port": silent.getsockname()[1]},
                              {"port": stalling.port, "send": True},
                              {"port": tls_broker.tls_port, "ca_file": str(other["cafile"])},
                          ])
    finally:
        silent.close()
        stalling.close()
    cases = report["cases"]
    first = [c["lines"][0] for c in cases]
    assert first[0] in ("mqtt: link down: broker refused: not authorised",
                        "mqtt: link down: broker refused: bad username or password")
    assert first[1] == "mqtt: link down: TCP connection to 127.0.0.1:%d refused" % closed
    assert first[2] == "mqtt: link down: DNS lookup of vigil-broker.invalid failed"
    assert first[3] == "mqtt: link down: no CONNACK within 2s"  # 2 * ACK_MS
    assert first[4].startswith("mqtt: connected to 127.0.0.1:")
    assert cases[4]["sent"] is False
    assert cases[4]["lines"][1] == "mqtt: link down: no PUBACK within 1s"
    assert first[5] == ("mqtt: link down: TLS handshake failed (The certificate is not "
                        "correctly signed by the trusted CA)")
    for case in cases:
        assert case["before"] == "not connected yet"
        assert "link down: " + case["status"] in case["lines"][-1]  # status says the same
        for line in case["lines"]:
            assert secret not in line and "\n" not in line


def test_idle_and_connected_the_link_wakes_only_to_keep_the_connection_alive(scenario):
    report = scenario("idle", keepalive_s=5, idle_ms=10000)
    wakes, pings = report["wakes"], report["pings"]
    per_s = sum(wakes.values()) / 10
    print("idle 10 s, keepalive 5 s: %d pings; task wake-ups %s (%.1f/s for the wearable; "
          "the scenario's battery look every 200 ms included)" % (pings, wakes, per_s))
    assert report["up"] and 3 <= pings <= 5  # one per keepalive/2 with nothing else sent
    # The link's run() reads the socket: it wakes for each PINGRESP, never to poll.
    assert wakes.get("run", 0) <= pings + 1
    # The ping timer, then its PINGRESP; once more if a send moved the timer on.
    assert wakes.get("_keepalive", 0) <= 2 * pings + 1
