# The console's backend as a process (`vigil responder run`), over HTTP: the webhook's rules
# (signature, freshness, shape, one event per idempotency key, durable through a restart),
# counted refusals, and a session for every page and action.
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from console_harness import SECRET, TOKEN, VIGIL, Browser, ConsoleProcess, event
from tls_ca import make_ca
from vigil_gateway import webhook


@pytest.fixture
def console(tmp_path):
    c = ConsoleProcess(tmp_path / "console").start()
    yield c
    c.stop()


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
    breaks_a_page = event(incident_id=3)
    breaks_a_page["wearer"]["contacts"] = ["not an object"]
    assert console.post_webhook(breaks_a_page) == 400
    assert console.webhooks("bad_signature") == 2
    assert console.webhooks("stale") == 1
    assert console.webhooks("malformed") == 3
    assert console.post_webhook(raw=good) == 200  # still up, and nothing refused was stored
    assert console.webhooks("stored") == 1
    refusals = [line for line in console.log().splitlines() if "webhook refused" in line]
    assert len(refusals) == 6
    assert any("idempotency_key is missing" in line for line in refusals)
    assert any("wearer.contacts is not a list of objects" in line for line in refusals)
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


def test_a_late_duress_alarm_says_so_and_gives_the_police_the_time_it_was_raised(console):
    arrived = time.time()
    late = event(incident_id=5, kind="DURESS", at=arrived)
    late["incident"]["raised_at"] = webhook._iso(arrived - 92)
    late["incident"]["late"] = {"late_by_s": 92.0, "basis": ["age"], "possibly_held_s": None}
    assert console.post_webhook(late) == 200
    browser = Browser(console.url)
    browser.login()
    page = browser.request("/incidents/5")[1]
    assert "LATE ALARM: raised at least 92 s before it reached the gateway" in page
    raised = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(arrived - 92))
    script = page.split('id="police-script"')[1].split("</section>")[0]
    assert "Alarm raised at %s at the latest; it reached us late." % raised in script
    figures = browser.request("/figures")[1]
    row = figures.split('<tr data-incident="5">')[1].split("</tr>")[0]
    assert "<td>%s</td>" % raised in row
    assert re.search(r'class="to_console">9[23]\.\d s<', row)  # raised, not arrived, counts


def test_a_place_from_the_beacon_table_is_shown_and_a_stale_location_says_so(console):
    at = time.time()
    indoors = event(incident_id=8, kind="DURESS", at=at)
    indoors["location"] = {  # a beacon without coordinates; the wearable's old GNSS fix
        "source": "ble", "place": "Pump room", "floor": "1", "room": "B12", "lat": None,
        "lon": None, "accuracy_m": None, "at": webhook._iso(at - 4), "age_s": 4,
        "stale": False, "fix": {"lat": 51.5, "lon": -0.12, "accuracy_m": 25,
                                "at": webhook._iso(at - 300), "age_s": 300, "stale": True}}
    assert console.post_webhook(indoors) == 200
    outdoors = event(incident_id=9, kind="SOS", at=at, counter=2)
    outdoors["location"] = {"source": "gnss", "place": None, "lat": 51.5007, "lon": -0.1246,
                            "accuracy_m": 9, "at": webhook._iso(at - 90), "age_s": 90,
                            "stale": True, "fix": None}
    assert console.post_webhook(outdoors) == 200
    browser = Browser(console.url)
    browser.login()
    queue = browser.request("/")[1]
    assert "Location: Pump room, floor 1, room B12, by beacon, at " in queue
    script = browser.request("/incidents/8")[1].split('id="police-script"')[1]
    assert re.search(r"Last known location: Pump room, floor 1, room B12, by beacon, at [^;]+; "
                     r"GNSS fix 51\.50000, -0\.12000 \(within 25 m\), at [^(]+\(STALE\)\.",
                     script)
    page = browser.request("/incidents/9")[1]
    assert re.search(r'id="location">51\.50070, -0\.12460 \(within 9 m\), by GNSS, at [^(]+'
                     r'\(STALE: over 60 s old\)', page)
    for bad in ({"place": 7}, {"fix": "here"}, {"fix": {"lat": "51.5"}}):
        body = event(incident_id=10)
        body["location"].update(bad)
        assert console.post_webhook(body) == 400
    assert console.webhooks("malformed") == 3


def test_a_step_the_gateway_did_not_take_is_shown_refused_never_done(console):
    # the console's gateway URL answers nothing: the step is tried, then shown as refused
    assert console.post_webhook(event(incident_id=6, kind="SOS")) == 200
    browser = Browser(console.url)
    browser.login()
    csrf = re.search(r'name="csrf" value="([^"]+)"', browser.request("/incidents/6")[1]).group(1)
    status, page, _ = browser.request("/incidents/6/steps/contact_wearer", {"csrf": csrf})
    assert status == 409 and "Not done: the gateway did not take it (unreachable" in page
    page = browser.request("/incidents/6")[1]
    assert 'class="refused"' in page and "REFUSED: the gateway did not take acknowledge" in page
    assert 'data-step="contact_wearer"' in page  # still to do: its button is there
    assert 'data-step="prompt_double_tap" disabled' in page


def test_served_over_tls_when_configured_and_never_in_clear_off_loopback(tmp_path):
    files = make_ca(tmp_path / "ca")
    console = ConsoleProcess(tmp_path / "tls", tls=files).start()
    try:
        context = ssl.create_default_context(cafile=files["cafile"])
        with urllib.request.urlopen(console.url + "/login", context=context, timeout=5) as r:
            assert r.status == 200 and "Sign in" in r.read().decode()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(console.url.replace("https", "http") + "/login", timeout=5)
    finally:
        console.stop()
    exposed = ConsoleProcess(tmp_path / "exposed", host="0.0.0.0", users=())
    result = subprocess.run(VIGIL + ["responder", "run", "--config", str(exposed.config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("vigil responder: console.cert_file: the console on "
                                     "0.0.0.0 is reachable from the network: give it TLS "
                                     "(cert_file and key_file)")


def test_a_location_update_moves_the_wearer_on_the_page_and_raises_no_alarm(console):
    at = time.time()
    raised = event(incident_id=11, kind="SOS", at=at, counter=4)
    assert console.post_webhook(raised) == 200
    update = event(incident_id=11, kind="SOS", event_name="location_updated", at=at + 30,
                   counter=4)
    update["idempotency_key"] = "00c0ffee-4-location_updated-1"  # as the gateway numbers them
    update["location"] = {
        "source": "ble", "place": "Pump room", "floor": "1", "room": "B12", "lat": None,
        "lon": None, "accuracy_m": None, "at": webhook._iso(at + 28), "age_s": 2,
        "stale": False, "fix": None}
    assert console.post_webhook(update) == 200
    browser = Browser(console.url)
    browser.login()
    page = browser.request("/incidents/11")[1]
    assert "Pump room, floor 1, room B12, by beacon" in page
    assert "51.50070" not in page.split('id="location">')[1].split("</dd>")[0]
    queue = browser.request("/")[1]
    assert queue.count('data-incident="11"') == 1  # the same incident, not a new alarm
    assert console.webhooks("stored") == 2
