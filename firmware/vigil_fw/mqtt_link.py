# The MQTT link (protocol/SPEC.md section 9) over umqtt.simple from micropython-lib.
#
# Rules:
#   connect with the device's own credentials, persistent session, keepalive, last will
#     "offline" (retained) on the status topic; publish "online" once connected
#   subscribe to the device's downlink topic at QoS 1; uplinks are published at QoS 1 and
#     count as sent only when the broker's PUBACK arrives
#   every socket operation has a timeout; any error drops the link and the run loop
#     reconnects after a backoff that doubles up to RETRY_MAX_MS
#   the message callback only hands frames to the inbox
import binascii
import random

from umqtt.simple import MQTTClient, MQTTException
from vigil_protocol._compat import const

from .clock import sleep_ms, ticks_diff, ticks_ms

_POLL_MS = const(20)
_IO_TIMEOUT_S = const(5)


def der(cert):
    """MicroPython's ssl takes the CA in DER form; provisioning may write PEM."""
    if not cert.startswith(b"-----BEGIN"):
        return cert
    body = b""
    for line in cert.split(b"\n"):
        if line and not line.startswith(b"-----"):
            body += line
    return binascii.a2b_base64(body)


class MqttLink:
    name = "mqtt"
    RETRY_FIRST_MS = 500
    RETRY_MAX_MS = 30000

    def __init__(self, config, network=None, log=print):
        self.config = config
        self.network = network  # board's Wi-Fi, or None where the host has a network
        self.log = log
        self.up = False
        self.progress = 0
        self.connects = 0
        self._client = None
        self._raw = None  # the socket under TLS, which is where timeouts are set
        self._inbox = None
        self._up_topic = config.topic("up").encode()
        self._down_topic = config.topic("down").encode()
        self._status_topic = config.topic("status").encode()

    def _connect(self):
        m = self.config.mqtt
        ssl_params = {}
        if m["tls"]:
            import ssl
            with open(m["ca_file"], "rb") as f:
                ssl_params = {"server_hostname": m["host"], "cert_reqs": ssl.CERT_REQUIRED,
                              "cadata": der(f.read())}
        client = MQTTClient("vigil-" + self.config.device_hex, m["host"], port=m["port"],
                            user=m["username"], password=m["password"],
                            keepalive=m["keepalive_s"], ssl=m["tls"], ssl_params=ssl_params)
        client.set_callback(self._on_message)
        client.set_last_will(self._status_topic, b"offline", retain=True, qos=1)
        self._client = client
        client.connect(clean_session=False)
        if m["tls"]:
            import ussl
            self._raw = ussl.last_raw_socket
        else:
            self._raw = client.sock
        self._timeout()
        client.subscribe(self._down_topic, qos=1)
        self._timeout()
        client.publish(self._status_topic, b"online", retain=True, qos=1)
        self.connects += 1
        self.up = True

    def _on_message(self, topic, msg):
        if topic == self._down_topic and self._inbox is not None:
            self._inbox.put(msg, self.name)

    def _timeout(self):
        # umqtt's check_msg() leaves the socket blocking with no timeout: set it back.
        raw = self._raw
        if raw is not None:
            raw.settimeout(_IO_TIMEOUT_S)

    def _drop(self, why):
        if self.up:
            self.log("mqtt: link down (%s)" % why)
        self.up = False
        client, self._client = self._client, None
        if client is not None and client.sock is not None:
            try:
                client.sock.close()
            except OSError:
                pass

    async def run(self, inbox, woke=None):
        self._inbox = inbox
        delay = self.RETRY_FIRST_MS
        while True:
            self.progress += 1
            try:
                if self.network is not None:
                    await self.network.connect()
                self._connect()
                self.log("mqtt: connected to %s:%d" % (self.config.mqtt["host"],
                                                       self.config.mqtt["port"]))
                delay = self.RETRY_FIRST_MS
                if woke is not None:
                    woke()
                last_ping = ticks_ms()
                while self._client is not None:  # until a failed send drops the link
                    self.progress += 1
                    self._client.check_msg()  # non-blocking; dispatches downlinks to _on_message
                    self._timeout()
                    if ticks_diff(ticks_ms(), last_ping) > self.config.mqtt["keepalive_s"] * 500:
                        self._client.ping()
                        last_ping = ticks_ms()
                    await sleep_ms(_POLL_MS)
            except (OSError, MQTTException, IndexError) as exc:
                # IndexError: umqtt reads an empty socket as b""[0] when the broker goes away
                self._drop(repr(exc))
            await sleep_ms(delay + random.getrandbits(8) * delay // 512)
            delay = min(delay * 2, self.RETRY_MAX_MS)

    async def send(self, frame):
        if not self.up or self._client is None:
            return False
        try:
            self._timeout()
            self._client.publish(self._up_topic, frame, qos=1)  # returns after PUBACK
            self._timeout()
            return True
        except (OSError, MQTTException, IndexError) as exc:
            self._drop(repr(exc))
            return False
