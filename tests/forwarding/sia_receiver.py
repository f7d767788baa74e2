"""DC-09 receivers on loopback, for the forwarding tests: the alarm receiving centre's side.

* start_receiver: pysiaalarm's receiver, every event it accepted in a queue.
* start_siadc09_receiver: a second opinion, a receiver built on the `siadc09` codec (DC-09 with
  the DC-03/DC-05 tables): it parses each line with siadc09 and answers with siadc09's ACK.
* ReplyProxy: sits in front of a real receiver and passes each message through, keeping what
  was sent and changing (or dropping) the receiver's reply, to show how the gateway takes a
  lost, late or mismatched ACK.
"""
import datetime
import queue
import re
import socket
import socketserver
import threading
import time

from pysiaalarm import SIAAccount, SIAClient

from vigil_gateway import dc09


def _wait_listening(port):
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)


def start_receiver(port, accounts, events=None):
    """Start a receiver on `port` for `accounts` ({number: key or None}); returns the client
    (call .stop()) once it accepts connections. Accepted events go to `events` (a Queue)."""
    events = queue.Queue() if events is None else events
    client = SIAClient("127.0.0.1", port,
                       [SIAAccount(number, key) if key else SIAAccount(number)
                        for number, key in accounts.items()],
                       function=events.put)
    client.start()
    _wait_listening(port)
    client.events = events
    return client


def _read_line(sock):
    data = b""
    while not data.endswith(b"\r") and len(data) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def stop(self):
        self.shutdown()
        self.server_close()


def _serve(port, handle):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                handle(self.request)
            except OSError:
                pass

    server = _Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _wait_listening(port)
    return server


def start_siadc09_receiver(port, accounts):
    """A receiver answering with the siadc09 codec, for `accounts` ({number: AES key as bytes,
    or None}). Returns the server (call .stop()); `.events` gets each siadc09 Message it
    acknowledged, `.errors` why it refused a line."""
    from siadc09 import message as sia_message

    numbers = {int(n, 16): key for n, key in accounts.items()}
    events, errors = queue.Queue(), queue.Queue()

    def handle(sock):
        line = _read_line(sock)
        if not line:
            return
        found = re.search(rb'#([0-9A-F]{3,16})\[', line)
        number = int(found.group(1), 16) if found else None
        if number not in numbers:
            errors.put("unknown account")
            sock.sendall(b'"NAK"')
            return
        try:  # siadc09 looks a key up by account:prefix:receiver; None is any context
            msg = sia_message.parse_frame(line, {None: numbers[number]})
        except Exception as exc:  # the receiver's refusal: a NAK carrying its time
            errors.put("%s: %s" % (type(exc).__name__, exc))
            sock.sendall(sia_message.NakMessage().encode())
            return
        events.put(msg)
        ack = sia_message.AckMessage(msg.account, msg.seq, sia_message.now(), msg.encrypted)
        sock.sendall(ack.encode(encrypt=msg.encrypted))

    server = _serve(port, handle)
    server.events, server.errors = events, errors
    return server


class ReplyProxy:
    """Passes each message to the receiver on `target_port` and its reply back through
    `rewrite(message, reply)`: bytes to send instead, or None to send nothing (the ACK is
    lost). `.sent` lists every message that went through."""

    def __init__(self, port, target_port, rewrite=lambda message, reply: reply):
        self.rewrite = rewrite
        self.sent = []

        def handle(sock):
            line = _read_line(sock)
            if not line:
                return
            self.sent.append(line)
            with socket.create_connection(("127.0.0.1", target_port), timeout=5) as up:
                up.sendall(line)
                reply = b""
                while not dc09.reply_complete(reply) and len(reply) < 4096:
                    chunk = up.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            out = self.rewrite(line, reply)
            if out is not None:
                sock.sendall(out)

        self.server = _serve(port, handle)

    def sequences(self):
        return [int(m.group(1)) for m in
                (re.search(rb'"\*?[A-Z-]+"(\d{4})', line) for line in self.sent) if m]

    def stop(self):
        self.server.stop()


def reframe(message):
    """A reply message (text between the header and CR) framed again with its CRC and
    length, after a test changed it."""
    return dc09.frame_line(message)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)
