# Failover with PostgreSQL's own replication: a primary with a synchronous standby (made with
# pg_basebackup), two workers on a URL naming both hosts with target_session_attrs=read-write.
# Mid-burst the standby falls behind (the primary's WAL sender paused, as a slow link would
# hold it back), then the primary is lost (every process of it SIGKILLed, as a lost machine
# stops) and the standby is promoted: every alarm whose RECEIVED ack a wearable got is on the new primary (synchronous
# replication: a COMMIT returns once the standby has it, and an ack goes out only after its
# COMMIT; with asynchronous replication the alarms acked while the standby was behind are
# lost, and this test fails), the workers find the new primary by themselves, every alarm is
# acked, each raised one incident, and no downlink counter reaches a wearable twice (the
# devices' counters were replicated with everything else).
import os
import signal
import time

import psycopg
import pytest

import vigil_protocol as p
from pg_workers import key_for, register
from test_pg_workers_mqtt import _config, _ids, _Worker, _Wearables
from vigil_gateway import store_pg
from vigil_tools.postgres import PostgresServer

DEVICES = tuple(range(0x00C10001, 0x00C10001 + 10))
ALARMS = 40  # per device


@pytest.fixture
def replicated():
    """(primary, standby): the standby streaming, and the primary's COMMITs waiting for it."""
    primary, standby = PostgresServer().start(), None
    try:
        primary.create_database("vigil")
        with psycopg.connect(primary.url("vigil")) as conn:
            store_pg.create_schema(conn)
        standby = primary.standby()
        with primary.connect(autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while conn.execute("SELECT count(*) FROM pg_stat_replication WHERE sync_state = "
                               "'sync'").fetchone()[0] == 0:
                assert time.monotonic() < deadline, "the standby never became synchronous"
                time.sleep(0.1)
        yield primary, standby
    finally:
        for server in (standby, primary):
            if server is not None:
                server.stop("immediate")
                server.remove()


def _stored(url):
    with psycopg.connect(url) as conn:
        frames = set(conn.execute("SELECT device_id, counter FROM frames").fetchall())
        incidents = conn.execute("SELECT device_id, counter, count(*) FROM incidents WHERE "
                                 "counter IS NOT NULL GROUP BY device_id, counter").fetchall()
    return frames, incidents


def test_a_failover_to_a_synchronous_standby_loses_no_acked_alarm(replicated, tmp_path,
                                                                    mosquitto):
    primary, standby = replicated
    url = ("postgresql://vigil@127.0.0.1:%d,127.0.0.1:%d/vigil?target_session_attrs=read-write"
           "&connect_timeout=2" % (primary.port, standby.port))
    register(url, tmp_path / "gateway" / "keys", DEVICES)
    group = "failover-%d" % next(_ids)
    workers = [_Worker(_config(tmp_path, mosquitto.port, group), url) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        assert worker.started.wait(30) and worker.error is None, worker.error
    wearables = _Wearables(mosquitto.port)
    try:
        frames = [(d, c, p.encode(p.Alarm(d, c, p.SOS), p.DeviceKey(key_for(d)), 2))
                  for c in range(1, ALARMS + 1) for d in DEVICES]
        acked_before, (sender,) = None, primary.processes("walsender")
        for index, (device_id, _, frame) in enumerate(frames):
            wearables.publish(device_id, frame)
            if index == len(frames) // 3:  # the standby falls behind
                time.sleep(0.2)
                os.kill(sender, signal.SIGSTOP)
            if index == 2 * len(frames) // 3:  # the primary is lost, the standby behind
                time.sleep(1.5)
                acked_before = {(d, ref) for d in DEVICES for _, ref in list(wearables.acks[d])}
                primary.crash()
                standby.promote()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
                {ref for _, ref in wearables.acks[d]} >= set(range(1, ALARMS + 1))
                for d in DEVICES):
            time.sleep(0.2)
    finally:
        wearables.stop()
        for worker in workers:
            worker.stop()
    assert all(w.error is None for w in workers)
    assert acked_before, "nothing was acked before the failover: the test proved nothing"
    assert wearables.bad == []
    stored, incidents = _stored(standby.url("vigil"))  # the new primary
    # every alarm a wearable was told is received, before the primary was lost or after
    acked = {(d, ref) for d in DEVICES for _, ref in wearables.acks[d]}
    assert acked_before <= stored and acked <= stored
    assert acked == {(d, c) for d, c, _ in frames}  # every alarm acked in the end
    assert sorted((d, c) for d, c, _ in incidents) == sorted(stored)
    assert {n for _, _, n in incidents} == {1}  # one incident per alarm
    for device_id in DEVICES:  # no downlink counter twice at a wearable
        counters = [c for c, _ in wearables.acks[device_id]] + [
            c for c, _ in wearables.delivered[device_id]]
        assert len(counters) == len(set(counters)), device_id
