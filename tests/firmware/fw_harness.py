"""The gateway's side of the MQTT link for firmware tests, and shared settings. Imported by
the firmware tests by this unique name (several test folders have a conftest.py)."""
import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

import vigil_protocol as p

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(0x20, 0x40))


class FakeGateway:
    """The gateway's side of the MQTT link, played by the test: it verifies every uplink with
    vigil_protocol and answers according to `policy(gateway, frame)`."""

    def __init__(self, port, key=KEY, policy=None, tls_ca=None, user=None, password=None):
        self.key = p.DeviceKey(key)
        self.policy = policy or (lambda gw, frame: gw.ack(frame, p.RECEIVED))
        self.uplinks = []      # (device hex, raw bytes, decoded frame or rejection reason)
        self.events = queue.Queue()
        self.down_counter = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-gateway",
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        if user:
            self.client.username_pw_set(user, password)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("vigil/up/+", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        device = msg.topic.rsplit("/", 1)[1]
        try:
            frame = p.decode(msg.payload, self.key, p.UP)
        except p.RemoteProtocolError as exc:
            frame = exc.reason
        with self.lock:
            self.uplinks.append((device, bytes(msg.payload), frame))
        if not isinstance(frame, str):
            self.policy(self, frame)

    def send(self, device_id, data):
        self.client.publish("vigil/down/%08x" % device_id, data, qos=1)

    def next_counter(self, device_id):
        with self.lock:
            self.down_counter[device_id] = self.down_counter.get(device_id, 0) + 1
            return self.down_counter[device_id]

    def ack(self, frame, stage, key=None):
        data = p.encode(p.Ack(frame.device_id, self.next_counter(frame.device_id), frame.counter,
                              stage), key or self.key)
        self.send(frame.device_id, data)
        return data

    def action(self, frame, action):
        data = p.encode(p.Action(frame.device_id, self.next_counter(frame.device_id),
                                 frame.counter, action), self.key)
        self.send(frame.device_id, data)
        return data

    def frames(self, name=None):
        with self.lock:
            return [f for _, _, f in self.uplinks if not isinstance(f, str)
                    and (name is None or f.NAME == name)]

    def wait_frames(self, name, count, timeout=10):
        """The uplinks of type `name`, once at least `count` have arrived (the broker may
        still be delivering when the wearable's process ends)."""
        deadline = time.monotonic() + timeout
        while len(self.frames(name)) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.frames(name)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()
