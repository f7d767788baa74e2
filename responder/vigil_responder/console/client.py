# A responder at the console without a browser: the same requests a browser makes (sign in,
# the queue, an incident's page, a step posted with the session's CSRF token) and the same
# live stream to wait on. `vigil demo` acts through it, so what it does is in the console's
# audit and on every open page. It reads what the pages show by their ids and data-
# attributes (templates/), the markers the browser tests use too.
import http.cookiejar
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

_VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
_BLOCK = {"br", "dd", "div", "dt", "h1", "h2", "h3", "li", "ol", "p", "section", "td", "th",
          "tr", "ul"}


class ConsoleError(Exception):
    """The console could not be reached, or refused to sign in."""


class Page(HTMLParser):
    """What a page shows: the text of each element with an id (.text, one line; .lines, a
    line per paragraph or item), the queue's rows by lane, and the procedure's buttons
    (data-step) with whether each is enabled."""

    def __init__(self, html):
        super().__init__()
        self._raw, self.rows, self.buttons, self._stack = {}, [], {}, []
        self.feed(html)
        self.lines = {k: [" ".join(line.split()) for line in "".join(v).split("\n")
                          if line.strip()] for k, v in self._raw.items()}
        self.text = {k: " ".join(v) for k, v in self.lines.items()}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in _BLOCK:
            self.handle_data("\n")
        if "data-step" in a:
            self.buttons[a["data-step"]] = "disabled" not in a
        if tag == "li" and "data-incident" in a:
            lanes = [i for _, i in self._stack if i in ("alarms", "faults")]
            self.rows.append({"id": int(a["data-incident"]), "kind": a.get("data-kind"),
                              "lane": lanes[-1] if lanes else None})
        if tag in _VOID:
            return
        if a.get("id"):
            self._raw.setdefault(a["id"], [])
        self._stack.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        if tag in _BLOCK:
            self.handle_data("\n")
        for n in range(len(self._stack) - 1, -1, -1):  # tolerate an unclosed inner element
            if self._stack[n][0] == tag:
                del self._stack[n:]
                return

    def handle_data(self, data):
        for _, element_id in self._stack:
            if element_id:
                self._raw[element_id].append(data)


class ConsoleClient:
    def __init__(self, url, ssl_context=None, timeout=10):
        self.url = url.rstrip("/")
        self.timeout = timeout
        handlers = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        self.csrf = None
        self._changes = threading.Condition()
        self._seen = 0  # events received on the live stream

    def _request(self, path, form=None, timeout=None):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        try:
            reply = self._opener.open(self.url + path, data=data,
                                      timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError as exc:
            raise ConsoleError("the console at %s cannot be reached: %s" % (self.url, exc))
        with reply:
            return reply.status, reply.read().decode(errors="replace")

    def sign_in(self, name, password):
        status, html = self._request("/login", {"name": name, "password": password})
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        if status != 200 or found is None:
            raise ConsoleError("the console refused to sign %s in (HTTP %d)" % (name, status))
        self.csrf = found.group(1)
        threading.Thread(target=self._listen, daemon=True).start()
        return self

    def _listen(self):
        """The live stream: each event wakes wait(). Ends with the console."""
        try:
            reply = self._opener.open(self.url + "/events", timeout=60)
            with reply:
                for line in reply:
                    if line.startswith(b"event:"):
                        with self._changes:
                            self._seen += 1
                            self._changes.notify_all()
        except OSError:
            pass

    def wait(self, look, timeout=20, what="the console to show it"):
        """look() again after each live event (and each second) until it returns something
        true, which is returned; ConsoleError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changes:
                seen = self._seen
            found = look()
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConsoleError("waited %d s for %s" % (timeout, what))
            with self._changes:
                self._changes.wait_for(lambda: self._seen != seen, min(left, 1.0))

    def queue(self):
        """The open incidents as the queue shows them: [{"id", "kind", "lane"}], in order."""
        return Page(self._get("/queue")).rows

    def incident(self, incident_id):
        """An incident's page (Page): .text by element id, .buttons."""
        return Page(self._get("/incidents/%d" % incident_id))

    def step(self, incident_id, step, **form):
        """Post one step as its button does: (True, page) when done, (False, the console's
        reason) when the console or the gateway refused it."""
        status, html = self._request("/incidents/%d/steps/%s" % (incident_id, step),
                                     dict(form, csrf=self.csrf))
        page = Page(html)
        if status == 200 and "incident" in page.text:  # the incident's page again
            return True, page
        return False, page.text.get("error") or "HTTP %d" % status

    def take(self, incident_id, takeover=False):
        form = {"csrf": self.csrf}
        if takeover:
            form["takeover"] = "1"
        return self._request("/incidents/%d/take" % incident_id, form)[0] == 200

    def webhooks(self):
        """The console's webhook counts by result (its /metrics)."""
        counts = {}
        for line in self._get("/metrics").splitlines():
            found = re.match(r'vigil_responder_webhooks_total\{result="(\w+)"\} (\d+)$', line)
            if found:
                counts[found.group(1)] = int(found.group(2))
        return counts

    def _get(self, path):
        status, html = self._request(path)
        if status != 200:
            raise ConsoleError("GET %s answered HTTP %d" % (path, status))
        return html
