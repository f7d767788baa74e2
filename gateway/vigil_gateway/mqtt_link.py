# The MQTT link to the broker, through paho-mqtt, behind a small interface:
#   run()            the supervised connect / subscribe / wait-for-loss loop; returns after stop()
#   publish(t, b)    one downlink, QoS 1; with confirm=True, a future the broker's PUBACK resolves
#   ack(token)       acknowledge one received message to the broker (PUBACK), after it is on disk
#   connected        an asyncio.Event, set while connected and subscribed
#   unconfirmed      downlinks published and not yet confirmed by the broker
#
# Rules:
#   MQTT 5, clean_start false and a session that never expires, a stable client id: what arrives
#   while the gateway is down waits at the broker (protocol/SPEC.md §9);
#   manual acks: the broker keeps a message until the service has it on disk and has queued its
#   RECEIVED ack, so a crash at any point makes the broker deliver it again (a retransmission);
#   a token from an earlier connection is never acked on a later one (packet ids restart);
#   a publish is the broker's only once its PUBACK is here: publish(..., confirm=True) gives a
#   future resolved then with the PUBACK's reason code (0: taken; 16: taken, but no session is
#   subscribed, so nobody will get it; 128 and up: refused). A connection lost before the PUBACK
#   leaves the future pending: paho keeps the message (its session) and sends it again, same
#   packet id, same bytes, after the next CONNACK, and that PUBACK resolves it. A gateway that
#   dies meanwhile loses the future, not the downlink: the service republishes what no PUBACK
#   confirmed from the store (service.py);
#   paho runs on the event loop itself (its socket watched with add_reader/add_writer, its
#   timers driven by a small task): no network thread, no locks, no hand-offs per message;
#   only the blocking connect (DNS, TCP, TLS handshake) runs in an executor thread;
#   the reconnect loop here is explicit, with exponential backoff, and paho never reconnects
#   alone.
import asyncio
import logging
import socket
import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import logs
from .mqtt_client import LeanClient
from .pipeline import Message

log = logging.getLogger("vigil_gateway.mqtt")
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
_CONNECT_TIMEOUT_S = 10.0
_MISC_EVERY_S = 1.0
_READS_PER_WAKEUP = 100
_TCP_CORK = getattr(socket, "TCP_CORK", None)  # Linux
# What a confirming publish resolves with besides a PUBACK's reason code.
NOT_QUEUED = -1
NO_SUBSCRIBERS = 16  # MQTT 5 PUBACK: accepted, but no subscription matched (no session holds it)


class MqttLink:
    def __init__(self, settings, topics, deliver, password=None, metrics=None):
        self.settings = settings      # the [mqtt] section of the config
        self.topics = topics
        self.deliver = deliver        # called on the event loop with each Message
        self.password = password
        self.metrics = metrics
        self.connected = asyncio.Event()
        self._stopping = False
        self._loop = None
        self._loop_thread = None
        self.unconfirmed = 0  # downlinks published, not yet confirmed by the broker
        self._confirming = {}  # packet id -> future, for publish(..., confirm=True)
        self._generation = 0
        self._down = None
        self._connack = None
        self._suback = None
        self._suback_mid = None
        self.client = self._make_client()

    # -- the interface --
    def publish(self, topic, payload, confirm=False):
        """Publish at QoS 1. With confirm, return a future resolved with the PUBACK's reason
        code (an int, 0 = success) once the broker has answered, or NOT_QUEUED at once when
        paho could not take the message."""
        info = self.client.publish(topic, payload, qos=1)
        self.unconfirmed += 1
        if not confirm:
            return None
        future = asyncio.get_running_loop().create_future()
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # paho dropped it (its packet id is still taken by an unconfirmed message)
            self.unconfirmed = max(0, self.unconfirmed - 1)
            future.set_result(NOT_QUEUED)
        else:
            self._confirming[info.mid] = future
        return future

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # The broker has answered this downlink (PUBACK): when it took it, it is the broker's
        # to deliver now.
        self.unconfirmed = max(0, self.unconfirmed - 1)
        future = self._confirming.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(getattr(reason_code, "value", reason_code))

    def ack(self, token):
        if token is None:  # QoS 0: nothing to acknowledge
            return
        generation, mid = token
        # Messages may arrive before the SUBACK (a resumed session): ack those too, but never
        # one from an earlier connection.
        if generation == self._generation:
            self.client.ack(mid, 1)

    def stop(self):
        self._stopping = True
        self.client.disconnect()
        if self._down is not None:
            self._down.set()

    async def run(self):
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        misc = asyncio.create_task(self._misc())
        try:
            await self._supervise()
        finally:
            misc.cancel()

    async def _misc(self):
        # paho's timers: keepalive pings, and noticing a broker that went silent.
        while True:
            await asyncio.sleep(_MISC_EVERY_S)
            if self.client.socket() is not None:
                self.client.loop_misc()

    async def _supervise(self):
        delay = self.settings.reconnect_min_s
        while not self._stopping:
            if await self._connect_once():
                delay = self.settings.reconnect_min_s
                await self._down.wait()
                self.connected.clear()
                if self.metrics is not None:
                    self.metrics.mqtt_connected.set(0)
                logs.event(log, logging.WARNING if not self._stopping else logging.INFO,
                           "mqtt_disconnected", stopping=self._stopping)
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    # -- one connection --
    async def _connect_once(self):
        s = self.settings
        self._down = asyncio.Event()
        self._connack = self._loop.create_future()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        props.ReceiveMaximum = s.receive_maximum
        # A new generation before any message of this connection can arrive.
        self._generation += 1
        try:
            await self._loop.run_in_executor(None, lambda: self.client.connect(
                s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=props))
        except (OSError, ssl.SSLError, ValueError) as exc:
            logs.event(log, logging.WARNING, "mqtt_connect_failed", host=s.host, port=s.port,
                       error="%s: %s" % (type(exc).__name__, exc))
            return False
        try:
            reason = await asyncio.wait_for(self._connack, _CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            reason = "no CONNACK within %.0f s" % _CONNECT_TIMEOUT_S
        if reason is not None:
            logs.event(log, logging.ERROR, "mqtt_refused", host=s.host, port=s.port,
                       reason=str(reason))
            self.client.disconnect()
            return False
        self._suback = self._loop.create_future()
        options = SubscribeOptions(qos=1)
        result, self._suback_mid = self.client.subscribe(
            [(self.topics.uplink_filter(s.shared_group), options),
             (self.topics.status_filter(s.shared_group), options)])
        try:
            granted = await asyncio.wait_for(self._suback, _CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            granted = None
        if not granted or any(code.is_failure for code in granted):
            logs.event(log, logging.ERROR, "mqtt_subscribe_refused",
                       reasons=[str(c) for c in granted or []])
            self.client.disconnect()
            return False
        self.connected.set()
        if self.metrics is not None:
            self.metrics.mqtt_connected.set(1)
            self.metrics.mqtt_connects.inc()
        logs.event(log, logging.INFO, "mqtt_connected", host=s.host, port=s.port,
                   tls=s.tls.enabled, subscribed=self.topics.uplink_filter(s.shared_group))
        return True

    # -- paho's callbacks, all on the event loop (socket ones may come from the connect thread) --
    def _make_client(self):
        s = self.settings
        client = LeanClient(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                                protocol=mqtt.MQTTv5, manual_ack=True,
                                reconnect_on_failure=False)
        # 0 = no limit on our unacknowledged ack publishes: paho rescans its whole outgoing
        # queue on every PUBACK while below a limit, which costs more than the acks themselves.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        if s.username:
            client.username_pw_set(s.username, self.password)
        if s.tls.enabled:
            client.tls_set(ca_certs=s.tls.ca_file, certfile=s.tls.cert_file or None,
                           keyfile=s.tls.key_file or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _on_loop(self, fn, *args):
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client, userdata, sock):
        _no_delay(sock)
        self._on_loop(self._loop.add_reader, sock, self._readable, sock)

    def _on_socket_close(self, client, userdata, sock):
        self._on_loop(self._forget_socket, sock)

    def _forget_socket(self, sock):
        try:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        except (ValueError, OSError):  # already closed (a connect that failed half-way)
            pass

    def _on_register_write(self, client, userdata, sock):
        self._on_loop(self._loop.add_writer, sock, self._writable)

    def _on_unregister_write(self, client, userdata, sock):
        self._on_loop(self._loop.remove_writer, sock)

    def _readable(self, sock):
        # paho reads only a few packets per call: go on while the client holds bytes it has
        # read (the selector does not see those), so the ingest loop gets whole batches (one
        # commit each) rather than a trickle.
        for _ in range(_READS_PER_WAKEUP):
            self.client.loop_read()
            if self.client.socket() is not sock:
                return
            if not self.client.buffered():
                return
        self._loop.call_soon(self._readable, sock)  # more buffered: after the others' turn

    def _writable(self):
        # paho sends each queued packet on its own (a batch's acks and PUBACKs are a thousand
        # small packets): corked, the kernel sends them in full segments when uncorked.
        sock = self.client.socket()
        _cork(sock, 1)
        try:
            self.client.loop_write()
        finally:
            _cork(sock, 0)

    def _resolve(self, future, value):
        if future is not None and not future.done():
            future.set_result(value)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._resolve(self._connack, reason_code if reason_code.is_failure else None)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid == self._suback_mid:
            self._resolve(self._suback, list(reason_codes))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        # May run in the connect thread when the connection fails at once.
        self._on_loop(self._down.set)
        self._on_loop(self._resolve, self._connack, reason_code)

    def _on_message(self, client, userdata, message):
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "<not utf-8>"
        token = (self._generation, message.mid) if message.qos else None
        self.deliver(Message(topic, message.payload, token))


def _cork(sock, on):
    if _TCP_CORK is not None and isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, on)
        except OSError:
            pass


def _no_delay(sock):
    # Acks are small packets: without TCP_NODELAY, Nagle's algorithm meets the broker's delayed
    # ACK and holds each one for tens of milliseconds.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
