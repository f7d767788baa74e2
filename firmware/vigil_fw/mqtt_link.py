# The MQTT link (protocol/SPEC.md section 9): a small MQTT 3.1.1 client of our own on asyncio
# streams, so that nothing a broker does, or fails to do, holds up the event loop. Packets are
# built and parsed by mqtt_packets.py; this file does the waiting. Interface: link.py.
#
# Rules:
#   connect with the device's own credentials, client id "vigil-<dev>", a persistent session
#     (clean_session 0), keepalive, and a last will "offline" (retained) on the status topic;
#     subscribe to the downlink topic at QoS 1, then publish "online" (retained)
#   every wait on the broker has a deadline: TCP (and TLS), then CONNACK, within 2 * ACK_MS
#     each; SUBACK, PUBACK and PINGRESP within ACK_MS. A missed deadline, a malformed packet
#     or a socket error drops the link; run() connects again after a backoff (RETRY_FIRST_MS
#     doubling to RETRY_MAX_MS, with jitter)
#   no polling: while connected, run() reads the socket (waiting on it in the scheduler) and
#     one keepalive task sleeps until keepalive/2 has passed with nothing sent, then pings.
#     Idle, that is one wake-up per keepalive/2, and the PINGRESP. A task that finds the
#     link dead closes the socket, which ends run()'s read at once
#   writes never wait: a packet is encoded into the one send buffer and handed to the socket
#     before any await; a socket that cannot take it whole (the broker has stopped reading)
#     drops the link
#   an uplink counts as sent only once the PUBACK for its packet id arrives; every QoS 1
#     downlink is acknowledged after its payload is handed to the inbox (nothing else here)
#   the broker's name is looked up once and kept: MicroPython's getaddrinfo blocks the loop
#     while the DNS server answers. It is looked up again after a TCP connection to the
#     address failed
#   every drop and failed attempt is one console line "mqtt: link down: <why>", and `status`
#     holds the same words from the moment the link is found down until it is up again; no
#     secret is ever part of them
#   memory: send and receive buffers sized once, at start; packets parsed in place; a
#     downlink too long for the receive buffer is acknowledged and skipped. Few methods,
#     attributes (at most 16, so the instance's table stays small; small counters in one
#     list) and string constants (the console's words are the lines of _TEXTS): each costs
#     heap even run in place from ROMFS
import asyncio
import binascii
import errno
import random
import socket

from vigil_protocol._compat import const
from vigil_protocol.frames import MAX_FRAME

from . import mqtt_packets
from .mqtt_packets import MqttError, line
from .clock import Flag, TimeoutError, sleep_ms, ticks_add, ticks_diff, ticks_ms, wait_for
from .clock import wait_for_ms

_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_PINGRESP = const(13)
_SLOTS = const(2)      # uplinks awaiting their PUBACK at once (the sender's and a check-in)
# self.n[i]: for i < _SLOTS an uplink's state (0 free, a packet id awaiting its PUBACK,
# _ACKED, _DROPPED), then the ping's, then the counters below.
_PING = const(2)
_USED = const(3)       # bytes in self.data
_SKIP = const(4)       # bytes still to come of a downlink too long for self.data
_DUE = const(5)        # CONNACK or SUBACK while one is awaited
_PID = const(6)        # the last packet id used
_STAGE = const(7)      # how far the connection got: _TCP, _TLS, _MQTT
_SENT = const(8)       # ticks_ms when a packet last went out
_WHY = const(9)        # why this connection went down, once a task other than run() knows
_ACKED = const(-1)
_DROPPED = const(-2)
_TCP = const(0)
_TLS = const(1)
_MQTT = const(2)

# What the console and `status` say, by line (mqtt_packets.line() picks one).
_TEXTS = ("mqtt: connected to %s\n"
          "mqtt: link down: %s\n"
          "no %s within %ds\n"
          "TCP connection to %s\n"
          "TLS handshake with %s\n"
          "CA file %s unusable (%s)\n"
          "DNS lookup of %s failed\n"
          "broker closed the connection\n"
          "broker not reading (send buffer full)\n"
          "broker refused: %s\n"
          "broker refused the subscription to %s\n"
          "malformed packet from broker (%s)\n"
          "TLS handshake failed (%s)\n"
          "TCP connection to %s refused\n"
          "TCP connection to %s failed (%s)\n"
          "connection to %s lost (%s)\n"
          "mqtt: downlink of %d bytes skipped (longer than any frame)\n"
          "not connected yet\n"
          "packet of type %d before CONNACK\n"
          "unexpected %s\n"
          "SUBACK for packet id %d, not %d")
_CONNECTED = const(0)
_LINK_DOWN = const(1)
_NO = const(2)
_TCP_TO = const(3)
_TLS_TO = const(4)
_CA_FILE = const(5)
_DNS = const(6)
_CLOSED = const(7)
_NOT_READING = const(8)
_REFUSED = const(9)
_NO_SUBSCRIPTION = const(10)
_MALFORMED = const(11)
_TLS_FAILED = const(12)
_TCP_REFUSED = const(13)
_TCP_FAILED = const(14)
_LOST = const(15)
_SKIPPED = const(16)
_NOT_YET = const(17)
_BEFORE_CONNACK = const(18)
_UNEXPECTED = const(19)
_WRONG_SUBACK = const(20)


def der(cert):
    """MicroPython's ssl takes the CA in DER form; provisioning may write PEM: then the
    first certificate's base64, between its BEGIN and END lines."""
    if cert[:5] != b"-----":
        return cert
    return binascii.a2b_base64(cert.split(b"-----")[2])


class MqttLink:
    name = "mqtt"
    RETRY_FIRST_MS = 500
    RETRY_MAX_MS = 30000
    ACK_MS = 5000

    def __init__(self, config, network=None, log=print):
        self.config = config
        self.network = network  # the board's Wi-Fi (wifi.WiFi), or None where the host has one
        self.log = log
        self.up = False
        self.status = line(_TEXTS, _NOT_YET)
        self.connects = 0
        self._up_topic = config.topic("up").encode()
        self._down_topic = config.topic("down").encode()
        # Send buffer: room for CONNECT (will topic, password) and for an uplink of MAX_FRAME.
        self._buf = memoryview(bytearray(len(config.topic("status")) + 54 + max(
            len(config.mqtt["password"].encode()), MAX_FRAME - 49)))
        self.data = memoryview(bytearray(MAX_FRAME + 16 + len(self._down_topic)))  # received
        self._inbox = None
        self.stream = None  # type: tuple | None  # (reader, writer): one Stream on MicroPython
        self.address = None  # the broker's, once looked up
        self.tasks = None    # the keepalive task while connected
        self.n = [0] * 10  # type: list
        self.n[_SENT] = ticks_ms()
        self.flags = []      # set when the uplink in slot i, or the ping, is done with
        for _ in range(_SLOTS + 1):
            self.flags.append(Flag())

    async def run(self, inbox, woke=None):
        self._inbox = inbox
        n = self.n
        m = self.config.mqtt
        where = "%s:%d" % (m["host"], m["port"])
        delay = self.RETRY_FIRST_MS
        while True:
            self._drop(None)  # whatever the last connection left
            n[_USED] = n[_SKIP] = 0
            n[_WHY] = None
            n[_STAGE] = _TLS if m["tls"] else _TCP
            ms = 2 * self.ACK_MS
            what = line(_TEXTS, _TCP_TO, where)
            try:
                if self.network is not None:
                    await self.network.connect()
                ctx = None
                if m["tls"]:
                    import ssl
                    try:
                        with open(m["ca_file"], "rb") as f:
                            ca = der(f.read())
                        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                        # Not the default on every MicroPython (1.29 leaves CERT_NONE); the
                        # board's stubs lack it.
                        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
                        ctx.load_verify_locations(cadata=ca)
                        ca = None
                    except (OSError, ValueError) as exc:
                        raise OSError(line(_TEXTS, _CA_FILE, (m["ca_file"], exc)))
                if self.address is None:
                    try:
                        addr = socket.getaddrinfo(m["host"], m["port"], 0,
                                                  socket.SOCK_STREAM)[0][-1]
                    except (OSError, IndexError):
                        raise OSError(line(_TEXTS, _DNS, m["host"]))
                    # (host, port) on a board and on CPython; the unix port's is packed.
                    self.address = addr[0] if isinstance(addr, tuple) else m["host"]
                    del addr
                if ctx is None:
                    opening = asyncio.open_connection(self.address, m["port"])
                else:
                    opening = asyncio.open_connection(self.address, m["port"], ssl=ctx,
                                                      server_hostname=m["host"])
                stream = await wait_for_ms(opening, ms)  # type: tuple
                self.stream = stream
                del opening  # nor ctx: the stream keeps what it needs
                ctx = None
                status = self.config.topic("status").encode()
                self.write(mqtt_packets.connect(
                    self._buf, b"vigil-" + self.config.device_hex.encode(), m["keepalive_s"],
                    m["username"].encode(), m["password"].encode(), status, b"offline"))
                if m["tls"]:
                    what = line(_TEXTS, _TLS_TO, where)  # MicroPython's, as CONNECT goes out
                await wait_for_ms(stream[1].drain(), ms)
                del stream
                n[_STAGE] = _MQTT
                what = "CONNACK"
                await wait_for_ms(self._take(_CONNACK), ms)
                n[_PID] = n[_PID] % 65535 + 1  # the SUBACK names it
                self.write(mqtt_packets.control(self._buf, 0x82, n[_PID], self._down_topic))
                ms = self.ACK_MS
                what = "SUBACK"
                await wait_for_ms(self._take(_SUBACK), ms)
                # Its PUBACK is not awaited: an uplink waiting here would wait for nothing.
                n[_PID] = n[_PID] % 65535 + 1
                self.write(mqtt_packets.publish(self._buf, status, b"online", 1, n[_PID], True))
                status = what = None
                self.tasks = asyncio.create_task(self._keepalive())
                self.up = True
                self.status = ""
                self.connects += 1
                delay = self.RETRY_FIRST_MS
                self.log(line(_TEXTS, _CONNECTED, where))
                if woke is not None:
                    woke()
                while True:
                    await self._take()
            except asyncio.CancelledError:
                self._drop(None, False)  # stopped by the app: the socket is left as it is
                raise
            except TimeoutError:
                self._drop(line(_TEXTS, _NO, (what, ms // 1000)))
            except Exception as exc:  # noqa: BLE001 - whatever it was, connect again later
                self._drop(n[_WHY] or self._why(exc))
            await sleep_ms(delay + random.getrandbits(8) * delay // 512)
            delay = min(delay * 2, self.RETRY_MAX_MS)

    async def send(self, frame):
        if not self.up or len(frame) > MAX_FRAME:
            return False
        n = self.n
        i = 0
        while n[i]:
            i += 1
            if i == _SLOTS:
                return False  # as many uplinks as the link carries at once are in flight
        n[_PID] = pid = n[_PID] % 65535 + 1
        n[i] = pid
        self.flags[i].clear()
        try:
            self.write(mqtt_packets.publish(self._buf, self._up_topic, frame, 1, pid))
            await wait_for(self.flags[i], self.ACK_MS)
        except Exception as exc:  # noqa: BLE001
            self._drop(self._why(exc), True, False)
        finally:
            state = n[i]
            n[i] = 0
        if state == _ACKED:
            return True
        if state > 0:
            self._drop(line(_TEXTS, _NO, ("PUBACK", self.ACK_MS // 1000)), True, False)
        return False

    async def _keepalive(self):
        n = self.n
        half = self.config.mqtt["keepalive_s"] * 500
        try:
            while True:
                wait = ticks_diff(ticks_add(n[_SENT], half), ticks_ms())
                if wait > 0:
                    await sleep_ms(wait)
                    continue
                n[_PING] = 1
                self.flags[_PING].clear()
                self.write(mqtt_packets.control(self._buf, 0xC0))  # PINGREQ
                await wait_for(self.flags[_PING], self.ACK_MS)
                if n[_PING] != _ACKED:
                    self._drop(line(_TEXTS, _NO, ("PINGRESP", self.ACK_MS // 1000)), True,
                               False)
                    return
        except Exception as exc:  # noqa: BLE001
            self._drop(self._why(exc), True, False)

    def _drop(self, why, close=True, stop=True):
        """Close the connection (when `close`). With `stop` (run() cleaning up): stop the
        keepalive task, fail the uplinks awaiting a PUBACK, and give `why`, if any, to the
        console and status. Without (another task found the link dead): status says why,
        and closing the socket ends run()'s read."""
        self.up = False
        n = self.n
        if not stop:
            if n[_WHY] is None:
                n[_WHY] = self.status = why
        else:
            if self.tasks is not None:
                self.tasks.cancel()
                self.tasks = None
            for i in range(_SLOTS + 1):
                if n[i] > 0:
                    n[i] = _DROPPED  # its send() returns False now, not at its deadline
                    self.flags[i].set()
            if why is not None:
                self.status = why
                self.log(line(_TEXTS, _LINK_DOWN, why))
        stream = self.stream
        if close and stream is not None:
            self.stream = None
            try:
                stream[1].close()
                s = getattr(stream[1], "s", None)  # MicroPython's Stream.close() leaves it open
                if s is not None:
                    s.close()
            except OSError:
                pass

    def write(self, size):
        """Send the first `size` bytes of the send buffer."""
        stream = self.stream
        if stream is None:
            raise OSError(line(_TEXTS, _CLOSED))
        w = stream[1]
        data = self._buf[:size]
        mp = hasattr(w, "out_buf")  # MicroPython's Stream copies what the socket does not take
        w.write(data if mp else bytes(data))  # CPython's transport may keep a view instead
        self.n[_SENT] = ticks_ms()
        if mp and self.n[_STAGE] == _MQTT and getattr(w, "out_buf"):
            raise OSError(line(_TEXTS, _NOT_READING))

    async def _take(self, kind=0):
        """Read and act on one packet, or (kind given) on packets until one of that kind."""
        data = self.data
        n = self.n
        n[_DUE] = kind
        while True:
            used = n[_USED]
            got = mqtt_packets.read(data, used, self._down_topic) if used else None
            if got is None:
                stream = self.stream
                if stream is None:
                    raise OSError(line(_TEXTS, _CLOSED))
                if hasattr(stream[0], "readinto"):  # MicroPython: straight into the buffer
                    size = await stream[0].readinto(data[used:])
                    if size is None:
                        continue  # TLS: no whole record yet
                else:
                    chunk = await stream[0].read(len(data) - used)
                    data[used:used + len(chunk)] = chunk
                    size = len(chunk)
                if not size:
                    raise OSError(line(_TEXTS, _CLOSED))
                skip = min(n[_SKIP], size)
                if skip:  # used is 0 while the rest of a long downlink is skipped
                    n[_SKIP] -= skip
                    data[0:size - skip] = data[skip:size]
                    size -= skip
                n[_USED] = used + size
                continue
            size, t, x, y = got
            if n[_DUE] == _CONNACK and t != _CONNACK:
                raise MqttError(line(_TEXTS, _BEFORE_CONNACK, t))
            if t == _PUBLISH:
                if size > len(data):
                    self.log(line(_TEXTS, _SKIPPED, size))
                elif y >= 0:
                    self._inbox.put(data[y:size], self.name)  # type: ignore[union-attr]
                if x:
                    self.write(mqtt_packets.control(self._buf, 0x40, x))  # PUBACK
            elif t == _PUBACK or t == _PINGRESP:
                for i in range(_SLOTS + 1):
                    if n[i] > 0 and (i == _PING) == (t == _PINGRESP) and \
                            (t == _PINGRESP or n[i] == x):
                        n[i] = _ACKED
                        self.flags[i].set()
            elif t != n[_DUE]:
                raise MqttError(line(_TEXTS, _UNEXPECTED,
                                     "CONNACK" if t == _CONNACK else "SUBACK"))
            elif t == _CONNACK:
                if x:
                    raise OSError(line(_TEXTS, _REFUSED, y))
                n[_DUE] = 0
            elif x != n[_PID]:
                raise MqttError(line(_TEXTS, _WRONG_SUBACK, (x, n[_PID])))
            elif y == 0x80:
                raise OSError(line(_TEXTS, _NO_SUBSCRIPTION, self._down_topic.decode()))
            else:
                n[_DUE] = 0
            if size < used:
                data[0:used - size] = data[size:used]
                n[_USED] = used - size
            else:
                n[_SKIP] = size - used  # the rest of a packet too long for data
                n[_USED] = 0
            if not n[_DUE]:
                return

    def _why(self, exc):
        """What failed, in one line for the console; never a secret."""
        a = exc.args[0] if exc.args else None
        stage = self.n[_STAGE]
        where = "%s:%d" % (self.config.mqtt["host"], self.config.mqtt["port"])
        if isinstance(exc, MqttError):
            why = line(_TEXTS, _MALFORMED, a)
        elif stage == _TLS and isinstance(exc, ValueError):
            why = line(_TEXTS, _TLS_FAILED, str(a).strip())  # MicroPython: the CA check
        elif not isinstance(exc, OSError):
            why = repr(exc)
        elif isinstance(a, str):
            why = a  # our own words, or the Wi-Fi's
        else:
            if isinstance(a, int) and -256 < a < 0:
                a = -a  # a socket error passed up through the TLS library
            detail = str(exc.args[1]).strip() if len(exc.args) > 1 else \
                errno.errorcode.get(a, a)
            if a == errno.ECONNREFUSED:
                self.address = None
                why = line(_TEXTS, _TCP_REFUSED, where)
            elif stage == _TLS or (isinstance(a, int) and a < 0):
                why = line(_TEXTS, _TLS_FAILED, detail)
            elif stage == _TCP:
                self.address = None
                why = line(_TEXTS, _TCP_FAILED, (where, detail))
            else:
                why = line(_TEXTS, _LOST, (where, detail))
        return " ".join(why.split())
