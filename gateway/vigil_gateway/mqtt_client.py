# paho-mqtt's Client, reading its socket in large chunks.
#
# paho reads a packet with at least three recv() calls (the type byte, each length byte, the
# rest); at thousands of packets a second those calls are a good part of the gateway's time.
# This client reads up to 64 KiB at once and hands paho the bytes it asks for from that buffer.
# And nearly every packet the broker sends the gateway is the PUBACK for one of its acks: paho
# decodes each into a new ReasonCode and a new Properties object (each builds its tables of
# names), which costs more than the rest of the packet's handling; a PUBACK saying just
# "success" gets shared ones here.
# These override two small internal methods of paho (`_sock_recv`, `_handle_pubackcomp`), which
# is why requirements.lock pins paho-mqtt; everything else is paho's own.
#
# Rule: bytes buffered here are invisible to the event loop's selector, so whoever drives
# loop_read() must go on calling it while buffered() is true (mqtt_link.MqttLink does).
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_CHUNK = 65536
_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class BufferedClient(mqtt.Client):
    _buffer = b""
    _position = 0
    _buffered_sock = None  # the socket the buffer came from: a new connection starts empty

    def _sock_recv(self, bufsize):
        if self._buffered_sock is not self._sock or self._position >= len(self._buffer):
            self._buffer, self._position = b"", 0
            self._buffered_sock = self._sock
            chunk = mqtt.Client._sock_recv(self, _CHUNK)  # BlockingIOError: nothing there yet
            if not chunk:
                return chunk  # closed by the broker
            self._buffer = chunk
        start = self._position
        self._position = start + bufsize
        return self._buffer[start:self._position]

    def buffered(self):
        """True while bytes already read from the socket wait here, or in its TLS layer."""
        sock = self._sock
        if sock is None:
            return False
        if sock is self._buffered_sock and self._position < len(self._buffer):
            return True
        pending = getattr(sock, "pending", None)  # TLS: decrypted bytes the selector cannot see
        return bool(pending and pending())

    def _handle_pubackcomp(self, cmd):
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or len(packet) != 2:  # a reason code or properties: paho decodes it
            return mqtt.Client._handle_pubackcomp(self, cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _SUCCESS, _NO_PROPERTIES)
        return mqtt.MQTT_ERR_SUCCESS
