# PostgreSQL restarted under three gateway workers mid-burst (a server of the test's own): the
# workers connect again by themselves, every alarm a wearable saw acknowledged is in the
# database, every alarm is acknowledged in the end, no downlink counter reaches a wearable
# twice, and the forwarding loops go on too: every alarm's raise reaches the webhook, and its
# DELIVERED ack the wearable.
import time

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import key_for, register
from test_pg_workers_mqtt import _config, _ids, _Webhook, _Wearables, _Worker
from vigil_gateway import store_pg
from vigil_tools.postgres import PostgresServer

DEVICES = tuple(range(0x00E00001, 0x00E00001 + 10))
ALARMS = 30


@pytest.fixture
def server():
    server = PostgresServer().start()
    server.create_database("vigil")
    with psycopg.connect(server.url("vigil")) as conn:
        store_pg.create_schema(conn)
    yield server
    server.stop()
    server.remove()


def _acked(wearables):
    return {(d, ref) for d in DEVICES for _, ref in wearables.acks[d]}


def test_a_restart_mid_burst_loses_nothing_acked_and_acks_everything_after(server, tmp_path,
                                                                          mosquitto):
    url = server.url("vigil")
    register(url, tmp_path / "gateway" / "keys", DEVICES)
    group = "restart-%d" % next(_ids)
    webhook = _Webhook()
    workers = [_Worker(_config(tmp_path, mosquitto.port, group, webhook), url)
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        assert worker.started.wait(30) and worker.error is None, worker.error
    wearables = _Wearables(mosquitto.port)
    frames = {(d, c): p.encode(p.Alarm(d, c, p.SOS), p.DeviceKey(key_for(d)), 2)
              for d in DEVICES for c in range(1, ALARMS + 1)}
    try:
        for (device_id, counter), frame in frames.items():
            if counter == ALARMS // 2 + 1 and device_id == DEVICES[0]:
                time.sleep(0.5)  # the first half in
                acked_before = _acked(wearables)
                server.restart()  # every worker's connections die with it
            wearables.publish(device_id, frame)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _acked(wearables) != set(frames):
            time.sleep(0.2)
        raised = {"%08x-%d-raised" % f for f in frames}
        deadline = time.monotonic() + 60  # (a delivery cut by the restart waits for its lease)
        while time.monotonic() < deadline and not (
                raised <= {key for key, _ in webhook.got} and
                all(len(wearables.delivered[d]) >= ALARMS for d in DEVICES)):
            time.sleep(0.2)
        stored_after = set()
        with psycopg.connect(url) as conn:
            stored_after = {tuple(r) for r in conn.execute(
                "SELECT device_id, counter FROM frames").fetchall()}
            incidents = conn.execute("SELECT device_id, counter, count(*) FROM incidents "
                                     "WHERE counter IS NOT NULL GROUP BY device_id, counter"
                                     ).fetchall()
    finally:
        wearables.stop()
        for worker in workers:
            worker.stop()
        webhook.stop()
    assert all(w.error is None for w in workers)
    assert acked_before  # acks went out before the restart ...
    assert acked_before <= stored_after  # ... and what they acknowledged survived it
    assert _acked(wearables) == set(frames)  # every alarm acknowledged in the end
    assert stored_after == set(frames)
    assert sorted((d, c) for d, c, _ in incidents) == sorted(frames)
    assert {n for _, _, n in incidents} == {1}
    # forwarding through the restart: every raise at the webhook (once per key, but for a
    # delivery the restart cut after the webhook took it), a DELIVERED ack for each alarm
    assert {key for key, _ in webhook.got if key.endswith("-raised")} >= raised
    for device_id in DEVICES:
        delivered = {ref for _, ref in wearables.delivered[device_id]}
        assert delivered == set(range(1, ALARMS + 1)), device_id
        counters = [c for c, _ in wearables.acks[device_id]] + [
            c for c, _ in set(wearables.delivered[device_id])]
        assert len(counters) == len(set(counters))  # no downlink counter twice
    assert sum(w.gateway.metrics.store_errors.values.get((), 0) for w in workers) > 0
