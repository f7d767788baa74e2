# Helpers for the gateway tests, which drive the real thing: `vigil gateway run` as a
# subprocess, against a real Mosquitto (tests/mosquitto.py), watched through its public faces:
# MQTT downlinks, /metrics, /healthz, its JSON log, and `vigil gateway ...` commands.
# (A module of its own, not conftest.py: test folders' conftest modules shadow each other.)
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt

import vigil_protocol as p
from vigil_tools.broker import free_port

VIGIL = [sys.executable, "-m", "vigil_tools.cli"]


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def write_config(path, sections):
    """Write {"mqtt": {"port": 1}, "mqtt.tls": {...}} as TOML."""
    lines = []
    for section, values in sections.items():
        lines.append("[%s]" % section)
        lines.extend("%s = %s" % (k, _toml_value(v)) for k, v in values.items())
    Path(path).write_text("\n".join(lines) + "\n")


class GatewayProcess:
    """One gateway: its folder, config, CLI and process."""

    def __init__(self, workdir, broker_port, vigil=VIGIL, **sections):
        self.vigil = list(vigil)  # the command that runs `vigil` (another install's, say)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.config = self.dir / "gateway.toml"
        config = {"gateway": {"data_dir": "data"},
                  "mqtt": {"port": broker_port, "reconnect_max_s": 1.0,
                           "client_id": "vigil-gateway-%s" % self.dir.name},
                  "http": {"port": self.http_port},
                  "log": {"level": "debug"}}
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        write_config(self.config, config)
        self.proc = None
        self.log_path = self.dir / "gateway.log"
        self.starts = 0

    def cli(self, *args, check=True):
        result = subprocess.run(self.vigil + ["gateway"] + list(args)
                                + ["--config", str(self.config)],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError("vigil gateway %s failed: %s%s" % (" ".join(args),
                                                                   result.stdout, result.stderr))
        return result

    def add_device(self, device_id, key, password=None, interval=None):
        key_file = self.dir / ("%08x.keyhex" % device_id)
        key_file.write_text(key.hex())
        args = ["device", "add", "%08x" % device_id, "--key-file", str(key_file)]
        if password:
            pw_file = self.dir / ("%08x.pw" % device_id)
            pw_file.write_text(password)
            args += ["--mqtt-password-file", str(pw_file)]
        if interval:
            args += ["--interval", str(interval)]
        self.cli(*args)
        key_file.unlink()

    def start(self, wait=True):
        self.starts += 1
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.vigil + ["gateway", "run", "--config", str(self.config)],
                                     stdout=log, stderr=log)
        log.close()
        if wait:
            self.wait_healthy()
        return self

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path),
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_healthy(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited %s:\n%s" % (self.proc.returncode,
                                                                  self.log()))
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("gateway not healthy within %ss:\n%s" % (timeout, self.log()))

    def metrics(self):
        """{'name{labels}': value} from /metrics."""
        status, text = self.get("/metrics")
        assert status == 200
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def rejections(self, reason):
        return self.metrics().get('vigil_gateway_rejections_total{reason="%s"}' % reason, 0)

    def frames(self, result):
        return self.metrics().get('vigil_gateway_frames_total{result="%s"}' % result, 0)

    def incidents(self):
        out = self.cli("incidents", "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_events(self):
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Device:
    """A simulated wearable's MQTT side (SPEC §9): its own credentials and client id, a
    persistent session, QoS 1; decodes every downlink with its key."""

    def __init__(self, port, device_id, key, password=None, prefix="vigil", tls_ca=None,
                 user=None, client_id=None):
        self.device_id = device_id
        self.key = p.DeviceKey(key)
        self.dev = "%08x" % device_id
        self.up = "%s/up/%s" % (prefix, self.dev)
        self.down = "%s/down/%s" % (prefix, self.dev)
        self.counter = 0
        self.downlinks = queue.Queue()
        self.raw = []  # every downlink payload as it arrived, decoded or not
        self.acked = {}  # ref -> number of RECEIVED acks
        self.bad_downlinks = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "vigil-" + self.dev,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if password:
            self.client.username_pw_set(user or self.dev, password)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, props: c.subscribe(self.down, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "device could not subscribe"

    def _on_message(self, client, userdata, message):
        self.raw.append(bytes(message.payload))
        try:
            frame = p.decode(message.payload, self.key, p.DOWN)
        except p.RemoteProtocolError as exc:
            self.bad_downlinks.append(exc.reason)
            return
        if frame.device_id != self.device_id:
            self.bad_downlinks.append("not for me")
            return
        if isinstance(frame, p.Ack) and frame.stage == p.RECEIVED:
            with self.lock:
                self.acked[frame.ref] = self.acked.get(frame.ref, 0) + 1
        self.downlinks.put(frame)

    def next_counter(self):
        self.counter += 1
        return self.counter

    def alarm(self, kind=p.SOS, ref=0, **ext):
        return p.encode(p.Alarm(self.device_id, self.next_counter(), kind, ref=ref, **ext),
                        self.key)

    def checkin(self, interval=0):
        return p.encode(p.CheckIn(self.device_id, self.next_counter(), 80, 0, interval),
                        self.key)

    def publish(self, payload, topic=None, wait=True):
        info = self.client.publish(topic or self.up, payload, qos=1)
        if wait:
            info.wait_for_publish(10)
        return info

    def wait_acked(self, refs, timeout=20):
        refs = set(refs)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if refs <= set(self.acked):
                    return
            time.sleep(0.02)
        with self.lock:
            missing = sorted(refs - set(self.acked))
        raise AssertionError("%d frames never acknowledged: %s... (%d downlinks, rejected: %s)"
                             % (len(missing), missing[:10], self.downlinks.qsize(),
                                self.bad_downlinks[:5]))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def write_secret(path, text):
    """A secret file as the gateway wants it: readable by this user only."""
    path = Path(path)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    path.chmod(0o600)
    return path


def sign_raw(key, message):
    """Sign arbitrary uplink bytes (to build frames the encoder would refuse to make)."""
    return message + p.DeviceKey(key).tag(p.UP, message)


def wait_for(predicate, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


def key_for(device_id):
    """A distinct, deterministic test key per device (tests only)."""
    return bytes((device_id * 7 + i) & 0xFF for i in range(32))

