# paho-mqtt's Client, with less work per packet on the gateway's hot path.
#
# For each alarm the gateway reads two packets (the uplink PUBLISH, the broker's PUBACK for
# its ack) and paho spends more on them than on anything else the gateway does:
#   * it reads a packet with at least three recv() calls (the type byte, each length byte, the
#     rest): this client reads up to 64 KiB at once and hands paho the bytes it asks for from
#     that buffer;
#   * it decodes every PUBLISH and PUBACK into new Properties objects (and a ReasonCode for a
#     PUBACK), each of which builds its tables of names: a QoS 1 PUBLISH without properties
#     (what the broker sends us) and a PUBACK saying just "success" are decoded here instead,
#     the way paho does; anything else still goes to paho. Such a message's `properties` is
#     None (it has none).
# These override three small internal methods of paho (`_sock_recv`, `_handle_publish`,
# `_handle_pubackcomp`), which is why requirements.lock pins paho-mqtt; connecting, sessions,
# publishing and acknowledging are paho's own.
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


class LeanClient(mqtt.Client):
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

    def _handle_publish(self):
        header, packet = self._in_packet["command"], self._in_packet["packet"]
        size = len(packet)
        topic_end = 2 + (packet[0] << 8 | packet[1]) if size >= 2 else 0
        if (header & 0x06 != 0x02 or self._protocol != mqtt.MQTTv5 or topic_end == 2
                or size <= topic_end + 2 or packet[topic_end + 2] != 0):
            return mqtt.Client._handle_publish(self)  # not QoS 1, or has properties
        message = mqtt.MQTTMessage(packet[topic_end] << 8 | packet[topic_end + 1],
                                   bytes(packet[2:topic_end]))
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[topic_end + 3:])
        message.timestamp = mqtt.time_func()
        self._handle_on_message(message)
        if self._manual_ack:
            return mqtt.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)
