# The console in a real headless Chromium (Debian's, driven by Playwright), fed by a real
# gateway (`vigil gateway run`) on a real Mosquitto, from a wearable's MQTT side publishing
# signed frames: an SOS shows up without a reload, the checklist keeps its order, the prompt
# reaches the gateway and the wearable, the tap comes back to the page; a duress page has no
# control that would contact or cue the wearer; a resolution needs a reason; two responders see
# who holds an incident. One browser and one site for the module.
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import vigil_protocol as p
from console_harness import (ACTIONS_BY_GET, EXEMPT, PASSWORD, SECRET, TOKEN, ConsoleProcess,
                             app_routes, concrete, event)
from vigil_responder import ActionsClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import Device, GatewayProcess, key_for, wait_for, write_secret  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DEV = 0x00C0FF18
KEY = key_for(DEV)
SILENT = 0x00C0FF19  # a wearable that checks in once and then says nothing: LOST_CONTACT
SHOTS = Path(os.environ.get("VIGIL_ARTIFACTS", Path(__file__).resolve().parents[2] / ".venv"
                            / "artifacts")) / "console"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # make setup installs it (requirements.lock)
    sync_playwright = None


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("playwright is not installed (make setup installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no %s: make setup installs Debian's chromium where apt can" % CHROMIUM)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Site:
    """A gateway forwarding to the console, the console acting through the gateway's API."""

    def __init__(self, tmp, broker_port):
        write_secret(tmp / "gw-secret", SECRET)
        write_secret(tmp / "gw-tokens", "console %s\n" % TOKEN)
        self.console = ConsoleProcess(tmp / "console", users=("ana", "ben"))
        self.broker_port = broker_port
        self.prefix = "console-" + uuid.uuid4().hex[:8]
        self.gw = GatewayProcess(
            tmp / "gw", broker_port, mqtt={"prefix": self.prefix},
            forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
            supervision={"grace_s": 1, "check_every_s": 0.2},  # DEV keeps the 300 s default
            **{"forward.webhook": {"url": self.console.webhook_url,
                                   "secret_file": str(tmp / "gw-secret")},
               "actions": {"tokens_file": str(tmp / "gw-tokens")}})
        self.gw.add_device(DEV, KEY)
        self.gw.add_device(SILENT, key_for(SILENT))
        self.gw.cli("wearer", "set", "%08x" % DEV, "--name", "Dana Field",
                    "--contact", "Sam Lead,+44 1234 567890,supervisor")
        self.console.gateway_url = "http://127.0.0.1:%d" % self.gw.http_port
        self.api = ActionsClient(self.console.gateway_url, TOKEN, version="v2")
        self.console.start()
        self.gw.start()
        self.device = Device(broker_port, DEV, KEY, prefix=self.prefix, client_id=self.prefix)

    def lose_contact(self):
        """SILENT checks in, saying it will again within a second, then never does."""
        silent = Device(self.broker_port, SILENT, key_for(SILENT), prefix=self.prefix,
                        client_id=self.prefix + "-silent")
        try:
            silent.publish(silent.checkin(interval=1))
            silent.wait_acked([1])
        finally:
            silent.close()

    def alarm(self, kind, **ext):
        counter = self.device.next_counter()
        self.device.publish(p.encode(p.Alarm(DEV, counter, kind, **ext), self.device.key))
        return counter

    def incident_for(self, counter):
        wait_for(lambda: any(i["counter"] == counter for i in self.gw.incidents()),
                 what="the gateway's incident")
        return next(i for i in self.gw.incidents() if i["counter"] == counter)["id"]

    def gateway_audit(self, incident, details=False):
        status, body = self.api.incident(incident)
        assert status == 200
        return [(a["event"], a["detail"]) if details else a["event"] for a in body["audit"]]

    def api_requests(self):
        """(method, path) of each request the gateway's actions API answered, from its log."""
        lines = [json.loads(line) for line in self.gw.log().splitlines()
                 if '"api_request"' in line]
        return [(line["method"], line["path"]) for line in lines
                if line.get("event") == "api_request"]

    def close(self):
        self.device.close()
        self.gw.stop()
        self.console.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory, mosquitto):
    s = Site(tmp_path_factory.mktemp("console-site"), mosquitto.port)
    yield s
    s.close()


# Counts what the page's audio does, from inside the page: each tone started (its frequency
# and whether the browser let the audio context run), and the loudest sample that reached the
# output (an analyser tapped beside every connection to the speakers).
EARS = """
window.__tones = []; window.__peak = 0;
(function () {
  var taps = [], connect = AudioNode.prototype.connect, start = OscillatorNode.prototype.start;
  AudioNode.prototype.connect = function (to) {
    if (to instanceof AudioDestinationNode) {
      var tap = this.context.createAnalyser();
      connect.call(this, tap);
      taps.push(tap);
    }
    return connect.apply(this, arguments);
  };
  OscillatorNode.prototype.start = function () {
    window.__tones.push({hz: this.frequency.value, state: this.context.state});
    return start.apply(this, arguments);
  };
  setInterval(function () {
    taps.forEach(function (tap) {
      var samples = new Float32Array(tap.fftSize);
      tap.getFloatTimeDomainData(samples);
      for (var i = 0; i < samples.length; i++)
        window.__peak = Math.max(window.__peak, Math.abs(samples[i]));
    });
  }, 20);
})();
"""


def tones(page):
    return page.evaluate("window.__tones")


def signed_in(browser, site, name="ana"):
    """A responder's page after signing in, as they do: typing and clicking (a gesture the
    browser counts for sound)."""
    context = browser.new_context()
    context.add_init_script(EARS)
    page = context.new_page()
    page.goto(site.console.url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("#sign-in")
    expect(page.locator("#responder-name")).to_have_text(name)
    expect(page.locator("#live")).to_have_text("live")  # the event stream is open
    return page


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def post_step(page, incident, step, **form):
    """A request built by hand, with the page's own session and CSRF token."""
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    reply = page.request.post("%s/incidents/%d/steps/%s" % (
        page.url.split("/incidents")[0], incident, step),
        form=dict(form, csrf=csrf), max_redirects=0)
    return reply.status


def test_sos_arrives_live_and_its_checklist_keeps_order_to_the_wearable(browser, site):
    page = signed_in(browser, site)
    sos = site.alarm(p.SOS, location=(515007000, -1246000, 9))
    row = page.locator("#alarms li[data-kind=SOS]")
    expect(row).to_have_count(1)  # pushed to the open page: no reload
    expect(page.locator("#cue")).to_be_visible()
    expect(row).to_contain_text("Dana Field")
    expect(row.locator(".state")).to_have_text("open · not taken")
    expect(row.locator("a .age")).to_have_text(re.compile(r"^age \d+ s$"))  # since raised
    expect(row.locator(".where")).to_contain_text("51.50070, -0.12460 (within 9 m)")
    expect(row.locator(".where .age")).to_have_text(re.compile(r"^age \d+ s$"))  # of the fix
    expect(row.locator(".contacts")).to_contain_text("Sam Lead (supervisor), +44 1234 567890")
    shot(page, "queue.png")
    incident = site.incident_for(sos)
    row.locator("a").click()
    expect(page.locator("#incident")).to_have_attribute("data-kind", "SOS")

    # the order: nothing but the call before the call
    for step in ("prompt_double_tap", "help_dispatched", "resolve"):
        expect(page.locator("button[data-step=%s]" % step)).to_be_disabled()
    assert post_step(page, incident, "prompt_double_tap") == 409
    assert post_step(page, incident, "help_dispatched") == 409
    assert "prompt_double_tap" not in site.gateway_audit(incident)

    page.click("button[data-step=contact_wearer]")
    expect(page.locator("[data-step-item=contact_wearer]")).to_contain_text("ana")
    page.click("button[data-step=prompt_double_tap]")
    expect(page.locator("#prompt-sent")).to_contain_text("sent")
    assert "prompt_double_tap" in site.gateway_audit(incident)
    wait_for(lambda: any(isinstance(f, p.Action) and f.action == p.PROMPT_DOUBLE_TAP
                         and f.ref == sos for f in list(site.device.downlinks.queue)),
             what="the prompt on the wearable's down topic")
    # The wearable's receipt for the prompt: the page says when it was played.
    prompt = next(f for f in list(site.device.downlinks.queue)
                  if isinstance(f, p.Action) and f.action == p.PROMPT_DOUBLE_TAP)
    site.device.publish(p.encode(p.Receipt(site.device.device_id, site.device.next_counter(),
                                           prompt.counter), site.device.key, 2))
    expect(page.locator("#prompt-sent")).to_contain_text("played on the wearable")

    site.device.publish(site.device.alarm(p.DOUBLE_TAP, ref=sos))
    expect(page.locator("#tapped")).to_have_text(re.compile(r"\d\d:\d\d:\d\d UTC"))  # live
    expect(page.locator("#state")).to_contain_text("needs_help")
    page.click("button[data-step=help_dispatched]")
    expect(page.locator("[data-step-item=help_dispatched]")).to_contain_text("ana")
    shot(page, "sos.png")

    page.click("button[data-step=resolve]")  # no reason chosen
    expect(page.locator("#error")).to_contain_text("a resolution needs a reason")
    assert "resolved" not in site.gateway_audit(incident)
    page.select_option("#reason", "false_alarm")
    page.click("button[data-step=resolve]")
    expect(page.locator("#resolution")).to_contain_text("false alarm")
    assert "resolved" in site.gateway_audit(incident)
    steps = page.locator("#steps li")
    expect(steps.last).to_contain_text("ana")
    # every step with its time (UTC) and the responder; the gateway's audit names them too
    lines = [" ".join(t.split()) for t in steps.all_inner_texts()]
    assert lines[0].endswith(" · ana · took it") and " · ana · Wearer called" in lines[1]
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · ana · .+", line), line
    details = dict(site.gateway_audit(incident, details=True))
    for event_name, step in (("acknowledged", "Wearer called"),
                             ("prompt_double_tap", "Asked to tap twice"),
                             ("help_dispatched", "Help dispatched"),
                             ("resolved", "resolved: false alarm")):
        assert re.search(r"by console, request \w+; %s.* \(by ana\)$" % re.escape(step),
                         details[event_name]), details[event_name]
    status, again = site.api.act(incident, "resolve")  # ActionsClient on /v2/ as well
    assert (status, again["effect"]) == (200, "none")
    # the console spoke to the gateway's /v2/ only (/v1/ is deprecated)
    posted = [path for method, path in site.api_requests() if method == "POST"]
    assert "/v2/incidents/%d/actions" % incident in posted
    assert not [path for _, path in site.api_requests() if path.startswith("/v1/")]
    page.context.close()


def test_duress_page_has_no_contact_control_and_reads_out_to_the_police(browser, site):
    page = signed_in(browser, site)
    duress = site.alarm(p.DURESS, location=(515007000, -1246000, 9))
    row = page.locator("#alarms li[data-kind=DURESS]")
    expect(row).to_have_count(1)
    incident = site.incident_for(duress)
    row.locator("a").click()
    expect(page.locator("#do-not-contact")).to_contain_text("do NOT contact the wearer")
    html = page.content()
    for control in ("contact_wearer", "prompt_double_tap", "acknowledge"):
        assert page.locator("[data-step=%s]" % control).count() == 0  # absent, not hidden
        assert control not in html
    assert "tap twice" not in html.lower() and "Wearer called" not in html
    script = page.locator("#police-script")
    for fact in ("Dana Field", "51.50070, -0.12460", "Sam Lead", "+44 1234 567890",
                 "Alarm raised at"):
        expect(script).to_contain_text(fact)
    shot(page, "duress.png")

    # a crafted request for a prompt is refused by the console and never reaches the gateway
    assert post_step(page, incident, "prompt_double_tap") == 409
    assert post_step(page, incident, "contact_wearer") == 409
    assert "prompt_double_tap" not in site.gateway_audit(incident)

    expect(page.locator("button[data-step=inform_contacts]")).to_be_disabled()
    page.click("button[data-step=police]")
    expect(page.locator("[data-step-item=police]")).to_contain_text("ana")
    page.click("button[data-step=inform_contacts]")
    page.select_option("#reason", "other")
    page.click("button[data-step=resolve]")  # "other" says nothing: refused
    expect(page.locator("#error")).to_contain_text("say what the other reason is")
    page.select_option("#reason", "other")
    page.fill("#reason-text", "police attended, wearer safe")
    page.click("button[data-step=resolve]")
    expect(page.locator("#resolution")).to_contain_text("police attended")
    audit = site.gateway_audit(incident)
    assert "help_dispatched" in audit and "resolved" in audit
    assert "prompt_double_tap" not in audit
    page.context.close()


def test_supervision_and_faults_keep_their_lane_and_never_bury_an_alarm(browser, site):
    page = signed_in(browser, site)
    site.lose_contact()
    lost = page.locator("#faults li[data-kind=LOST_CONTACT]")
    expect(lost).to_have_count(1, timeout=30_000)  # 1 s interval, 1 s grace, then pushed
    site.alarm(p.LOW_BATTERY)
    expect(page.locator("#faults li[data-kind=LOW_BATTERY]")).to_have_count(1)
    for kind in ("LOST_CONTACT", "LOW_BATTERY"):
        assert page.locator("#alarms li[data-kind=%s]" % kind).count() == 0
    expect(page.locator("#cue")).to_be_hidden()  # a fault is not announced as an alarm
    assert tones(page) == []
    shot(page, "faults.png")

    sos = site.incident_for(site.alarm(p.SOS))  # after them: still first of all
    first = page.locator("#queue li[data-incident]").first
    expect(first).to_have_attribute("data-incident", str(sos))
    expect(page.locator("#alarms li[data-incident]").first).to_have_attribute(
        "data-incident", str(sos))
    expect(page.locator("#cue")).to_be_visible()
    expect(page.locator("#faults li")).to_have_count(2)  # still there, in their lane
    page.context.close()


def test_a_new_alarm_is_seen_at_once_and_heard_once_the_browser_allows_sound(browser, site):
    # Signed in by clicking: the browser counts the click, so the queue after it has sound.
    ana = signed_in(browser, site)
    expect(ana.locator("#sound")).to_have_text("Sound on")
    # The same session in a page no one has clicked in yet (a browser reopened on the queue):
    # the browser keeps its audio suspended until a click, and the console says so.
    context = browser.new_context()
    context.add_init_script(EARS)
    context.add_cookies(ana.context.cookies())
    quiet = context.new_page()
    quiet.goto(site.console.url + "/")
    expect(quiet.locator("#live")).to_have_text("live")
    expect(quiet.locator("#sound")).to_have_text("Sound off: click to turn on")

    site.alarm(p.FALL)
    for page in (ana, quiet):  # seen on both: the banner and the tab's title
        expect(page.locator("#cue")).to_be_visible()
        expect(page).to_have_title(re.compile("^NEW ALARM"))
    wait_for(lambda: ana.evaluate("window.__peak") > 0.1, what="the tone at the output")
    assert [t["hz"] for t in tones(ana)] == [880] and tones(ana)[0]["state"] == "running"
    assert tones(quiet) == [] and quiet.evaluate("window.__peak") == 0  # not heard: no click

    quiet.click("#cue-seen")  # the click the browser waits for
    expect(quiet.locator("#cue")).to_be_hidden()
    expect(quiet.locator("#sound")).to_have_text("Sound on")
    site.alarm(p.SOS)
    expect(quiet.locator("#cue")).to_be_visible()
    wait_for(lambda: quiet.evaluate("window.__peak") > 0.1, what="the tone at the output")
    assert [t["hz"] for t in tones(quiet)] == [880]
    assert len(tones(ana)) == 2  # one tone per new alarm
    ana.context.close()
    context.close()


def test_two_responders_see_who_holds_it(browser, site):
    ana, ben = signed_in(browser, site, "ana"), signed_in(browser, site, "ben")
    fall = site.incident_for(site.alarm(p.FALL))
    ana.goto("%s/incidents/%d" % (site.console.url, fall))
    ben.goto("%s/incidents/%d" % (site.console.url, fall))
    ana.click("#take")
    expect(ben.locator("#holder")).to_have_text("ana")  # live, on the other screen
    expect(ben.locator("#take-over")).to_contain_text("Take it over from ana")
    assert post_step(ben, fall, "contact_wearer") == 409  # ana has it
    ben.click("#take-over")
    expect(ben.locator("#holder")).to_have_text("ben")
    expect(ben.locator("#steps")).to_contain_text("took it over from ana")
    expect(ana.locator("#take-over")).to_contain_text("Take it over from ben")
    ana.context.close()
    ben.context.close()


def test_a_page_open_through_a_console_restart_gets_what_came_meanwhile(browser, site):
    page = signed_in(browser, site)
    before = page.locator("#alarms li[data-kind=SOS]").count()
    site.console.stop()
    expect(page.locator("#live")).to_have_text("reconnecting…")
    site.alarm(p.SOS)  # the gateway keeps it and retries until the console takes it
    site.console.start()
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#alarms li[data-kind=SOS]")).to_have_count(before + 1)
    page.goto(site.console.url + "/figures")
    expect(page.locator("#summary tr[data-kind=all] .count")).not_to_have_text("0")
    first_sos = page.locator("#incidents tr[data-incident]").filter(has_text="SOS").first
    expect(first_sos.locator(".to_resolved")).to_have_text(re.compile(r"^\d+\.\d s$"))
    page.context.close()


def test_a_step_the_gateway_refuses_is_shown_refused_never_done(browser, site):
    # an incident the console was told of (signed) and the gateway does not have
    assert site.console.post_webhook(event(incident_id=9999, kind="SOS")) == 200
    page = signed_in(browser, site)
    page.goto("%s/incidents/9999" % site.console.url)
    page.click("button[data-step=contact_wearer]")
    expect(page.locator("#error")).to_contain_text("Not done: the gateway did not take it "
                                                   "(not_found")
    expect(page.locator("#steps li.refused")).to_contain_text("REFUSED")
    expect(page.locator("button[data-step=contact_wearer]")).to_be_enabled()  # still to do
    expect(page.locator("button[data-step=prompt_double_tap]")).to_be_disabled()
    page.context.close()


def test_a_prompt_the_gateway_refuses_on_duress_is_shown_refused_never_done(browser, site):
    # The gateway has a duress alarm; a signed webhook crafted to call it an SOS makes the
    # console offer (and send) a prompt. The gateway, which knows better, refuses it.
    duress = site.alarm(p.DURESS)
    incident = site.incident_for(duress)
    page = signed_in(browser, site)
    expect(page.locator("#alarms li[data-incident='%d']" % incident)).to_have_attribute(
        "data-kind", "DURESS")
    assert site.console.post_webhook(event(incident_id=incident, kind="SOS",
                                           counter=duress + 50000, name="Dana Field")) == 200
    page.goto("%s/incidents/%d" % (site.console.url, incident))
    expect(page.locator("#incident")).to_have_attribute("data-kind", "SOS")
    page.click("button[data-step=contact_wearer]")  # acknowledge: the gateway takes it
    expect(page.locator("[data-step-item=contact_wearer]")).to_contain_text("ana")
    page.click("button[data-step=prompt_double_tap]")
    expect(page.locator("#error")).to_contain_text("Not done: the gateway did not take it")
    expect(page.locator("#error")).to_contain_text("duress")
    expect(page.locator("#steps li.refused")).to_contain_text(
        "REFUSED: the gateway did not take prompt_double_tap")
    expect(page.locator("#prompt-sent")).to_have_text("not sent")
    expect(page.locator("[data-step-item=prompt_double_tap] .tick")).to_have_count(0)
    expect(page.locator("button[data-step=prompt_double_tap]")).to_be_enabled()  # still to do
    assert page.url == "%s/incidents/%d" % (site.console.url, incident)
    page.reload()  # shows it again from the store, and sends nothing again
    expect(page.locator("#error")).to_have_count(0)
    expect(page.locator("#steps li.refused")).to_have_count(1)
    expect(page.locator("#prompt-sent")).to_have_text("not sent")
    assert "prompt_double_tap" not in site.gateway_audit(incident)
    assert not any(isinstance(f, p.Action) and f.ref == duress
                   for f in list(site.device.downlinks.queue))  # nothing cued the wearer
    page.context.close()


def test_without_a_session_every_page_goes_to_sign_in_and_every_action_is_refused(
        browser, site, tmp_path):
    assert site.console.post_webhook(event(incident_id=9998, kind="SOS", counter=9998)) == 200
    _, routes = app_routes(site.console.config, tmp_path / "data")  # the router's own list
    guarded = [(m, concrete(path, id=9998, step="contact_wearer")) for m, path in routes
               if (m, path) not in EXEMPT]
    pages = [url for m, url in guarded if m == "GET" and url not in ACTIONS_BY_GET]
    actions = [(m, url) for m, url in guarded if not (m == "GET" and url in pages)]
    assert "/" in pages and "/incidents/9998" in pages and ("POST", "/logout") in actions
    context = browser.new_context()  # a fresh browser: no cookie
    page = context.new_page()
    for url in pages:
        page.goto(site.console.url + url)
        assert page.url == site.console.url + "/login", url
        expect(page.locator("#sign-in")).to_be_visible()
    for method, url in actions:
        reply = context.request.fetch(site.console.url + url, method=method,
                                      form={"csrf": "x"} if method == "POST" else None,
                                      max_redirects=0)
        assert reply.status == 401, (method, url, reply.status)
    assert [c for c in context.cookies() if c["name"] == "vigil_console"] == []
    page2 = context.new_page()
    page2.goto(site.console.url + "/incidents/9998")
    assert "SOS" not in page2.content() and "A. Worker" not in page2.content()
    context.close()


def test_an_open_page_whose_session_ended_goes_to_sign_in(browser, site):
    page = signed_in(browser, site)
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert page.request.post(site.console.url + "/logout", form={"csrf": csrf},
                             max_redirects=0).status == 303
    site.console.stop()  # the open stream ends; its reconnection is refused (401)
    site.console.start()
    page.wait_for_url("**/login")
    page.context.close()


def test_vigil_responder_demo_prints_the_console_and_its_wearable_alarms_show_there(browser):
    demo = subprocess.Popen([sys.executable, "-m", "vigil_tools.cli", "responder", "demo"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [demo.stdout.readline() for _ in range(3)]
        url = re.search(r"console at (http://\S+/)", lines[0]).group(1)
        password = re.search(r"sign in as demo, password (\S+)", lines[1]).group(1)
        assert "is up" in lines[2], lines
        page = browser.new_context().new_page()
        page.goto(url + "login")
        page.fill("input[name=name]", "demo")
        page.fill("input[name=password]", password)
        page.click("#sign-in")
        expect(page.locator("#live")).to_have_text("live")
        demo.stdin.write("sos\n")
        demo.stdin.flush()
        expect(page.locator("#alarms li[data-kind=SOS]")).to_contain_text("Alex Example")
        page.context.close()
        demo.stdin.write("quit\n")
        demo.stdin.flush()
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()



class Output:
    """A process's output lines, read as they come (a thread), so a wait can time out."""

    def __init__(self, proc):
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in proc.stdout],
                         daemon=True).start()

    def until(self, text, timeout=90):
        """The lines up to the first that contains text (a wait, not a measure)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                continue
            if text in seen[-1]:
                return "".join(seen)
        raise AssertionError("no %r within %d s in:\n%s" % (text, timeout, "".join(seen)))


def test_vigil_demo_opens_with_the_console_and_the_demo_happens_on_it(browser):
    demo = subprocess.Popen([sys.executable, "-m", "vigil_tools.cli", "demo", "--stay"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output = Output(demo)
        opening = output.until("sign in as demo")
        assert "Procedure 1" not in opening  # the console first, to watch the rest
        url = re.search(r"console at (http://\S+/)", opening).group(1)
        password = re.search(r"sign in as demo, password (\S+)", opening).group(1)
        page = browser.new_context().new_page()
        page.goto(url + "login")
        page.fill("input[name=name]", "demo")
        page.fill("input[name=password]", password)
        page.click("#sign-in")
        expect(page.locator("#live")).to_have_text("live")
        rest = output.until("the console stays up")
        assert "both procedures went as they must" in rest, rest
        assert password in rest.splitlines()[-1]  # the account, again, under the script
        # the script's two incidents, handled on this console by its responder
        page.goto(url + "figures")
        for kind in ("DURESS", "SOS"):
            row = page.locator("#incidents tr[data-incident]").filter(has_text=kind)
            expect(row).to_have_count(1)
            expect(row.locator(".to_resolved")).to_have_text(re.compile(r"^\d+\.\d s$"))
        page.goto(url)
        expect(page.locator("#alarms li")).to_have_count(0)  # both resolved
        demo.stdin.write("sos\n")  # and the wearable is the reader's now
        demo.stdin.flush()
        expect(page.locator("#alarms li[data-kind=SOS]")).to_contain_text("Alex Example")
        page.context.close()
        demo.stdin.write("quit\n")
        demo.stdin.flush()
        assert demo.wait(30) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
