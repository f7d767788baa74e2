# The console's rules that hold for every page, action and figure, checked against the console
# as a process (`vigil responder run`): a session for every route its application has (the
# list read from its router, so a route added without a guard fails here), the CSRF token on
# every form post, password and session hashes at rest, an unsigned webhook refused and
# counted, the queue newest alarm first, the audit's lines, and a month's figures from
# incidents at known times (written to its store before it starts).
import asyncio
import calendar
import hashlib
import re
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from aiohttp.test_utils import make_mocked_request

from console_harness import (ACTIONS_BY_GET, EXEMPT, PASSWORD, SECRET, Browser, ConsoleProcess,
                             app_routes, body_json, concrete, event)
from vigil_gateway import webhook
from vigil_responder.console.client import Page
from vigil_responder.console.store import Store

OPEN_SOS = 900  # an open incident for the routes that name one
# November 2026, all resolved: (incident, kind, to the console, to the first step, to resolved)
T0 = calendar.timegm((2026, 11, 10, 9, 0, 0))
KNOWN = ([(100 + n, "SOS", 2.0, s, s + 600) for n, s in
          enumerate((10, 20, 30, 40, 50, 60, 70, 80, 90, 100))]
         + [(110, "SOS", 7.0, 500, 1100)]
         + [(120 + n, "FALL", 3.0, s, s + 240) for n, s in enumerate((30, 40, 60, 90))]
         + [(140 + n, "NO_MOTION", 4.0, s, s + 50) for n, s in
            enumerate((10, 20, 30, 40, 50, 60, 70, 80, 90, 300))]
         + [(130, "DURESS", 1.0, 15, 310)])


def seed(data_dir):
    """The known incidents, each raised an hour after the last, taken by ana (its first step)
    and resolved; and one open SOS raised now."""
    store = Store(data_dir)
    for n, (incident, kind, console, first, resolved) in enumerate(KNOWN):
        raised = T0 + 3600 * n
        store.add_event(body_json(event(incident_id=incident, kind=kind, counter=incident,
                                        at=raised)), now=raised + console)
        store.set_holder(incident, "ana")
        store.add_step(incident, "take", "ana", "done", "took it", at=raised + first)
        at = store.add_step(incident, "resolve", "ana", "done", "resolved: test",
                            at=raised + resolved)
        store.set_resolved(incident, at, "resolved: test")
    store.add_event(body_json(event(incident_id=OPEN_SOS, counter=OPEN_SOS)))
    store.conn.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = ConsoleProcess(tmp_path_factory.mktemp("rules") / "console", users=("ana", "ben"))
    seed(c.dir / "data")
    c.start()
    yield c
    c.stop()


def signed_in(console, name="ana"):
    browser = Browser(console.url)
    assert browser.login(name) == 303
    return browser


def test_every_route_of_the_application_needs_a_session_but_the_named_few(console, tmp_path):
    app, routes = app_routes(console.config, tmp_path / "data")
    assert set(EXEMPT) <= set(routes), "an exempt route that is gone: take it off the list"
    guarded = [r for r in routes if r not in EXEMPT]
    assert guarded, routes
    values = {"id": OPEN_SOS, "step": "contact_wearer"}
    anonymous, ana = Browser(console.url), signed_in(console)
    for method, path in guarded:
        url = concrete(path, **values)
        # the address is this route's, not another's or none (a 404 would pass unnoticed)
        match = asyncio.run(app.router.resolve(make_mocked_request(method, url, app=app)))
        assert match.route.resource.canonical == path, (method, url)
        status, _, headers = anonymous.request(url, {} if method == "POST" else None,
                                               method=method)
        if method == "GET" and path not in ACTIONS_BY_GET:  # a page
            assert (status, headers["Location"]) == (303, "/login"), (method, path)
            assert ana.request(url)[0] == 200, path
        else:  # an action
            assert method == "POST" or path in ACTIONS_BY_GET, (
                "%s %s: a new kind of route: say here what it is" % (method, path))
            assert status == 401, (method, path, status)
        head = anonymous.request(url, method="HEAD")[0] if method == "GET" else None
        assert head in (None, 303, 401), (path, head)  # aiohttp's HEAD beside it, guarded too
    # the exempt ones answer without a session, and say nothing personal
    assert anonymous.request("/login")[0] == 200
    assert anonymous.request("/healthz")[:2] == (200, "ok\n")
    metrics = anonymous.request("/metrics")[1]
    assert "vigil_responder_webhooks_total" in metrics and "A. Worker" not in metrics
    assert anonymous.request("/static/console.css")[0] == 200
    assert anonymous.request("/vigil", {})[0] == 401  # unsigned: its own rule


def test_an_unsigned_webhook_is_refused_and_counted_as_a_bad_signature(console):
    before = console.webhooks("bad_signature")
    body = webhook.encode_body(event(incident_id=901, counter=901))
    req = urllib.request.Request(console.webhook_url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 401
    assert console.webhooks("bad_signature") == before + 1
    assert 'data-incident="901"' not in signed_in(console).request("/")[1]  # nothing stored


def test_forms_without_the_sessions_csrf_token_are_refused(console):
    ana = signed_in(console)
    csrf = ana.csrf("/incidents/%d" % OPEN_SOS)
    step = "/incidents/%d/steps/contact_wearer" % OPEN_SOS
    for form in ({}, {"csrf": ""}, {"csrf": csrf + "x"}, {"csrf": csrf[:-1]}):
        assert ana.request(step, form)[0] == 403, form
        assert ana.request("/logout", form)[0] == 403, form
    assert ben_csrf_is_not_anas(console, csrf)
    page = ana.request("/incidents/%d" % OPEN_SOS)
    assert page[0] == 200  # still signed in: the refused logout did nothing
    assert Page(page[1]).lines["steps"] == []  # and no step was taken
    status, _, headers = ana.request("/logout", {"csrf": csrf})
    assert (status, headers["Location"]) == (303, "/login")
    assert ana.request("/")[0] == 303  # that session is over


def ben_csrf_is_not_anas(console, anas):
    """Another session's token is no good either."""
    ben = signed_in(console, "ben")
    assert ben.request("/incidents/%d/take" % OPEN_SOS, {"csrf": anas})[0] == 403
    return ben.csrf() != anas


def test_the_queue_shows_the_newest_alarm_first_with_its_state_and_age(console):
    now = time.time()
    earlier = event(incident_id=910, kind="SOS", counter=910, at=now - 30, name="Early Bird")
    later = event(incident_id=911, kind="FALL", counter=911, at=now, name="Late Comer")
    held_up = event(incident_id=912, kind="DURESS", counter=912, at=now, name="Held Up")
    held_up["incident"]["raised_at"] = webhook._iso(now - 60)  # arrives last, raised first
    for body in (earlier, later, held_up):
        assert console.post_webhook(body) == 200
    ana = signed_in(console)
    html = ana.request("/")[1]
    alarms = [r["id"] for r in Page(html).rows if r["lane"] == "alarms"]
    assert alarms.index(911) < alarms.index(910) < alarms.index(912), alarms
    assert alarms[0] == 911  # the latest raised of all open alarms
    row = html.split('data-incident="911"')[1].split("</li>")[0]
    assert re.search(r'<span class="state">open · not taken</span>', row)
    since, text = re.search(r'<span class="age" data-since="([0-9.]+)">raised ([^<]+)</span>',
                            row).groups()
    assert abs(float(since) - now) < 0.002  # the raised time, for the page's clock
    assert text == time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(since)))
    ana.request("/incidents/911/take", {"csrf": ana.csrf("/incidents/911")})
    row = ana.request("/")[1].split('data-incident="911"')[1].split("</li>")[0]
    assert '<span class="state">open · with ana</span>' in row


def test_passwords_and_sessions_are_stored_hashed_only(console):
    ana = signed_in(console)
    token = next(c.value for c in ana.jar if c.name == "vigil_console")
    db = sqlite3.connect(str(console.dir / "data" / "console.sqlite3"))
    try:
        hashes = dict(db.execute("SELECT name, password_hash FROM users"))
        sessions = [r[0] for r in db.execute("SELECT token_sha256 FROM sessions")]
    finally:
        db.close()
    assert set(hashes) == {"ana", "ben"}
    for stored in hashes.values():
        assert stored.startswith("scrypt$") and PASSWORD not in stored
        assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}",
                            stored)
    assert hashes["ana"] != hashes["ben"]  # salted: the same password, two hashes
    assert hashlib.sha256(token.encode()).hexdigest() in sessions
    on_disk = b"".join(p.read_bytes() for p in (console.dir / "data").iterdir())
    assert token.encode() not in on_disk and PASSWORD.encode() not in on_disk
    assert SECRET.encode() not in on_disk


def test_every_step_on_the_page_has_its_utc_time_and_its_responder(console):
    ana = signed_in(console)
    raised = T0 + 3600 * 5  # incident 105: SOS, taken 60 s after it was raised
    page = Page(ana.request("/incidents/105")[1])
    clock = lambda t: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))  # noqa: E731
    assert page.lines["steps"] == ["%s · ana · took it" % clock(raised + 60),
                                   "%s · ana · resolved: test" % clock(raised + 660)]
    assert re.search(r"Resolved %s · ana" % re.escape(clock(raised + 660)),
                     page.text["checklist"])
    # and a step taken now, through the page's own form, is shown the same way
    assert console.post_webhook(event(incident_id=913, kind="DURESS", counter=913)) == 200
    before = time.time()
    assert ana.request("/incidents/913/take", {"csrf": ana.csrf("/incidents/913")})[0] == 303
    lines = Page(ana.request("/incidents/913")[1]).lines["steps"]
    assert len(lines) == 1
    found = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC · ana · took it", lines[0])
    assert found, lines
    at = calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
    assert int(before) <= at <= time.time()


def test_a_months_summary_and_chart_from_incidents_at_known_times(console):
    html = signed_in(console).request("/figures?month=2026-11")[1]
    rows = {}
    for kind, cells in re.findall(r'<tr data-kind="(\w+)">(.*?)</tr>', html, re.S):
        rows[kind] = dict(re.findall(r'<td class="(\w+)">([^<]*)</td>', cells),
                          count=re.search(r'class="count">(\d+)<', cells).group(1))
    # first steps: SOS 10..100 s and 500 s (11); FALL 30, 40, 60, 90 s (4); NO_MOTION
    # 10..90 s and 300 s (10); DURESS 15 s. The median of an even count is the mean of the
    # middle two; 90 % is the smallest time that at least 90 % of them took no longer than
    assert rows == {
        "DURESS": {"count": "1", "to_console": "1.0 s · 1.0 s · 1.0 s",
                   "to_first_step": "15.0 s · 15.0 s · 15.0 s",
                   "to_resolved": "5.2 min · 5.2 min · 5.2 min"},
        "FALL": {"count": "4", "to_console": "3.0 s · 3.0 s · 3.0 s",
                 "to_first_step": "50.0 s · 90.0 s · 90.0 s",      # (40 + 60) / 2
                 "to_resolved": "4.8 min · 5.5 min · 5.5 min"},
        "NO_MOTION": {"count": "10", "to_console": "4.0 s · 4.0 s · 4.0 s",
                      "to_first_step": "55.0 s · 90.0 s · 5.0 min",  # 90 %: the 9th of 10
                      "to_resolved": "105.0 s · 2.3 min · 5.8 min"},
        "SOS": {"count": "11", "to_console": "2.0 s · 2.0 s · 7.0 s",
                "to_first_step": "60.0 s · 100.0 s · 8.3 min",     # 90 %: the 10th of 11
                "to_resolved": "11.0 min · 11.7 min · 18.3 min"},
        "all": {"count": "26", "to_console": "3.0 s · 4.0 s · 7.0 s",
                "to_first_step": "55.0 s · 100.0 s · 8.3 min",     # 90 %: the 24th of 26
                "to_resolved": "5.3 min · 11.5 min · 18.3 min"},
    }
    chart = html.split('<svg id="chart"')[1].split("</svg>")[0]
    bars = re.findall(r'<text x="0" y="(\d+)" font-size="13">(\w+)</text>\s*'
                      r'<rect x="130" y="(\d+)" width="(\d+)" height="20"[^>]*></rect>\s*'
                      r'<text x="\d+" y="\d+" font-size="13">([^<]+)</text>', chart)
    assert [b[1] for b in bars] == ["DURESS", "FALL", "NO_MOTION", "SOS"]  # a bar per kind
    assert chart.count("<rect") == 4  # and none for "all"
    medians = {"DURESS": 15, "FALL": 50, "NO_MOTION": 55, "SOS": 60}
    for _, kind, _, width, label in bars:
        assert abs(int(width) - 400 * medians[kind] / 60) < 1, (kind, width)  # in proportion
        assert label == "%.1f s" % medians[kind]
    # the month's incidents, each with its own times
    row = html.split('<tr data-incident="110">')[1].split("</tr>")[0]
    assert re.findall(r'<td class="\w+">([^<]*)</td>', row) == ["7.0 s", "8.3 min", "18.3 min"]
