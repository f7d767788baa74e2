# The responder console as a process (`vigil responder run`), for the console's tests: its
# folder, config, secrets, accounts, and signed webhooks posted to it.
# (A module of its own, not conftest.py: test folders' conftest modules shadow each other.)
import http.cookiejar
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from vigil_gateway import webhook
from vigil_tools.broker import free_port

VIGIL = [sys.executable, "-m", "vigil_tools.cli"]
SECRET = "console-webhook-secret-0123456789"
TOKEN = "console-actions-token-0123456789"
PASSWORD = "correct horse battery"


def private(path, text):
    path = Path(path)
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


class ConsoleProcess:
    def __init__(self, workdir, gateway_url="http://127.0.0.1:9", users=("ana",), tls=None,
                 host="127.0.0.1"):
        """tls: {"certfile", "keyfile"} (tests/tls_ca.py) to serve https."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls, self.host = tls, host
        self.ssl = ssl.create_default_context(cafile=tls["cafile"]) if tls else None
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self.webhook_url = self.url + "/vigil"
        private(self.dir / "secret", SECRET)
        private(self.dir / "token", TOKEN)
        self.config = self.dir / "responder.toml"
        self.gateway_url = gateway_url  # may be set before start()
        self._write_config()
        self.log_path = self.dir / "console.log"
        self.proc = None
        for name in users:
            self.cli("user", "add", name, input=PASSWORD + "\n")

    def _write_config(self):
        tls = ('cert_file = "%s"\nkey_file = "%s"\n' % (self.tls["certfile"], self.tls["keyfile"])
               if self.tls else "")
        self.config.write_text(
            '[console]\nhost = "%s"\nport = %d\ndata_dir = "data"\n%s\n[webhook]\n'
            'secret_file = "secret"\n\n[gateway]\nurl = "%s"\ntoken_file = "token"\n'
            % (self.host, self.port, tls, self.gateway_url))

    def cli(self, *args, input=None):
        result = subprocess.run(VIGIL + ["responder"] + list(args) + ["--config",
                                str(self.config)], input=input, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start(self):
        self._write_config()
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(VIGIL + ["responder", "run", "--config", str(self.config)],
                                     stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60  # a wait, not a measure: the machine is shared
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "console exited:\n" + self.log()
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("console not up:\n" + self.log())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=5, context=self.ssl) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post_webhook(self, payload=None, raw=None, signature=None, secret=SECRET):
        body = raw if raw is not None else webhook.encode_body(payload)
        req = urllib.request.Request(self.webhook_url, data=body, method="POST")
        req.add_header(webhook.SIGNATURE_HEADER,
                       signature if signature is not None else webhook.sign(secret.encode(),
                                                                            body))
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.ssl) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def metrics(self):
        values = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def webhooks(self, result):
        return self.metrics().get('vigil_responder_webhooks_total{result="%s"}' % result, 0)


def event(incident_id=1, kind="SOS", event_name="raised", state="open", counter=1,
          name="A. Worker", at=None):
    """A webhook body as the gateway builds it (vigil_gateway.webhook.incident_payload)."""
    at = time.time() if at is None else at
    return webhook.incident_payload(
        event_name, {"id": incident_id, "kind": kind, "state": state, "counter": counter,
                     "opened_at": at, "updated_at": at}, 0xC0FFEE,
        {"name": name, "contacts": [{"name": "B. Lead", "phone": "+44 1234 567890",
                                     "relation": "supervisor"}], "notes": None},
        [{"at": at, "event": event_name, "detail": event_name}],
        location={"lat": 51.5007, "lon": -0.1246, "accuracy_m": 9,
                  "at": webhook._iso(at)}, sent_at=at)


def body_json(payload):
    return json.loads(webhook.encode_body(payload))


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  NoRedirect)

    def request(self, path, form=None, method=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with self.opener.open(req, timeout=5) as reply:
                return reply.status, reply.read().decode(), reply.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers

    def login(self, name="ana", password=PASSWORD):
        return self.request("/login", {"name": name, "password": password})[0]

    def csrf(self, path="/"):
        return re.search(r'name="csrf" value="([^"]+)"', self.request(path)[1]).group(1)


# The routes that need no session, and why. Every other route of the application is a page
# (GET: 303 to /login without a session) or an action (POST, and GET /events, a stream: 401).
EXEMPT = {
    ("POST", "/vigil"): "the gateway's webhook: its signature (Vigil-Signature) is its "
                        "authentication, and the gateway has no session",
    ("GET", "/login"): "the sign-in page itself",
    ("POST", "/login"): "signing in makes the session",
    ("GET", "/healthz"): "liveness for the service manager: says ok, nothing else",
    ("GET", "/metrics"): "Prometheus scrapes it without a session: counts only, no personal "
                         "data",
    ("GET", "/static"): "the stylesheet and the script, the same for everyone",
}
ACTIONS_BY_GET = {"/events"}  # a GET that is an action: the live stream, 401 without a session


def app_routes(config_path, data_dir):
    """(the application, [(method, canonical path)]) of the console as web.make_app builds it
    for this config, HEAD left out (aiohttp adds one beside each GET)."""
    from vigil_responder.console.config import load
    from vigil_responder.console.store import Store
    from vigil_responder.console.web import Console, make_app

    app = make_app(Console(Store(data_dir), load(config_path)))
    return app, sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                        if r.method != "HEAD"})


def concrete(path, **values):
    """A route's canonical path with its parameters filled in (/static: a file under it)."""
    if path == "/static":
        return "/static/console.css"

    def value(match):
        assert match.group(1) in values, (
            "route %s has a parameter {%s} the test has no value for" % (path, match.group(1)))
        return str(values[match.group(1)])
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", value, path)
