# DC-09 from worker processes on PostgreSQL (`python -m vigil_gateway.service_pg`), two in one
# shared group, to a real receiving centre's receiver (pysiaalarm's, AES): each alarm reaches
# the centre under the wearer profile's account and zone as the database holds it now (an
# operator's change is in the next message, whichever worker sends it), one worker sends at a
# time (the centre's lock), and when that worker is SIGKILLed the other takes over: every
# alarm still reaches the centre, a message sent twice keeps its sequence number.
import os
import queue
import signal
import sys
import time
from collections import defaultdict

import psycopg

import vigil_protocol as p
from pg_workers import key_for
from test_pg_worker_processes import _Process
from test_pg_workers_mqtt import _ids, _Wearables
from vigil_gateway.registry_pg import PostgresRegistry
from vigil_gateway.store_pg import PostgresStore
from vigil_gateway.wearers_pg import PostgresWearers
from vigil_tools.postgres import free_port

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "forwarding"))
from sia_receiver import start_receiver  # noqa: E402

SITE, OWN = "1234AB", "5A17"
AES_KEY = "0123456789ABCDEF0123456789ABCDEF"
DEV_SITE, DEV_OWN = 0x00D0C901, 0x00D0C902  # a profile zone under the site's account; its own


def _rows(url, sql, args=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def _sender(url):
    """The application name of the worker holding the centre's lock, or None."""
    rows = _rows(url, "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON "
                      "a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted")
    return rows[0][0] if rows else None


class _Centre:
    """What the receiver took, NULL link tests aside: (account, code, zone) -> [sequence]."""

    def __init__(self, events):
        self.events = events
        self.got = defaultdict(list)

    def poll(self, timeout=0.2):
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        if event.code != "RP":
            self.got[(event.account, event.code, event.message[:3])].append(int(event.sequence))

    def sequences(self):
        return {seq for got in self.got.values() for seq in got}

    def wait_for(self, expected, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(expected) <= set(self.got):
            self.poll()
        assert set(expected) <= set(self.got), dict(self.got)


def test_dc09_from_workers_profiles_as_now_one_sender_taken_over_when_killed(
        pg_store_url, tmp_path, mosquitto):
    store = PostgresStore(pg_store_url)
    registry = PostgresRegistry(store, str(tmp_path / "gateway" / "keys"))
    for device_id in (DEV_SITE, DEV_OWN):
        registry.add(device_id, key_for(device_id), counter_floor=1)
    wearers = PostgresWearers(store)
    wearers.set(DEV_SITE, "Wren Site", zone=12)
    wearers.set(DEV_OWN, "Owen Own", zone=34, dc09_account=OWN.lower())
    key_file = tmp_path / "arc.key"
    key_file.write_text(AES_KEY.encode().hex() + "\n")
    key_file.chmod(0o600)
    port = free_port()
    events = queue.Queue()
    receiver = start_receiver(port, {SITE: AES_KEY, OWN: AES_KEY}, events)
    centre = _Centre(events)
    group = "dc09-%d" % next(_ids)
    workers = []
    for i in range(2):  # each worker's connections named, to tell which one holds the lock
        worker = _Process(tmp_path, pg_store_url + "?application_name=w%d" % i,
                          mosquitto.port, group, i)
        # (supervision slowed down: no LOST_CONTACT among the centre's messages)
        worker.path.write_text(worker.path.read_text().replace(
            "default_interval_s = 6", "default_interval_s = 600").replace("[http]\n", (
            '[forward]\nbackoff_min_s = 0.05\nbackoff_max_s = 0.3\n'
            '[forward.dc09]\nhost = "127.0.0.1"\nport = %d\naccount = "%s"\nkey_file = "%s"\n'
            'null_interval_s = 0.3\ntimeout_s = 2\n[http]\n') % (port, SITE, key_file)))
        workers.append(worker)
    wearables = None
    frames = {}

    def alarm(device_id, counter):
        frames[(device_id, counter)] = p.encode(p.Alarm(device_id, counter, p.SOS),
                                                p.DeviceKey(key_for(device_id)), 2)
        wearables.publish(device_id, frames[(device_id, counter)])

    try:
        for worker in workers:
            worker.start()
        wearables = _Wearables(mosquitto.port)
        alarm(DEV_SITE, 1)
        alarm(DEV_OWN, 1)
        centre.wait_for([(SITE, "PA", "012"), (OWN, "PA", "034")])
        wearers.set(DEV_SITE, "Wren Site", zone=56)  # the operator moves the wearer's zone
        alarm(DEV_SITE, 2)
        centre.wait_for([(SITE, "PA", "056")])
        sender = _sender(pg_store_url)
        assert sender in ("w0", "w1")
        killed = workers[int(sender[1])]
        killed.kill()  # the sender dies: its session, and the centre's lock, go with it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _sender(pg_store_url) in (None, sender):
            time.sleep(0.05)
        taken_by = _sender(pg_store_url)
        assert taken_by not in (None, sender)  # the other worker took over
        for counter in range(3, 8):
            alarm(DEV_SITE, counter)
        alarm(DEV_OWN, 2)
        killed.start()  # (its broker session kept its share of the group's messages)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_rows(
                pg_store_url, "SELECT id FROM outbox WHERE delivered_at IS NOT NULL")) < 9:
            time.sleep(0.1)
        centre.wait_for([(SITE, "PA", "056"), (OWN, "PA", "034")])
        assert _sender(pg_store_url) == taken_by  # the worker back does not take it back
        delivered = _rows(pg_store_url, "SELECT o.device_id, s.sequence FROM outbox o JOIN "
                                        "dc09_sequences s ON s.outbox_id = o.id WHERE "
                                        "o.delivered_at IS NOT NULL ORDER BY o.id")
        assert len(delivered) == 9  # 7 alarms of one wearer, 2 of the other: every one
        seqs = [s for (_, s) in delivered]
        assert len(set(seqs)) == len(seqs)  # no sequence number given to two rows
        # what the centre took is what the rows carry (an alarm a killed sender sent before
        # its commit is sent again with the same number)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not centre.sequences() >= set(seqs):
            centre.poll()
        assert centre.sequences() == set(seqs)
        assert sum(len(got) for key, got in centre.got.items() if key[1] == "PA") >= 9
        # each wearable DELIVERED for each alarm
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(
                {ref for _, ref in wearables.delivered[DEV_SITE]}) < 7:
            time.sleep(0.1)
        assert {ref for _, ref in wearables.delivered[DEV_SITE]} == set(range(1, 8))
        assert {ref for _, ref in wearables.delivered[DEV_OWN]} == {1, 2}
        assert wearables.bad == []
    finally:
        if wearables is not None:
            wearables.stop()
        for worker in workers:
            worker.stop()
        receiver.stop()
        store.close()
