# A TCP relay between one MQTT client (the gateway) and the broker that reads the packets the
# client sends, so a test can stop one chosen PUBLISH at a chosen point:
#
#   proxy = MqttProxy(broker.port).start()       # the gateway connects to proxy.port
#   proxy.hold(match, PUBLISH)   # the first PUBLISH whose payload match()es is kept here: it
#                                # never reaches the broker (as if the client died before writing)
#   proxy.hold(match, PUBACK)    # it reaches the broker, and from then on nothing from the
#                                # broker reaches the client: its PUBACK is held
#   proxy.held.wait(); proxy.held_payload        # the bytes the client handed over
#   proxy.drop()                                 # close the connections (a network cut)
#
# Only whole packets are relayed from the client; the broker's side is relayed as it comes.
import socket
import threading

PUBLISH = "publish"
PUBACK = "puback"


def _remaining_length(buf, start):
    """(length, offset of the body) of the packet at buf[start], or None if incomplete."""
    value, shift, i = 0, 0, start + 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _varint(buf, i):
    value, shift = 0, 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


class MqttProxy:
    def __init__(self, broker_port, host="127.0.0.1"):
        self.broker = (host, broker_port)
        self.server = socket.create_server((host, 0))
        self.port = self.server.getsockname()[1]
        self.held = threading.Event()
        self.held_payload = None
        self.held_topic = None
        self._match = None
        self._mode = None
        self._lock = threading.Lock()
        self._connections = []
        self._closed = False

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def hold(self, match, mode=PUBLISH):
        with self._lock:
            self.held.clear()
            self.held_payload = self.held_topic = None
            self._match, self._mode = match, mode

    def drop(self):
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def close(self):
        self._closed = True
        self.drop()
        self.server.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.broker)
            except OSError:
                client.close()
                continue
            conn = _Connection(self, client, upstream)
            with self._lock:
                self._connections.append(conn)
            conn.start()

    def _judge(self, topic, payload):
        """Called for each PUBLISH from the client: None to relay it, else the hold mode."""
        with self._lock:
            if self._match is None or not self._match(topic, payload):
                return None
            mode, self._match = self._mode, None
            self.held_topic, self.held_payload = topic, payload
        self.held.set()
        return mode


class _Connection:
    def __init__(self, proxy, client, upstream):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.v5 = False
        self.frozen = False  # nothing more from the broker to the client

    def start(self):
        threading.Thread(target=self._up, daemon=True).start()
        threading.Thread(target=self._down, daemon=True).start()

    def close(self):
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self):
        try:
            while True:
                data = self.upstream.recv(65536)
                if not data:
                    break
                if not self.frozen:
                    self.client.sendall(data)
        except OSError:
            pass
        self.close()

    def _up(self):
        buf = b""
        try:
            while True:
                data = self.client.recv(65536)
                if not data:
                    break
                buf += data
                out = []
                while True:
                    header = _remaining_length(buf, 0) if len(buf) >= 2 else None
                    if header is None or header[1] + header[0] > len(buf):
                        break
                    length, body = header
                    packet, buf = buf[:body + length], buf[body + length:]
                    mode = self._inspect(packet, body)
                    if mode != PUBLISH:
                        out.append(packet)
                    if mode == PUBACK:
                        self.frozen = True
                if out:
                    self.upstream.sendall(b"".join(out))
        except OSError:
            pass
        self.close()

    def _inspect(self, packet, body):
        kind = packet[0] >> 4
        if kind == 1:  # CONNECT: protocol name, then the level (5 for MQTT 5)
            name_len = packet[body] << 8 | packet[body + 1]
            self.v5 = packet[body + 2 + name_len] == 5
            return None
        if kind != 3:
            return None
        qos = (packet[0] >> 1) & 3
        i = body
        topic_len = packet[i] << 8 | packet[i + 1]
        topic = packet[i + 2:i + 2 + topic_len].decode(errors="replace")
        i += 2 + topic_len + (2 if qos else 0)
        if self.v5:
            props, i = _varint(packet, i)
            i += props
        return self.proxy._judge(topic, packet[i:])
