# A PostgreSQL database restored with PostgreSQL's tools, then `vigil gateway restore
# --database-restored` (restore_pg.py): every device's downlink counter moved
# backup.DOWNLINK_MARGIN past the database's, and the stored downlinks the workers will send
# again signed afresh above it - a v2 device's unconfirmed ones (their sent marks cleared) and
# any device's never sent - each still the same ack or action, its frame verifying under the
# device's key; a confirmed one, one the wearable is past and a revoked device's left as they
# were. A key file missing stops it with nothing changed.
import psycopg

import vigil_protocol as p
from pg_workers import Worker, alarm, key_for
from test_pg_cli import _config, _ok, _refused, gateway
from vigil_gateway.backup import DOWNLINK_MARGIN
from vigil_gateway.downlinks import ACK, ACTION

V2, V1, GONE = 0x00F00002, 0x00F00001, 0x00F000FF


def _rows(url, sql, args=()):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def _state(url):
    return (_rows(url, "SELECT device_id, downlink_counter FROM devices ORDER BY device_id"),
            _rows(url, "SELECT id, counter, frame, mqtt_sent_at FROM downlinks ORDER BY id"))


def _site(url, tmp_path):
    """What the lost database held at its backup: downlinks sent and not, confirmed and not."""
    worker = Worker(url, tmp_path / "data" / "keys")
    try:
        for device, protocol in ((V2, 2), (V1, 1), (GONE, 2)):
            worker.registry.add(device, key_for(device), protocol=protocol, counter_floor=0)
        worker.ingest([alarm(V2, 1), alarm(V2, 2)])  # two RECEIVED acks: counters 1, 2
        store, made = worker.store, {}
        with store.transaction():
            for name, device, ref, kind, code in (
                    ("sent", V2, 1, ACTION, p.ACKNOWLEDGED),     # sent, no receipt yet
                    ("unsent", V2, 1, ACTION, p.HELP_DISPATCHED),
                    ("confirmed", V2, 2, ACK, p.DELIVERED),
                    ("v1-sent", V1, 5, ACTION, p.ACKNOWLEDGED),  # v1: no receipts, left
                    ("v1-unsent", V1, 5, ACTION, p.RESOLVED),
                    ("revoked", GONE, 1, ACTION, p.ACKNOWLEDGED)):
                made[name] = worker.downlinks.make(device, ref, kind, code, 20.0)
        sent = [made[n].id for n in ("sent", "confirmed", "v1-sent")]
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE downlinks SET mqtt_sent_at = 30 WHERE id = ANY(%s)", (sent,))
            conn.execute("UPDATE downlinks SET confirmed_at = 31 WHERE id = %s",
                         (made["confirmed"].id,))
        worker.registry.revoke(GONE)
    finally:
        worker.close()
    return made


def test_counters_move_past_the_restored_database_and_what_goes_again_is_signed_above(
        pg_store_url, tmp_path):
    made = _site(pg_store_url, tmp_path)
    counters_before, downlinks_before = _state(pg_store_url)
    config = _config(tmp_path, pg_store_url)
    out = _ok(gateway("restore", "--database-restored", "--config", config))
    assert "(3 devices) moved %d past" % DOWNLINK_MARGIN in out
    assert "3 stored downlinks" in out  # sent, unsent, v1-unsent
    counters, downlinks = _state(pg_store_url)
    before = dict(counters_before)
    frames = {row[0]: row for row in downlinks}
    again = {name: frames[made[name].id] for name in made}
    for name in ("confirmed", "v1-sent", "revoked"):  # left as they were
        assert again[name] == next(r for r in downlinks_before if r[0] == made[name].id), name
    # signed afresh, in the order they were made, above the margin; v2's sent mark cleared
    assert [again[n][1] for n in ("sent", "unsent")] == [
        before[V2] + DOWNLINK_MARGIN + 1, before[V2] + DOWNLINK_MARGIN + 2]
    assert again["v1-unsent"][1] == before[V1] + DOWNLINK_MARGIN + 1
    assert again["sent"][3] is None
    for name, device, code in (("sent", V2, p.ACKNOWLEDGED), ("unsent", V2, p.HELP_DISPATCHED),
                               ("v1-unsent", V1, p.RESOLVED)):
        frame = p.decode(bytes(again[name][2]), p.DeviceKey(key_for(device)), p.DOWN)
        assert (frame.counter, frame.code, frame.ref) == (again[name][1], code, 1 if device ==
                                                          V2 else 5)
        assert frame.counter > max(c for _, c in counters_before)  # never seen by a wearable
    # the counters before still name them: a receipt for one confirms it
    old = dict(_rows(pg_store_url, "SELECT downlink_id, counter FROM downlink_old_counters"))
    for name in ("sent", "unsent", "v1-unsent"):
        assert old[made[name].id] == made[name].counter
    # each device's counter: past the margin and every counter signed
    assert dict(counters) == {V2: before[V2] + DOWNLINK_MARGIN + 2,
                              V1: before[V1] + DOWNLINK_MARGIN + 1,
                              GONE: before[GONE] + DOWNLINK_MARGIN}


def test_a_missing_key_file_stops_it_with_nothing_changed(pg_store_url, tmp_path):
    _site(pg_store_url, tmp_path)
    before = _state(pg_store_url)
    (tmp_path / "data" / "keys" / ("%08x.v1.key" % V2)).unlink()  # the keys not restored
    config = _config(tmp_path, pg_store_url)
    _refused(gateway("restore", "--database-restored", "--config", config),
             "%08x" % V2, "nothing changed")
    assert _state(pg_store_url) == before
    _refused(gateway("restore", tmp_path / "bak", "--config", config), "--database-restored",
             "pg_restore")
