# The responder actions API on PostgreSQL (actions.py on api_requests_pg.py), each worker on a
# connection of its own: a retry gets the original answer from whichever worker it reaches,
# another body under the same request_id is refused, and two workers given the same request
# at once apply it once and give both the same answer. Through worker processes
# (`python -m vigil_gateway.service_pg`): the API served, a retry at another worker, the
# action's downlink at the wearable.
import json
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import psycopg
import pytest

import vigil_protocol as p
from pg_workers import TOPICS, Worker, alarm, key_for
from test_pg_worker_processes import _Process
from test_pg_workers_mqtt import _ids
from vigil_gateway.actions import ActionsApi
from vigil_gateway.api_requests_pg import PostgresApiRequests
from vigil_gateway.downlinks_pg import PostgresDownlinks
from vigil_gateway.incidents import Incidents

DEV = 0x00A0C710
TOKENS = {"arc-one": "token-one-0123456789"}
HOOK = "webhook"


class _ApiWorker:
    """One worker's actions API: its own connection, incidents and downlinks."""

    def __init__(self, url, keys_dir, now):
        self.worker = Worker(url, keys_dir, destinations=(HOOK,))
        store = self.worker.store
        self.now = now
        self.api = ActionsApi(store, Incidents(store, store.events),
                              PostgresDownlinks(store, self.worker.registry), TOKENS,
                              lambda: self.now, requests=PostgresApiRequests(store))

    def post(self, incident, body):
        return self.api.handle("POST", "/v2/incidents/%d/actions" % incident,
                               {"authorization": "Bearer " + TOKENS["arc-one"],
                                "content-type": "application/json"}, body)

    def close(self):
        self.worker.close()


@pytest.fixture
def site(pg_store_url, tmp_path):
    """An ingesting worker with DEV registered and alarms 1..5 raised (incidents 1..5), and a
    factory of API workers."""
    ingester = Worker(pg_store_url, tmp_path / "keys", destinations=(HOOK,))
    ingester.add(DEV)
    ingester.ingest([alarm(DEV, c) for c in range(1, 6)], now=1000.0)
    made = [ingester]

    def api_worker():
        made.append(_ApiWorker(pg_store_url, tmp_path / "keys", 1000.0))
        return made[-1]

    yield api_worker
    for worker in made:
        worker.close()


def _body(action, request_id, sent_at=1000.0, note=None):
    data = {"action": action, "request_id": request_id,
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(sent_at))}
    if note is not None:
        data["note"] = note
    return json.dumps(data).encode()


def _rows(url, sql, args=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_retry_gets_the_original_answer_at_any_worker_and_another_body_is_refused(
        site, pg_store_url):
    first, second = site(), site()
    body = _body("prompt_double_tap", "retry-0001")
    applied = first.post(1, body)
    assert (applied.status, applied.result) == (200, "applied")
    assert applied.body["effect"] == "applied" and applied.body["downlink"] is not None
    for worker in (first, second, second):
        second.now = 5000.0  # however late: a retry is answered, not judged stale
        again = worker.post(1, body)
        assert (again.status, again.result) == (200, "retried")
        assert dict(again.body, downlink_queued=True) == applied.body
    # the same request_id with another body, or to another incident: refused, nothing done
    for incident, other in ((1, _body("prompt_double_tap", "retry-0001", note="again")),
                            (1, _body("resolve", "retry-0001")),
                            (2, body)):
        refused = second.post(incident, other)
        assert (refused.status, refused.body["error"]) == (409, "replayed")
        assert "used already" in refused.body["message"]
    events = _rows(pg_store_url, "SELECT incident_id, event FROM audit ORDER BY id")
    assert [e for e in events if e[1] != "raised"] == [(1, "prompt_double_tap")]
    assert len(_rows(pg_store_url, "SELECT id FROM downlinks WHERE kind = 'action'")) == 1


def _hold_device(url):
    """A transaction holding DEV's row, as a worker ingesting its frames would."""
    conn = psycopg.connect(url)
    conn.execute("SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE", (DEV,))
    return conn


def _wait_for_lock_waits(url, n):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = _rows(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                             "'Lock' AND datname = current_database()")[0][0]
        if waiting >= n:
            return
        time.sleep(0.01)
    raise AssertionError("the workers never waited on each other")


def _race(url, workers, requests):
    """Each worker posts its (incident, body) at the same moment: both are past the check for
    an earlier answer, and waiting on the device's row, before either goes on."""
    holder = _hold_device(url)
    replies, errors = [None] * len(workers), []

    def run(index):
        try:
            replies[index] = workers[index].post(*requests[index])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    try:
        for thread in threads:
            thread.start()
        _wait_for_lock_waits(url, len(workers))
    finally:
        holder.rollback()
        holder.close()
    for thread in threads:
        thread.join(30)
    assert errors == []
    return replies


def test_two_workers_given_the_same_request_at_once_apply_it_once_with_one_answer(
        site, pg_store_url):
    workers = [site(), site()]
    for incident in (1, 2, 3):
        body = _body("acknowledge", "race-%04d" % incident)
        replies = _race(pg_store_url, workers, [(incident, body), (incident, body)])
        assert sorted(r.result for r in replies) == ["applied", "retried"]
        assert all(r.status == 200 for r in replies)
        one, other = (dict(r.body, downlink_queued=None) for r in replies)
        assert one == other and one["effect"] == "applied" and one["incident"] == incident
    events = _rows(pg_store_url, "SELECT incident_id, event FROM audit WHERE event <> 'raised' "
                                 "ORDER BY id")
    assert events == [(1, "acknowledged"), (2, "acknowledged"), (3, "acknowledged")]
    counters = [r[0] for r in _rows(pg_store_url, "SELECT counter FROM downlinks WHERE kind = "
                                                  "'action' ORDER BY ref")]
    assert len(counters) == 3 and len(set(counters)) == 3


def test_one_action_sent_twice_at_once_under_two_request_ids_has_one_effect(
        site, pg_store_url):
    workers = [site(), site()]
    replies = _race(pg_store_url, workers, [(4, _body("resolve", "twice-0001")),
                                            (4, _body("resolve", "twice-0002"))])
    assert sorted(r.body["effect"] for r in replies) == ["applied", "none"]
    assert replies[0].body["downlink"] == replies[1].body["downlink"] is not None
    assert [e[0] for e in _rows(pg_store_url, "SELECT event FROM audit WHERE incident_id = 4 "
                                              "ORDER BY id")] == ["raised", "resolved"]
    assert len(_rows(pg_store_url, "SELECT id FROM outbox WHERE event = 'resolved'")) == 1
    # and each answer is kept for its own retry
    for reply, rid in zip(replies, ("twice-0001", "twice-0002")):
        again = workers[1].post(4, _body("resolve", rid))
        assert again.result == "retried" and again.body["effect"] == reply.body["effect"]


def _post(port, incident, body, token=TOKENS["arc-one"]):
    request = urllib.request.Request(
        "http://127.0.0.1:%d/v2/incidents/%d/actions" % (port, incident), data=body,
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_worker_processes_serve_the_api_a_retry_at_another_worker_gets_the_same_answer(
        pg_store_url, tmp_path, mosquitto):
    ingester = Worker(pg_store_url, tmp_path / "gateway" / "keys")
    ingester.add(DEV)
    ingester.ingest([alarm(DEV, 1)], now=time.time())  # incident 1
    ingester.close()
    tokens = tmp_path / "tokens"
    tokens.write_text("arc-one %s\n" % TOKENS["arc-one"])
    tokens.chmod(0o600)
    got, subscribed = [], threading.Event()
    wearable = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wearable-%d"
                           % next(_ids), protocol=mqtt.MQTTv5)
    wearable.on_connect = lambda c, u, f, rc, props: c.subscribe(TOPICS.down(DEV), qos=1)
    wearable.on_subscribe = lambda *args: subscribed.set()
    wearable.on_message = lambda c, u, m: got.append(
        p.decode(m.payload, p.DeviceKey(key_for(DEV)), p.DOWN))
    wearable.connect("127.0.0.1", mosquitto.port)
    wearable.loop_start()
    group = "api-%d" % next(_ids)
    workers = [_Process(tmp_path, pg_store_url, mosquitto.port, group, i) for i in range(2)]
    try:
        assert subscribed.wait(10)
        for worker in workers:
            worker.path.write_text(worker.path.read_text().replace(
                "[http]\n", '[actions]\ntokens_file = "%s"\n[http]\n' % tokens))
            worker.start()
        body = json.dumps({"action": "prompt_double_tap", "request_id": "proc-0001",
                           "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                          ).encode()
        status, applied = _post(workers[0].http_port, 1, body)
        assert status == 200 and applied["effect"] == "applied", applied
        assert _post(workers[1].http_port, 1, body) == (200, applied)  # retried elsewhere
        assert _metric(workers[1].http_port,
                       'vigil_gateway_api_requests_total{result="retried"}') == 1
        status, refused = _post(workers[1].http_port, 1, body + b" ")  # another body
        assert (status, refused["error"]) == (409, "replayed")
        status, shown = (lambda r: (r.status, json.loads(r.read())))(urllib.request.urlopen(
            urllib.request.Request("http://127.0.0.1:%d/v2/incidents/1" % workers[1].http_port,
                                   headers={"Authorization": "Bearer " + TOKENS["arc-one"]}),
            timeout=10))
        assert status == 200
        assert [a["event"] for a in shown["audit"]] == ["raised", "prompt_double_tap"]
        deadline = time.monotonic() + 20  # the action's downlink, at the wearable, once
        while time.monotonic() < deadline and not got:
            time.sleep(0.05)
        time.sleep(0.5)
        actions = [f for f in got if isinstance(f, p.Action)]
        assert [(a.counter, a.ref, a.action) for a in actions] == [
            (applied["downlink"], 1, p.PROMPT_DOUBLE_TAP)]
    finally:
        for worker in workers:
            worker.stop()
        wearable.loop_stop()
        wearable.disconnect()
