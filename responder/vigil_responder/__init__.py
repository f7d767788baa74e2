"""A reference responder backend for Vigil: receives signed incident webhooks and sends
responder actions back through the gateway's actions API.

    backend = ResponderBackend(secret=b"...").start()      # http://127.0.0.1:<port>/vigil
    ...the gateway POSTs incident events to backend.url...
    backend.events             # every accepted event, once per idempotency key, in order
    client = ActionsClient("http://127.0.0.1:9464", token)
    client.act(incident_id, "prompt_double_tap")

Rules (what every backend must do; see the README's "For integrators of responder backends"):
  verify Vigil-Signature over the raw body (webhook.verify: HMAC-SHA256, constant-time, the
  timestamp within 5 minutes) before reading it: a bad one gets 401 and is not stored;
  store first, then answer 2xx: a 2xx tells the wearer DELIVERED;
  deduplicate on the idempotency key: a key seen before gets 200 again and changes nothing (the
  gateway resends what it could not see acknowledged, for example after a crash);
  a DURESS event's procedure says the wearer must not be contacted: never call them.
"""
import http.server
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid

from vigil_gateway import webhook


class ResponderBackend:
    def __init__(self, secret, host="127.0.0.1", port=0, fail=False, on_event=None, tls=None):
        """tls: {"certfile", "keyfile"} to serve https (the gateway verifies the certificate)."""
        self.secret = secret
        self.events = []          # accepted bodies (dicts), one per idempotency key
        self.keys = set()
        self.duplicates = 0
        self.rejected = []        # reasons for refused requests
        self.fail = fail          # True: answer 503 to everything (a backend that is down)
        self.on_event = on_event  # called with each new event (from the server's thread)
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = backend._receive(self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls["certfile"], tls["keyfile"])
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = "%s://%s:%d/vigil" % (scheme, host, self.server.server_address[1])
        self.thread = None

    def _receive(self, headers, body):
        if self.fail:
            return 503
        try:
            webhook.verify(self.secret, headers.get(webhook.SIGNATURE_HEADER, ""), body)
        except webhook.SignatureError as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return 401
        event = json.loads(body)
        with self.lock:
            if event["idempotency_key"] in self.keys:
                self.duplicates += 1
                return 200
            self.keys.add(event["idempotency_key"])
            self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return 200

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.events if predicate(e)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise TimeoutError("no such event within %ss (have %d events)"
                           % (timeout, len(self.events)))


class ActionsClient:
    """The gateway's responder actions API (gateway/openapi.json), with one bearer token.

    version "v2" (the default): times in RFC 3339, UTC with "Z" (sent_at sent so; the audit's
    "at" read so); "v1", for the callers written against it: unix seconds, deprecated by the
    gateway and removed in its next release."""

    def __init__(self, base_url, token, version="v2"):
        if version not in ("v1", "v2"):
            raise ValueError("version is v1 or v2")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.version = version

    def request(self, method, path, payload=None, token=None, raw=None, headers=None):
        data = raw if raw is not None else (
            json.dumps(payload).encode() if payload is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer %s" % (self.token if token is None else token))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if body else None

    def act(self, incident_id, action, note="", request_id=None, sent_at=None):
        """sent_at: unix seconds (now by default), sent in the version's form."""
        sent_at = time.time() if sent_at is None else sent_at
        payload = {"action": action, "request_id": request_id or uuid.uuid4().hex,
                   "sent_at": sent_at if self.version == "v1" else _rfc3339(sent_at)}
        if note:
            payload["note"] = note
        return self.request("POST", "/%s/incidents/%d/actions" % (self.version, incident_id),
                            payload)

    def incident(self, incident_id):
        return self.request("GET", "/%s/incidents/%d" % (self.version, incident_id))


def _rfc3339(t):
    millis = int(round(t * 1000))
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)),
                         millis % 1000)
