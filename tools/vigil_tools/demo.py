"""`vigil demo`: Vigil end to end on its embedded defaults, told as a timeline.

Everything real, on loopback, in a temporary folder: a Mosquitto broker, the gateway
(`vigil gateway run`), a simulated wearable running the firmware's own core on the MicroPython
unix port (tools' sim_device.py), and the reference responder backend (responder/), which checks
every webhook signature and deduplicates by idempotency key. Both of the responder's procedures:

  duress  the alarm reaches the responder with "do not contact the wearer" and the escalation
          contacts; the responder cannot prompt (the gateway refuses); the wearable plays nothing
  SOS     the responder prompts a double tap, the wearable plays the prompt, the wearer taps
          twice, and the incident comes back as "needs help"

Exit status 0 when both went as they must; every process it started is stopped before it returns.
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
from .broker import Mosquitto
from .sim import DEVICE_SCRIPT, TOOLS_DIR, settings
from .device_record import new_record
from .firmware_build import FIRMWARE, MPY_LIB
from .micropython import PROTOCOL_DIR, executable

DEVICE = 0x00C0FFEE
SECRET = b"demo-webhook-secret-not-for-production"
TOKEN = "demo-responder-token-not-for-production"
WAIT_S = 20


def register(sub):
    demo = sub.add_parser("demo", help="Vigil end to end on its embedded defaults")
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

    def __init__(self, record, broker_port, state_dir, timeline):
        self.t = timeline
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
                self.t.say("wearable", "plays the '%s' pattern" % pattern)
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
                self.t.say("wearable", "sends %s (counter %d)" % (what, frame.counter))
            return
        self.received.append(frame)
        name = frame.code_name if hasattr(frame, "code_name") else frame.NAME
        self.t.say("wearable", "verifies a signed %s %s for %s %d (downlink counter %d)"
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


def run(args=None):
    from vigil_responder import ActionsClient, ResponderBackend

    t = Timeline()
    print("Vigil demo: wearable (firmware core on MicroPython) -> Mosquitto -> gateway -> "
          "responder backend, and back\n")
    started = []
    with tempfile.TemporaryDirectory(prefix="vigil-demo-") as tmp:
        folder = pathlib.Path(tmp)
        try:
            ok = _run(t, folder, started, ActionsClient, ResponderBackend)
        finally:
            for stop in reversed(started):
                try:
                    stop()
                except Exception:
                    pass
    print("\n%s" % ("both procedures went as they must" if ok else "DEMO FAILED"))
    return 0 if ok else 1


def _run(t, folder, started, ActionsClient, ResponderBackend):
    broker = Mosquitto(folder / "broker").start()
    started.append(broker.stop)
    t.say("broker", "Mosquitto on 127.0.0.1:%d" % broker.port)

    def on_event(event):
        inc = event["incident"]
        t.say("responder", "event '%s' of incident #%d (%s, %s), signature verified, key %s"
              % (event["event"], inc["id"], inc["kind"], inc["state"],
                 event["idempotency_key"]))

    backend = ResponderBackend(SECRET, on_event=on_event).start()
    started.append(backend.stop)
    t.say("responder", "reference backend listening at %s" % backend.url)

    record = new_record(DEVICE)
    config_path, config = _gateway_config(folder, broker.port, backend.url)
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
    t.say("gateway", "running; device %08x registered with its wearer profile" % DEVICE)
    api = ActionsClient("http://127.0.0.1:%d" % config.http.port, TOKEN)

    wearable = Wearable(record, broker.port, str(folder / "wearable"), t)
    started.append(wearable.stop)
    t.say("wearable", "firmware core running, connected to the broker")
    ok = True

    print("\n-- Procedure 1: duress. The responder must not contact the wearer --")
    before = len(wearable.feedback)
    wearable.command("duress", until="duress raised")
    event = backend.wait_for(lambda e: e["incident"]["kind"] == "DURESS")
    t.say("responder", "procedure: %s" % event["procedure"]["instruction"])
    contact = event["wearer"]["contacts"][0]
    t.say("responder", "calls the police with the wearer's details, then %s (%s)"
          % (contact["name"], contact["relation"]))
    alarm = event["incident"]["alarm_counter"]
    wearable.wait_rx(lambda f: isinstance(f, p.Ack) and f.stage == p.DELIVERED and
                     f.ref == alarm)
    incident = event["incident"]["id"]
    status, body = api.act(incident, "prompt_double_tap")
    t.say("gateway", "refuses a prompt on duress: HTTP %d, %s" % (status, body["message"]))
    ok &= status == 409
    status, body = api.act(incident, "help_dispatched", note="police on their way")
    t.say("gateway", "help dispatched: audited, no downlink (downlink=%s)" % body["downlink"])
    status, body = api.act(incident, "resolve", note="police on site, wearer safe")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.RESOLVED and
                     f.ref == alarm)
    time.sleep(0.3)
    played = wearable.feedback[before:]
    t.say("wearable", "patterns played during the duress alarm: %s"
          % (", ".join(played) if played else "none at all"))
    ok &= played == []

    print("\n-- Procedure 2: SOS. The responder asks the silent wearer to tap twice --")
    wearable.command("sos", until="SOS raised")
    event = backend.wait_for(lambda e: e["incident"]["kind"] == "SOS" and
                             e["event"] == "raised")
    incident = event["incident"]["id"]
    alarm = event["incident"]["alarm_counter"]
    t.say("responder", "procedure: %s" % event["procedure"]["instruction"])
    wearable.wait_rx(lambda f: isinstance(f, p.Ack) and f.stage == p.DELIVERED and
                     f.ref == alarm)
    t.say("responder", "calls the wearer: the call is answered, nobody speaks")
    status, body = api.act(incident, "prompt_double_tap", note="silent call")
    t.say("gateway", "prompt accepted (HTTP %d), signed downlink counter %s queued"
          % (status, body["downlink"]))
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.PROMPT_DOUBLE_TAP)
    wearable.expect("feedback prompt")
    wearable.command("tap", until="double tap")
    event = backend.wait_for(lambda e: e["event"] == "wearer_confirms")
    t.say("responder", "incident #%d is now '%s': the wearer needs help" % (
        incident, event["incident"]["state"]))
    ok &= event["incident"]["state"] == "needs_help"
    api.act(incident, "help_dispatched", note="ambulance and supervisor")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.HELP_DISPATCHED)
    api.act(incident, "resolve", note="help arrived")
    wearable.wait_rx(lambda f: isinstance(f, p.Action) and f.action == p.RESOLVED and
                     f.ref == alarm)
    backend.wait_for(lambda e: e["event"] == "resolved" and e["incident"]["id"] == incident)
    ok &= "prompt" in wearable.feedback
    print()
    t.say("responder", "%d events accepted, %d duplicates ignored, %d refused" % (
        len(backend.events), backend.duplicates, len(backend.rejected)))
    return bool(ok)
