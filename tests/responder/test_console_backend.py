# The console's backend as a process (`vigil responder run`), over HTTP: the webhook's rules
# (signature, freshness, shape, one event per idempotency key, durable through a restart),
# counted refusals, and a session for every page and action.
import http.cookiejar
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from console_harness import PASSWORD, SECRET, TOKEN, ConsoleProcess, event
from vigil_gateway import webhook


@pytest.fixture
def console(tmp_path):
    c = ConsoleProcess(tmp_path / "console").start()
    yield c
    c.stop()


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

    def request(self, path, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=5) as reply:
                return reply.status, reply.read().decode(), reply.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers

    def login(self, name="ana", password=PASSWORD):
        return self.request("/login", {"name": name, "password": password})[0]


def test_signed_event_stored_once_through_a_restart(console):
    raised = event(incident_id=7, name="A. Worker")
    assert console.post_webhook(raised) == 200
    assert console.post_webhook(raised) == 200  # the gateway resending: one event
    assert console.webhooks("stored") == 1 and console.webhooks("duplicate") == 1
    console.stop()
    console.start()
    assert console.post_webhook(raised) == 200
    assert console.webhooks("duplicate") == 1 and console.webhooks("stored") == 0
    browser = Browser(console.url)
    assert browser.login() == 303
    status, page, _ = browser.request("/")
    assert status == 200
    assert page.count('data-incident="7"') == 1 and "A. Worker" in page


def test_bad_webhooks_are_refused_counted_and_logged_on_one_line(console):
    good = webhook.encode_body(event(incident_id=3))
    assert console.post_webhook(raw=good, secret="another-secret") == 401
    assert console.post_webhook(raw=good, signature="nonsense") == 401
    stale = webhook.sign(SECRET.encode(), good, timestamp=time.time() - 301)
    assert console.post_webhook(raw=good, signature=stale) == 401
    assert console.post_webhook(raw=b"{not json") == 400
    assert console.post_webhook(raw=b'{"schema": "vigil.incident.v1"}') == 400
    assert console.webhooks("bad_signature") == 2
    assert console.webhooks("stale") == 1
    assert console.webhooks("malformed") == 2
    assert console.post_webhook(raw=good) == 200  # still up, and nothing refused was stored
    assert console.webhooks("stored") == 1
    refusals = [line for line in console.log().splitlines() if "webhook refused" in line]
    assert len(refusals) == 5
    assert any("idempotency_key is missing" in line for line in refusals)
    assert SECRET not in console.log() and TOKEN not in console.log()


def test_every_page_and_action_needs_a_session_and_posts_a_csrf_token(console):
    assert console.post_webhook(event(incident_id=4)) == 200
    anonymous = Browser(console.url)
    for path in ("/", "/incidents/4", "/queue", "/incidents/4/panel"):
        status, _, headers = anonymous.request(path)
        assert status == 303 and headers["Location"] == "/login"
    assert anonymous.request("/events")[0] == 401
    assert anonymous.request("/incidents/4/steps/contact_wearer", {"csrf": "x"})[0] == 401
    assert anonymous.login(password="wrong password") == 401
    browser = Browser(console.url)
    assert browser.login() == 303
    status, page, _ = browser.request("/incidents/4")
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert browser.request("/incidents/4/take", {})[0] == 403
    assert browser.request("/incidents/4/take", {"csrf": csrf + "x"})[0] == 403
    assert browser.request("/incidents/4/take", {"csrf": csrf})[0] == 303
    assert "Held by</dt><dd id=\"holder\">ana" in browser.request("/incidents/4")[1]
    session = [c for c in browser.jar if c.name == "vigil_console"][0]
    assert session.has_nonstandard_attr("HttpOnly")
