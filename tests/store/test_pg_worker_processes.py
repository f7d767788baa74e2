# Gateway workers as processes (`vigil gateway run` on a config naming the database), three in
# one MQTT 5 shared group on the session's Mosquitto and PostgreSQL, one SIGKILLed mid-burst and
# started again: every alarm persisted once, one incident per alarm, every copy acked, no
# downlink counter twice at the wearables, one LOST_CONTACT per wearable gone silent, every
# event at the webhook under one idempotency key, in order per incident (the one delivery the
# killed worker had in flight, taken by the webhook but not yet marked delivered, comes again
# from another worker once its lease ends: the same key, which the responder's backend drops).
import signal
import subprocess
import time
import urllib.request
from collections import Counter

import psycopg

import vigil_protocol as p
from pg_workers import key_for, register
from test_pg_cli import VIGIL, _metrics
from test_pg_workers_mqtt import _ids, _Webhook, _Wearables
from vigil_tools.postgres import free_port

DEVICES = tuple(range(0x00F00001, 0x00F00001 + 20))
ALARMS = 100  # per device: 2,000 in all, on odd counters
# every tenth alarm answered by the wearable's double tap, on the next (even) counter: its
# incident gets a second event (wearer_confirms), which must reach the webhook after the
# raise, whichever workers take the two frames (a tap that comes first waits for its alarm)
TAPS = {2 * k: 2 * k - 1 for k in range(10, ALARMS + 1, 10)}  # tap counter -> its alarm's


def _copies_of(copies, device_id):
    return Counter({c: n for (d, c), n in copies.items() if d == device_id})


class _Process:
    """One worker process, on a config file of its own (its client id, its HTTP port)."""

    def __init__(self, tmp_path, url, mqtt_port, group, index, webhook=None):
        self.http_port = free_port()
        self.path = tmp_path / ("worker%d.toml" % index)
        forward = ""
        if webhook is not None:  # (a short timeout: a killed worker's claims end soon after)
            secret = tmp_path / "webhook.secret"
            secret.write_text("s3cret\n")
            secret.chmod(0o600)
            forward = ('[forward.webhook]\nurl = "%s"\nsecret_file = "%s"\ntimeout_s = 1.0\n'
                       % (webhook.url, secret))
        self.path.write_text(
            '[gateway]\ndata_dir = "%s"\n[store]\nurl = "%s"\n'
            '[mqtt]\nhost = "127.0.0.1"\nport = %d\nclient_id = "proc-%d"\nshared_group = "%s"\n'
            '[http]\nport = %d\n[supervision]\ndefault_interval_s = 6\ngrace_s = 2\n'
            'check_every_s = 0.2\n[protocol]\nreack_interval_s = 0.001\n%s'
            % (tmp_path / "gateway", url, mqtt_port, next(_ids), group, self.http_port,
               forward))
        self.log = tmp_path / ("worker%d.log" % index)
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # `vigil gateway run`
                VIGIL + ["gateway", "run", "--config", str(self.path)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.http_port,
                                            timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("worker not healthy: " + self.log.read_text()[-2000:])

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _rows(url, sql):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_worker_processes_one_killed_mid_burst_keep_every_guarantee(pg_store_url, tmp_path,
                                                                    mosquitto):
    register(pg_store_url, tmp_path / "gateway" / "keys", DEVICES)
    group = "processes-%d" % next(_ids)
    webhook = _Webhook()
    workers = [_Process(tmp_path, pg_store_url, mosquitto.port, group, i, webhook)
               for i in range(3)]
    wearables = None
    try:
        for worker in workers:
            worker.start()
        wearables = _Wearables(mosquitto.port)
        frames = {(d, c): p.encode(p.Alarm(d, c, p.SOS), p.DeviceKey(key_for(d)), 2)
                  for d in DEVICES for c in range(1, 2 * ALARMS, 2)}
        taps = {(d, c): p.encode(p.Alarm(d, c, p.DOUBLE_TAP, ref=ref), p.DeviceKey(key_for(d)),
                                 2) for d in DEVICES for c, ref in TAPS.items()}
        copies = Counter()  # (device, counter) -> copies published
        for index, ((device_id, counter), frame) in enumerate(frames.items()):
            for _ in range(2):  # the frame and a copy at once
                wearables.publish(device_id, frame)
                copies[device_id, counter] += 1
            tap = taps.get((device_id, counter + 1))
            for _ in range(2 if tap else 0):
                wearables.publish(device_id, tap)
                copies[device_id, counter + 1] += 1
            if index == len(frames) // 2:
                time.sleep(0.2)  # mid-burst, with batches in flight
                killed_at = time.monotonic()
                workers[0].kill()
                workers[0].start()  # its session resumed: what the broker kept for it
        time.sleep(0.5)
        for (device_id, counter), frame in frames.items():
            if counter % 5 == 0:
                wearables.publish(device_id, frame)  # and a copy a while later
                copies[device_id, counter] += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                {ref for _, ref in wearables.acks[d]} >= set(_copies_of(copies, d))
                for d in DEVICES):
            time.sleep(0.1)
        deadline = time.monotonic() + 30  # silent from now on: 6 s + 2 s
        while time.monotonic() < deadline and len(_rows(
                pg_store_url, "SELECT id FROM incidents WHERE kind = 'LOST_CONTACT' AND state "
                "<> 'closed'")) < len(DEVICES):
            time.sleep(0.2)
        events = _rows(pg_store_url, "SELECT count(*) FROM outbox WHERE destination = "
                                     "'webhook'")[0][0]  # (every event queued for it)
        deadline = time.monotonic() + 30  # (a killed worker's claims wait for their leases)
        while time.monotonic() < deadline and len(webhook.got) < events:
            time.sleep(0.2)
        time.sleep(1.0)  # a second LOST_CONTACT or delivery, if any, would be in
        suppressed = sum(_metrics(w.http_port)["vigil_gateway_reacks_suppressed_total"]
                         for w in workers)  # (the killed worker's since it started again)
    finally:
        if wearables is not None:
            wearables.stop()
        for worker in workers:
            worker.stop()
        webhook.stop()
    assert wearables.bad == []
    short = Counter()  # copies not acked
    for device_id in DEVICES:
        acks = wearables.acks[device_id]
        short += _copies_of(copies, device_id) - Counter(ref for _, ref in acks)
        assert {ref for _, ref in acks} == {c for d, c in copies if d == device_id}
        counters = [c for c, _ in acks]
        assert len(counters) == len(set(counters))  # no downlink counter twice
    assert sorted(_rows(pg_store_url, "SELECT device_id, counter FROM frames")) == sorted(
        list(frames) + list(taps))  # each persisted once
    # every copy acked again (one the killed worker had committed but not acked comes to it
    # again from the broker, and is acked then), but for those the re-ack limit held back: a
    # copy in one batch with an earlier copy of its frame at the same worker (a late copy
    # catching up with a delayed one), counted, and its frame acked by the other
    assert sum(short.values()) <= suppressed, (short, suppressed)
    alarms = _rows(pg_store_url, "SELECT device_id, counter, count(*) FROM incidents WHERE "
                                 "counter IS NOT NULL GROUP BY device_id, counter")
    assert sorted((d, c) for d, c, _ in alarms) == sorted(frames)
    assert {n for _, _, n in alarms} == {1}  # one incident per alarm
    # one LOST_CONTACT per device for the silence after the burst, still open; one raised
    # while the killed worker's share of a device's frames waited at the broker past its
    # deadline (a real silence to the gateway, on a loaded machine) once, closed by its next
    # frame (test_pg_workers_mqtt.py)
    lost = _rows(pg_store_url, "SELECT id, device_id, state FROM incidents WHERE "
                               "kind = 'LOST_CONTACT'")
    assert sorted(d for _, d, state in lost if state != "closed") == list(DEVICES)
    for incident, _, state in lost:
        if state == "closed":
            assert [e for e, in _rows(pg_store_url, "SELECT event FROM audit WHERE incident_id "
                                      "= %d ORDER BY id" % incident)] == ["raised",
                                                                          "contact_restored"]
    raised = _rows(pg_store_url, "SELECT count(*) FROM audit WHERE event = 'raised'")[0][0]
    assert raised == len(frames) + len(lost)  # ... each raised once, and the LOST_CONTACTs
    # every event at the webhook under one idempotency key, through the kill: each alarm's
    # raise, each LOST_CONTACT's, and a closed one's contact_restored after its raise. A key
    # twice only for the killed worker's delivery in flight (one destination's deliveries go
    # one at a time): once before the kill, once after.
    keys = [key for key, _ in webhook.got]
    restored = sum(1 for _, _, state in lost if state == "closed")
    assert len(set(keys)) == len(frames) + len(taps) + len(lost) + restored
    again = {key: at for key, at in webhook.arrived.items() if len(at) > 1}
    assert len(again) <= 1, again
    for key, at in again.items():
        assert len(at) == 2 and at[0] < killed_at < at[1], (key, at, killed_at)
    assert {k for k in keys if not k.split("-")[1].startswith("i")} == {
        "%08x-%d-raised" % f for f in frames} | {
        "%08x-%d-wearer_confirms" % (d, TAPS[c]) for d, c in taps}
    # in order per incident: its raise reached the webhook before its second event
    first = {key: at[0] for key, at in webhook.arrived.items()}
    later = [k for k in keys if k.endswith(("-contact_restored", "-wearer_confirms"))]
    assert len(later) >= len(taps)
    for key in later:
        raised = key.rsplit("-", 1)[0] + "-raised"
        assert first[raised] < first[key], key
    assert all(w.proc.returncode == 0 for w in workers)  # stopped cleanly by SIGTERM
