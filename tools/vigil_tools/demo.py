"""`vigil demo`: Vigil end to end on its embedded defaults, told as a timeline.

Everything real, on loopback, in a temporary folder: a Mosquitto broker, the gateway
(`vigil gateway run`), a simulated wearable running the firmware's own core on the MicroPython
unix port (tools' sim_device.py), and the responder console (`vigil responder run`), which
checks every webhook signature and stores each event once per idempotency key. The console's
URL and a throwaway account come first, so the demo can be watched in a browser. A scripted
responder then follows both procedures on the console, through its pages' own requests:

  duress  the console's page says "do NOT contact the wearer", shows the police script and has
          no control that would contact or cue the wearer; a crafted prompt is refused by the
          console and by the gateway; the wearable plays nothing
  SOS     the responder calls, prompts a double tap, the wearable plays the prompt, the wearer
          taps twice, and the console shows the incident as "needs help"

Exit status 0 when both went as they must. At a terminal (or with --stay) the console then stays
up, the wearable taking commands (sos, duress, tap, ...) on standard input until quit; every
process it started is stopped before it returns.
"""
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time

import vigil_protocol as p

from . import ToolError
from .broker import Mosquitto, free_port
from .sim import DEVICE_SCRIPT, TOOLS_DIR, settings
from .device_record import new_record
from .firmware_build import FIRMWARE, MPY_LIB
from .micropython import PROTOCOL_DIR, executable

DEVICE = 0x00C0FFEE
SECRET = b"demo-webhook-secret-not-for-production"
TOKEN = "demo-responder-token-not-for-production"
WAIT_S = 20
COMMANDS = "sos, duress, tap (the double tap), battery PCT, silent, resume, quit"
RESPONDER = "robin"  # the scripted responder's account; "demo" is the reader's


def register(sub):
    demo = sub.add_parser("demo", help="Vigil end to end on its embedded defaults")
    demo.add_argument("--stay", action="store_true", help="keep the console up afterwards, "
                      "the wearable taking commands on standard input (the default at a "
                      "terminal)")
    demo.set_defaults(func=run)


class Timeline:
    def __init__(self):
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def say(self, who, what):
        with self.lock:
            print("%6.2f s  %-10s %s" % (time.monotonic() - self.start, who, what), flush=True)


class Wearable:
    """The simulated wearable: commands in, its console out (frames decoded, feedback kept)."""

    def __init__(self, record, broker_port, state_dir, timeline, quiet=False):
        """quiet: keep the timeline to itself (`vigil responder demo`)."""
        self.say = (lambda who, what: None) if quiet else timeline.say
        self.key = p.DeviceKey(record.key)
        self.feedback = []
        self.lines = queue.Queue()
        self.received = []  # every downlink frame the wearable verified, in order
        config = settings(record, mqtt_port=broker_port, state_dir=state_dir, quick=True,
                          checkin_interval_s=300)
        env = dict(os.environ, MICROPYPATH=os.pathsep.join(
            [".frozen", str(FIRMWARE), str(PROTOCOL_DIR), str(MPY_LIB), str(TOOLS_DIR)]))
        self.proc = subprocess.Popen([executable(), "-X", "heapsize=1m", str(DEVICE_SCRIPT)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self.proc.stdin.write((json.dumps(config) + "\n").encode())
        self.proc.stdin.flush()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.expect("ready")

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("vigil: feedback "):
                pattern = line.split()[-1]
                self.feedback.append(pattern)
                self.say("wearable", "plays the '%s' pattern" % pattern)
            elif line.startswith("vigil: rx ") or line.startswith("vigil: tx "):
                self._frame(line)
            self.lines.put(line)

    def _frame(self, line):
        direction = p.DOWN if line.startswith("vigil: rx") else p.UP
        try:
            frame = p.decode(bytes.fromhex(line.split()[-1]), self.key, direction)
        except (ValueError, p.RemoteProtocolError):
            return
        if direction == p.UP:
            what = getattr(frame, "kind_name", frame.NAME)
            if frame.NAME == "alarm":
                self.say("wearable", "sends %s (counter %d)" % (what, frame.counter))
            return
        self.received.append(frame)
        name = frame.code_name if hasattr(frame, "code_name") else frame.NAME
        self.say("wearable", "verifies a signed %s %s for %s %d (downlink counter %d)"
                   % (frame.NAME, name, "alarm" if frame.NAME == "action" else "frame",
                      frame.ref, frame.counter))

    def command(self, text, until=None):
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()
        if until:
            return self.expect(until)

    def expect(self, text, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise ToolError("the simulated wearable stopped (status %s)"
                                    % self.proc.returncode)
                continue
            if text in line:
                return line
        raise ToolError("the wearable did not say %r within %ds" % (text, timeout))

    def wait_rx(self, predicate, timeout=WAIT_S):
        """The first downlink the wearable verified that matches (received at any time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in list(self.received):
                if predicate(frame):
                    return frame
            time.sleep(0.02)
        raise ToolError("the wearable never received the expected downlink")

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()


def _gateway_config(folder, broker_port, backend_url):
    from vigil_gateway.config import load_dict
    from vigil_tools.broker import free_port

    (folder / "webhook.secret").write_bytes(SECRET)
    (folder / "tokens").write_text("responder %s\n" % TOKEN)
    for name in ("webhook.secret", "tokens"):  # the gateway refuses secrets others can read
        (folder / name).chmod(0o600)
    data = {"gateway": {"data_dir": "data"},
            "mqtt": {"port": broker_port, "reconnect_max_s": 1.0},
            "forward": {"backoff_min_s": 0.2, "backoff_max_s": 2.0},
            "forward.webhook": {"url": backend_url, "secret_file": "webhook.secret"},
            "actions": {"tokens_file": "tokens"},
            "http": {"port": free_port()}}
    lines = []
    for section, values in data.items():
        lines.append("[%s]" % section)
        lines += ["%s = %s" % (k, json.dumps(v)) for k, v in values.items()]
    path = folder / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, load_dict(data, str(folder))


def _register(config, record):
    from vigil_gateway.service import open_state
    from vigil_gateway.wearers import Wearers

    conn, registry, _ = open_state(config)
    registry.add(record.device_id, record.key, interval_s=300)
    Wearers(conn).set(record.device_id, "Alex Example",
                      [{"name": "Sam Example", "phone": "+44 20 7946 0000",
                        "relation": "site supervisor"}], "works alone at the pumping station")
    conn.close()


def _wait_healthy(proc, port, log_path):
    import urllib.request

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError("the gateway stopped:\n" + log_path.read_text()[-2000:])
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ToolError("the gateway did not become healthy")


def run(args=None, procedures=True):
    """procedures=False: `vigil responder demo` (the console and the wearable, no script)."""
    stay = not procedures or getattr(args, "stay", False) or sys.stdin.isatty()
    t = Timeline()
    if procedures:
        print("Vigil demo: wearable (firmware core on MicroPython) -> Mosquitto -> gateway -> "
              "responder console, and back\n")
    from vigil_responder.console.client import ConsoleError

    started = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="vigil-demo-") as tmp:
        folder = pathlib.Path(tmp)
        try:
            site = _start(t, folder, started, scripted=procedures)
            if procedures:
                ok = _duress(t, site) & _sos(t, site)
                print("\n%s" % ("both procedures went as they must" if ok else "DEMO FAILED"),
                      flush=True)
            if stay:
                _stay(site)
        except (ConsoleError, ToolError) as exc:
            _stop_all(started)  # first, so that their logs are complete
            raise ToolError("%s%s" % (exc, _log_tails(folder)))
        finally:
            _stop_all(started)
    return 0 if ok else 1


def _stop_all(started):
    while started:
        try:
            started.pop()()
        except Exception:
            pass


def _log_tails(folder, lines=15):
    """The last lines the gateway and the console logged, to see why the demo failed."""
    text = ""
    for name in ("gateway.log", "console/console.log"):
        path = folder / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text += "\n-- the end of %s --\n%s" % (name, "\n".join(tail))
    return text


class _Site:
    def __init__(self, **parts):
        self.__dict__.update(parts)


def _start(t, folder, started, scripted=True):
    """Broker, console, gateway and wearable; with the scripted responder signed in to the
    console when scripted, else told nothing on the timeline (`vigil responder demo`)."""
    from vigil_responder import ActionsClient
    from vigil_responder.console import demo as console_demo
    from vigil_responder.console.client import ConsoleClient

    say = t.say if scripted else (lambda who, what: None)
    broker = Mosquitto(folder / "broker").start()
    started.append(broker.stop)
    say("broker", "Mosquitto on 127.0.0.1:%d" % broker.port)
    port = free_port()
    config_path, config = _gateway_config(folder, broker.port, "http://127.0.0.1:%d/vigil" % port)
    try:
        proc, url, passwords = console_demo.start(folder, port, config.http.port,
                                                  SECRET.decode(), TOKEN,
                                                  ("demo", RESPONDER) if scripted else ("demo",))
    except RuntimeError as exc:
        raise ToolError(str(exc))
    started.append(lambda: console_demo.stop(proc))
    # First, so the reader can open it and watch what follows.
    print("vigil responder: console at %s (webhook /vigil)" % url, flush=True)
    print("sign in as demo, password %s (this demo's throwaway account)" % passwords["demo"],
          flush=True)

    record = new_record(DEVICE)
    _register(config, record)
    log_path = folder / "gateway.log"
    with open(log_path, "w") as log:
        gateway = subprocess.Popen([sys.executable, "-m", "vigil_tools.cli", "gateway", "run",
                                    "--config", str(config_path)], stdout=log, stderr=log)

    def stop_gateway():
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()
    started.append(stop_gateway)
    _wait_healthy(gateway, config.http.port, log_path)
    say("gateway", "running, forwarding to the console; device %08x registered with its "
        "wearer profile" % DEVICE)
    wearable = Wearable(record, broker.port, str(folder / "wearable"), t, quiet=not scripted)
    started.append(wearable.stop)
    say("wearable", "firmware core running, connected to the broker")
    console = None
    if scripted:
        console = ConsoleClient(url).sign_in(RESPONDER, passwords[RESPONDER])
        say("responder", "%s signed in to the console" % RESPONDER)
    return _Site(url=url, password=passwords["demo"], wearable=wearable, console=console,
                 api=ActionsClient("http://127.0.0.1:%d" % config.http.port, TOKEN))


def _stay(site):
    print("the console stays up at %s (sign in as demo, password %s); wearable %08x (Alex "
          "Example) is up; type %s" % (site.url, site.password, DEVICE, COMMANDS), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command in ("quit", "exit"):
            break
        if command:
            site.wearable.command(command)


def _arrived(site, kind):
    """The newest open incident of this kind the console's queue shows, once it does."""
    return site.console.wait(
        lambda: next((r for r in site.console.queue() if r["kind"] == kind), None),
        what="a %s in the console's queue" % kind)


def _step(t, site, incident, step, **form):
    """One step through the console, as its button posts it; says the console's audit line."""
    done, page = site.console.step(incident, step, **form)
    if not done:
        raise ToolError("the console did not take step %s: %s" % (step, page))
    t.say("responder", "%s: %s" % (RESPONDER, page.text["steps"].rsplit(" · ", 1)[-1]))
    return page


def _duress(t, site):
    wearable, console = site.wearable, site.console
    print("\n-- Procedure 1: duress. The responder must not contact the wearer --")
    before = len(wearable.feedback)
    wearable.command("duress", until="duress raised")
    row = _arrived(site, "DURESS")
    incident = row["id"]
    t.say("console", "incident #%d (DURESS) in the %s queue: signature verified, stored once"
          % (incident, row["lane"]))
    ok = row["lane"] == "alarms"
    page = console.incident(incident)
    t.say("console", "the page: %s" % page.text["do-not-contact"].split(".")[0])
    contact_controls = {"contact_wearer", "prompt_double_tap", "acknowledge"} & set(page.buttons)
    t.say("console", "controls on the page: %s; none that would contact or cue the wearer%s"
          % (", ".join(page.buttons), "" if not contact_controls else
             " - WRONG: " + ", ".join(sorted(contact_controls))))
    ok &= not contact_controls and "do-not-contact" in page.text
    t.say("console", "%s:" % page.lines["police-script"][0])
    for line in page.lines["police-script"][1:]:
        print("%19s| %s" % ("", line))
    done, reason = console.step(incident, "prompt_double_tap")
    t.say("console", "refuses a prompt crafted by hand (%s): %s" % (
        "done - WRONG" if done else "not sent", reason))
    ok &= not done
    status, body = site.api.act(incident, "prompt_double_tap")
    t.say("gateway", "refuses a prompt on duress too, asked directly: HTTP %d, %s"
          % (status, body["message"]))
    ok &= status == 409
    _step(t, site, incident, "police")
    _step(t, site, incident, "inform_contacts")
    page = _step(t, site, incident, "resolve", reason="genuine", text="police on site, "
                 "wearer safe")
    alarm = wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.RESOLVED).ref
    time.sleep(0.3)
    played = wearable.feedback[before:]
    t.say("wearable", "patterns played during the duress alarm (counter %d): %s"
          % (alarm, ", ".join(played) if played else "none at all"))
    return bool(ok) and played == []


def _sos(t, site):
    wearable, console = site.wearable, site.console
    print("\n-- Procedure 2: SOS. The responder asks the silent wearer to tap twice --")
    wearable.command("sos", until="SOS raised")
    row = _arrived(site, "SOS")
    incident = row["id"]
    t.say("console", "incident #%d (SOS) tops the %s queue" % (incident, row["lane"]))
    _step(t, site, incident, "contact_wearer")
    t.say("responder", "%s calls the wearer: the call is answered, nobody speaks" % RESPONDER)
    _step(t, site, incident, "prompt_double_tap")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.PROMPT_DOUBLE_TAP)
    wearable.expect("feedback prompt")
    played = console.wait(lambda: "played on the wearable" in console.incident(incident).text[
        "prompt-sent"], what="the wearable's receipt for the prompt on the console")
    t.say("console", "prompt %s" % console.incident(incident).text["prompt-sent"])
    wearable.command("tap", until="double tap")
    page = console.wait(lambda: (lambda pg: pg if "needs_help" in pg.text["state"] else None)(
        console.incident(incident)), what="the wearer's double tap on the console")
    t.say("console", "incident #%d is now '%s': the wearer tapped twice at %s"
          % (incident, page.text["state"], page.text["tapped"]))
    _step(t, site, incident, "help_dispatched")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.HELP_DISPATCHED)
    alarm = next(f.ref for f in wearable.received if isinstance(f, p.Action) and
                 f.action == p.HELP_DISPATCHED)
    page = _step(t, site, incident, "resolve", reason="genuine", text="help arrived")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.RESOLVED and
                     f.ref == alarm)
    t.say("console", "handling: %s" % page.text["times"])
    print()
    counts = console.webhooks()
    t.say("console", "%d webhook events stored, %d duplicates ignored, %d refused" % (
        counts.get("stored", 0), counts.get("duplicate", 0),
        sum(v for k, v in counts.items() if k not in ("stored", "duplicate"))))
    return bool(played) and "prompt" in wearable.feedback
