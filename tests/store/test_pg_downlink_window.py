# A stored downlink offered again on PostgreSQL from below the wearable's window (its counter
# RESIGN_BELOW or more below the device's latest) is signed afresh, as on SQLite
# (downlinks.py, test_receipts.py): a new counter from the device's row under the ingest
# batch's lock, never one another worker's ack takes; the old counter still names it for a
# receipt. Two workers on one database, the real pipeline (pg_workers.Worker).
import threading

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import Worker, checkin, key_for, receipt
from vigil_gateway.downlinks import RESIGN_BELOW, REOFFER_S

DEV = 0x00C0FFEE
KEY = p.DeviceKey(key_for(DEV))


@pytest.fixture
def workers(pg_store_url, tmp_path):
    made = [Worker(pg_store_url, tmp_path / "keys") for _ in range(2)]
    made[0].add(DEV)
    yield made
    for worker in made:
        worker.close()


class _Uplinks:
    """The wearable's uplink counters, and its check-ins through any worker."""

    def __init__(self):
        self.counter = 0

    def next(self):
        self.counter += 1
        return self.counter

    def checkins(self, worker, n, now):
        """n check-ins, one batch each; the RECEIVED acks' counters."""
        return [v.ack_counter for _ in range(n)
                for v in worker.ingest([checkin(DEV, self.next())], now=now)]


def _action(worker, code, ref=1, at=10.0):
    """A stored action, made and taken by the broker (a pump's claim, then its PUBACK)."""
    with worker.store.locked([DEV]):
        made = worker.downlinks.make(DEV, ref, "action", code, at)
    claimed = [d for d in worker.downlinks.claim(lease_s=60) if d.id == made.id]
    assert claimed and worker.downlinks.sent(claimed[0], at)
    return made


def _row(worker, made):
    return next(d for d in worker.downlinks.all(DEV) if d.id == made.id)


def _old_counters(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT device_id, counter, downlink_id FROM downlink_old_counters "
                            "ORDER BY counter").fetchall()


def test_within_the_reserve_a_downlink_is_offered_again_with_its_bytes(workers, pg_store_url):
    first, second = workers
    up = _Uplinks()
    made = _action(first, p.ACKNOWLEDGED)  # counter 1
    acks = up.checkins(second, RESIGN_BELOW - 1, now=11.0)  # too soon to offer it again
    assert acks[-1] - made.counter == RESIGN_BELOW - 1
    [outcome] = second.ingest([checkin(DEV, up.next())], now=10.0 + REOFFER_S[0] + 1)
    again = _row(first, made)
    assert (again.counter, again.frame, again.mqtt_sent_at, again.offers) == (
        made.counter, made.frame, None, 1)
    assert _old_counters(pg_store_url) == []


def test_from_below_the_window_a_downlink_is_signed_afresh_by_the_worker_that_hears_it(
        workers, pg_store_url):
    first, second = workers
    up = _Uplinks()
    ack = _action(first, p.ACKNOWLEDGED)             # counter 1
    help_ = _action(first, p.HELP_DISPATCHED)        # counter 2
    latest = up.checkins(second, RESIGN_BELOW - 1, now=11.0)[-1]
    assert latest - ack.counter == RESIGN_BELOW and latest - help_.counter == RESIGN_BELOW - 1
    [outcome] = second.ingest([checkin(DEV, up.next())], now=10.0 + REOFFER_S[0] + 1)
    a, h = _row(first, ack), _row(first, help_)
    # In the order they were made, then the check-in's own ack: one counter each, from the
    # device's row, in the batch's transaction.
    assert (a.counter, h.counter, outcome.ack_counter) == (latest + 1, latest + 2, latest + 3)
    assert first.store.downlink_counter(DEV) == latest + 3
    for d, old, code in ((a, ack, p.ACKNOWLEDGED), (h, help_, p.HELP_DISPATCHED)):
        frame = p.decode(bytes(d.frame), KEY, p.DOWN)
        assert (frame.counter, frame.ref, frame.action, frame.version) == (
            d.counter, old.ref, code, 2)
        assert (d.mqtt_sent_at, d.offers) == (None, 1)
    assert _old_counters(pg_store_url) == [(DEV, ack.counter, ack.id),
                                          (DEV, help_.counter, help_.id)]
    # Any pump may publish the new bytes now.
    claimed = {d.id: bytes(d.frame) for d in second.downlinks.claim(lease_s=60)}
    assert claimed == {a.id: bytes(a.frame), h.id: bytes(h.frame)}
    # A receipt for the first signature (on its way meanwhile) confirms it, at either worker;
    # one for the new signature confirms the other; after that nothing is offered again.
    first.ingest([receipt(DEV, up.next(), ack.counter)], now=30.0)
    second.ingest([receipt(DEV, up.next(), h.counter)], now=30.0)
    assert _row(first, ack).confirmed_at == 30.0 and _row(first, help_).confirmed_at == 30.0
    assert first.metrics.receipts.values[("confirmed",)] == 1
    assert second.metrics.receipts.values[("confirmed",)] == 1
    with first.store.conn.transaction():  # (the pump's PUBACKs, long after)
        for d in (a, h):
            first.store._conn.execute("UPDATE downlinks SET mqtt_sent_at = 40.0 WHERE id = %s",
                                      (d.id,))
    second.ingest([checkin(DEV, up.next())], now=40.0 + REOFFER_S[1] + 1)
    assert _row(first, ack).offers == 1 and _row(first, help_).offers == 1


def test_a_downlink_the_wearable_is_past_is_not_signed_afresh(workers):
    first, second = workers
    up = _Uplinks()
    prompt = _action(first, p.PROMPT_DOUBLE_TAP)
    dispatch = _action(first, p.HELP_DISPATCHED)
    second.ingest([receipt(DEV, up.next(), dispatch.counter)], now=11.0)
    up.checkins(second, RESIGN_BELOW + 5, now=11.0)
    second.ingest([checkin(DEV, up.next())], now=10.0 + REOFFER_S[0] + 1)
    again = _row(first, prompt)
    assert (again.counter, again.frame, again.offers) == (prompt.counter, prompt.frame, 1)


def test_a_signed_afresh_counter_is_never_one_another_workers_ack_takes(workers,
                                                                         pg_store_url):
    first, second = workers
    made = [_action(first, code, ref=ref) for ref in (1, 2, 3)
            for code in (p.ACKNOWLEDGED, p.HELP_DISPATCHED)]
    up = _Uplinks()
    up.checkins(first, RESIGN_BELOW + 1, now=11.0)
    counters, errors, lock = [], [], threading.Lock()

    def run(worker):
        try:
            for _ in range(30):
                with lock:
                    message = checkin(DEV, up.next())
                for v in worker.ingest([message], now=10.0 + REOFFER_S[0] + 1):
                    counters.append(v.ack_counter)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    signed = [_row(first, d).counter for d in made]
    assert all(c > RESIGN_BELOW for c in signed)  # every one signed afresh, once
    assert len(_old_counters(pg_store_url)) == len(made)
    everything = counters + signed + [d.counter for d in made] + list(range(
        made[-1].counter + 1, made[-1].counter + RESIGN_BELOW + 2))
    assert len(everything) == len(set(everything))  # no counter twice
    assert sorted(everything) == list(range(1, len(everything) + 1))  # and none skipped


def test_the_old_counters_go_with_their_downlink(workers, pg_store_url):
    first, second = workers
    up = _Uplinks()
    made = _action(first, p.ACKNOWLEDGED)
    up.checkins(second, RESIGN_BELOW, now=11.0)
    second.ingest([checkin(DEV, up.next())], now=10.0 + REOFFER_S[0] + 1)
    second.ingest([receipt(DEV, up.next(), _row(first, made).counter)], now=30.0)
    assert len(_old_counters(pg_store_url)) == 1
    with first.store.conn.transaction():
        assert first.downlinks.prune(1000.0) == 1
    assert _old_counters(pg_store_url) == []


# -- through `vigil gateway run` on the database, a real Mosquitto and the firmware's window --

def test_a_worker_gets_a_stranded_action_to_the_wearable(pg_store_url, mosquitto_factory,
                                                         tmp_path):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from test_pg_cli import VIGIL, _config, _key_file, _ok, gateway
    from vigil_responder import ActionsClient
    from vigil_tools.postgres import free_port

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
    from window_wearable import SeenDownlinks, WindowWearable

    def wait(predicate, what, timeout=20):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting for " + (
                what() if callable(what) else what)
            time.sleep(0.05)

    def rows():
        with psycopg.connect(pg_store_url) as conn:
            return conn.execute("SELECT counter, kind, frame, mqtt_sent_at, confirmed_at FROM "
                                "downlinks WHERE kind = 'action' ORDER BY id").fetchall()

    broker = mosquitto_factory()
    http_port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text("responder pg-window-token-0123456789\n")
    tokens.chmod(0o600)
    config = _config(tmp_path, pg_store_url, broker.port, http_port,
                     '[actions]\ntokens_file = "%s"\n[log]\nlevel = "debug"\n' % tokens)
    _ok(gateway("device", "add", "%08x" % DEV, "--key-file", _key_file(tmp_path, DEV),
                "--config", config))
    log = open(tmp_path / "run.log", "w+")
    worker = subprocess.Popen(VIGIL + ["gateway", "run", "--config",
                               config], stdout=log, stderr=subprocess.STDOUT)
    wearable = None
    try:
        def healthy():
            assert worker.poll() is None, open(tmp_path / "run.log").read()[-2000:]
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                            timeout=1) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait(healthy, "the worker")
        flash = tmp_path / "unit-flash"
        wearable = WindowWearable(broker.port, DEV, key_for(DEV), flash)
        wearable.publish(p.encode(p.Alarm(DEV, wearable.next_counter(), p.SOS), wearable.key,
                                  2))
        wearable.wait_acked([1])
        wearable.close()  # away; its session stays at the broker
        api = ActionsClient("http://127.0.0.1:%d" % http_port, "pg-window-token-0123456789")
        status, body = api.act(1, "acknowledge")
        assert status == 200 and body["effect"] == "applied", body
        wait(lambda: [r[3] is not None for r in rows()] == [True], "the broker's PUBACK")
        handed_at = time.monotonic()
        [(old_counter, _, _, _, _)] = rows()
        broker.proc.kill()  # the broker's power cut: the action queued for the session is lost
        broker.proc.wait()
        for saved in broker.dir.glob("mosquitto.db*"):
            saved.unlink()
        broker.start()
        wearable = WindowWearable(broker.port, DEV, key_for(DEV), flash)
        wearable.counter = 1
        time.sleep(2)  # (the worker connects again and subscribes: a new session)
        first = wearable.counter + 1
        for _ in range(40):
            wearable.publish(wearable.checkin2())
        wearable.wait_acked(range(first, first + 40))
        assert time.monotonic() - handed_at < REOFFER_S[0], "too slow to show the case"
        assert wearable.seen.window.top >= old_counter + SeenDownlinks.SIZE
        time.sleep(max(0.0, REOFFER_S[0] + 0.5 - (time.monotonic() - handed_at)))
        wearable.publish(wearable.checkin2())
        wait(lambda: wearable.actions_taken(),
             lambda: "the action at the wearable (its window refused %s)" % wearable.refused)
        [taken] = wearable.actions_taken()
        assert (taken.ref, taken.action) == (1, p.ACKNOWLEDGED)
        assert taken.counter > old_counter + SeenDownlinks.SIZE
        assert wearable.refused == []
        wait(lambda: rows()[0][4] is not None, "its receipt")
        assert rows()[0][0] == taken.counter
    finally:
        if wearable is not None:
            wearable.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
