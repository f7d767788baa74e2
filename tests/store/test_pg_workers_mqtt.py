# Three gateway workers (service_pg.PostgresGateway, each on an event loop and connections of
# its own) in one MQTT 5 shared group on a real Mosquitto, sharing a real PostgreSQL: the
# wearables' alarms, each published twice (the same bytes, at once and later, so another
# worker may take the copy), make one incident each, every alarm is acknowledged, no downlink
# counter reaches a wearable twice, and each wearable gone silent gets one LOST_CONTACT - with
# one worker stopped mid-burst and started again (its session, and what the broker holds for
# it, resumed).
import asyncio
import http.server
import itertools
import json
import os
import threading
import time
from collections import defaultdict

import paho.mqtt.client as mqtt
import psycopg
import vigil_protocol as p
from pg_workers import TOPICS, key_for, register
from vigil_gateway import config as gateway_config
from vigil_gateway.service_pg import PostgresGateway

DEVICES = tuple(range(0x00D00001, 0x00D00001 + 20))
ALARMS = 25  # per device
_ids = itertools.count(1)


class _Wearables:
    """Every device's MQTT side in one client: publishes their signed alarms, and checks and
    records every downlink they get."""

    def __init__(self, port):
        self.acks = defaultdict(list)  # device -> [(ack counter, alarm counter)], RECEIVED
        self.delivered = defaultdict(list)  # device -> [(ack counter, alarm counter)]
        self.bad = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="wearables-%d" % next(_ids), protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, u, f, rc, props: c.subscribe(
            TOPICS.down(DEVICES[0]).rsplit("/", 1)[0] + "/+", qos=1)
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10)

    def _on_message(self, client, userdata, message):
        device_id = int(message.topic.rsplit("/", 1)[1], 16)
        try:
            ack = p.decode(message.payload, p.DeviceKey(key_for(device_id)), p.DOWN)
        except p.RemoteProtocolError as exc:  # a downlink a wearable would refuse
            self.bad.append((device_id, str(exc)))
            return
        if ack.stage == p.DELIVERED:  # a responder backend has the alarm
            self.delivered[device_id].append((ack.counter, ack.ref))
        else:
            self.acks[device_id].append((ack.counter, ack.ref))

    def publish(self, device_id, frame):
        self.client.publish(TOPICS.up(device_id), frame, qos=1)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


class _Webhook:
    """A responder backend on loopback (plain HTTP, which the webhook allows there): every
    request's idempotency key and event, in the order they came, answered 200, and when each
    key came (`arrived`: key -> monotonic times)."""

    def __init__(self):
        self.got = []
        self.arrived = defaultdict(list)
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.arrived[self.headers["Idempotency-Key"]].append(time.monotonic())
                hook.got.append((self.headers["Idempotency-Key"], body["event"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def _config(tmp_path, port, group, webhook=None):
    """A worker's config; the workers of one test share `group`, and no other test uses it: a
    session of a worker gone keeps its share of the group's messages at the broker."""
    forward = {}
    if webhook is not None:
        secret = tmp_path / "webhook.secret"
        secret.write_text("s3cret\n")
        os.chmod(secret, 0o600)
        forward = {"forward": {"webhook": {"url": webhook.url, "secret_file": str(secret)}}}
    return gateway_config.load_dict(dict(forward, **{
        "gateway": {"data_dir": str(tmp_path / "gateway")},
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "worker-%d" % next(_ids),
                 "shared_group": group},
        "http": {"port": 0},
        # silent past 6 s + 2 s: one LOST_CONTACT per device after the burst (and, rarely, one
        # during it: see the test)
        "supervision": {"default_interval_s": 6, "grace_s": 2, "check_every_s": 0.2},
        "protocol": {"reack_interval_s": 0.001},
    }), str(tmp_path))


class _Worker(threading.Thread):
    def __init__(self, config, url):
        threading.Thread.__init__(self, daemon=True)
        self.config, self.url = config, url
        self.started = threading.Event()
        self.error = None

    def run(self):
        async def main():
            self.loop = asyncio.get_running_loop()
            self.gateway = PostgresGateway(self.config, self.url)
            task = asyncio.create_task(self.gateway.run())
            await asyncio.wait_for(self.gateway.link.connected.wait(), 10)
            self.started.set()
            await task

        try:
            asyncio.run(main())
        except Exception as exc:
            self.error = exc
            self.started.set()

    def stop(self):
        self.loop.call_soon_threadsafe(self.gateway.stop)
        self.join(30)


def _rows(url, sql):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_workers_in_one_group_keep_one_incident_per_alarm_and_no_counter_twice(
        pg_store_url, tmp_path, mosquitto):
    register(pg_store_url, tmp_path / "gateway" / "keys", DEVICES)
    group = "workers-%d" % next(_ids)
    webhook = _Webhook()
    workers = [_Worker(_config(tmp_path, mosquitto.port, group, webhook), pg_store_url)
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        assert worker.started.wait(30) and worker.error is None, worker.error
    wearables = _Wearables(mosquitto.port)
    try:
        frames = {(d, c): p.encode(p.Alarm(d, c, p.SOS), p.DeviceKey(key_for(d)), 2)
                  for d in DEVICES for c in range(1, ALARMS + 1)}
        for index, ((device_id, counter), frame) in enumerate(frames.items()):
            wearables.publish(device_id, frame)
            wearables.publish(device_id, frame)  # a copy at once
            if index == len(frames) // 2:  # mid-burst: a worker goes, and comes back
                workers[0].stop()
                assert workers[0].error is None
                workers[0] = _Worker(workers[0].config, pg_store_url)
                workers[0].start()
        assert workers[0].started.wait(30) and workers[0].error is None
        time.sleep(0.5)
        for (device_id, counter), frame in frames.items():
            if counter % 5 == 0:
                wearables.publish(device_id, frame)  # and one a while later
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                {ref for _, ref in wearables.acks[d]} >= set(range(1, ALARMS + 1))
                for d in DEVICES):
            time.sleep(0.1)
        # silent from now on: each device's deadline (6 s + 2 s) passes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_rows(
                pg_store_url, "SELECT id FROM incidents WHERE kind = 'LOST_CONTACT' AND "
                "state <> 'closed'")) < len(DEVICES):
            time.sleep(0.2)
        events = _rows(pg_store_url, "SELECT count(*) FROM audit a JOIN incidents i ON "
                                     "i.id = a.incident_id WHERE a.event IN ('raised', "
                                     "'contact_restored')")[0][0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(webhook.got) < events:
            time.sleep(0.2)
        time.sleep(1.0)  # a second LOST_CONTACT or delivery, if any, would be in
    finally:
        wearables.stop()
        for worker in workers:
            worker.stop()
        webhook.stop()
    assert all(w.error is None for w in workers)
    assert wearables.bad == []
    for device_id in DEVICES:
        acks = wearables.acks[device_id]
        assert {ref for _, ref in acks} == set(range(1, ALARMS + 1))  # every alarm acked
        # a DELIVERED ack for every alarm, once the webhook took it (a stored downlink may be
        # published again, the same bytes: the wearable's window drops the copy)
        delivered = set(wearables.delivered[device_id])
        assert sorted(ref for _, ref in delivered) == list(range(1, ALARMS + 1))
        # no downlink counter twice: not for two acks, nor for an ack and a DELIVERED
        counters = [c for c, _ in acks] + [c for c, _ in delivered]
        assert len(counters) == len(set(counters))
    # Supervision: each device's silence after the burst raised one LOST_CONTACT, still open.
    # A device whose frames waited at the broker past its deadline while the stopped worker
    # came back (seconds, on a loaded machine) was silent to the gateway too: such a
    # LOST_CONTACT is as real, once, and closed by the device's next frame.
    lost = _rows(pg_store_url, "SELECT id, device_id, state FROM incidents WHERE "
                               "kind = 'LOST_CONTACT' ORDER BY id")
    still_open = [d for _, d, state in lost if state != "closed"]
    assert sorted(still_open) == list(DEVICES)  # once each, whichever worker saw it
    restored = {i for i, _, state in lost if state == "closed"}
    for incident in restored:
        events = [e for e, in _rows(pg_store_url, "SELECT event FROM audit WHERE incident_id "
                                                  "= %d ORDER BY id" % incident)]
        assert events == ["raised", "contact_restored"]
    # every event at the webhook once per idempotency key: each alarm's raise, each
    # LOST_CONTACT's raise and, for those closed, its contact_restored
    keys = [key for key, _ in webhook.got]
    assert len(keys) == len(set(keys)) == len(frames) + len(lost) + len(restored)
    assert {key for key, event in webhook.got if not key.split("-")[1].startswith("i")} == {
        "%08x-%d-raised" % f for f in frames}
    # in order per incident: a LOST_CONTACT's contact_restored after its raised
    at = {key: i for i, (key, _) in enumerate(webhook.got)}
    for key, event in webhook.got:
        if event == "contact_restored":
            assert at[key.replace("-contact_restored", "-raised")] < at[key], key
    alarms = _rows(pg_store_url, "SELECT device_id, counter, count(*) FROM incidents WHERE "
                                 "counter IS NOT NULL GROUP BY device_id, counter")
    assert sorted((d, c) for d, c, _ in alarms) == sorted(frames)  # one incident per alarm
    assert {n for _, _, n in alarms} == {1}
    raised = _rows(pg_store_url, "SELECT count(*) FROM audit WHERE event = 'raised'")[0][0]
    assert raised == len(frames) + len(lost)
    assert _rows(pg_store_url, "SELECT count(*) FROM frames")[0][0] == len(frames)
    # the group split the stream: more than one worker ingested
    assert sum(1 for w in workers if w.gateway.metrics.batches.values.get((), 0)) > 1
