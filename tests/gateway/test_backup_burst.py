# `vigil gateway backup` taken while a running gateway (`vigil gateway run`, a real Mosquitto)
# takes a burst of alarms from several wearables: the copy is sound, holds every alarm acked
# before it began, loses nothing the live database does not hold, and a gateway restored from
# it signs its next ack with a downlink counter past every one the wearables have seen.
import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import vigil_protocol as p
from gateway_harness import key_for, wait_for
from vigil_gateway import backup as backup_module

DEVICES = [0x0BB00001 + i for i in range(4)]
AT_LEAST = 100         # alarms per wearable, at the least: hundreds in all
GAP_S = 0.012          # between one wearable's alarms
AFTER_BACKUP = 25      # alarms each wearable still sends once the backup is done
KINDS = (p.SOS, p.DURESS, p.FALL)


def _acked(device):
    with device.lock:
        return {(device.device_id, ref) for ref in device.acked}


def _alarms(db_path):
    """{(device, counter)} of the alarms a database holds: an incident and its frame each."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        frames = set(conn.execute("SELECT device_id, counter FROM frames WHERE type = 'alarm'"))
        incidents = set(conn.execute("SELECT device_id, counter FROM incidents "
                                     "WHERE counter IS NOT NULL"))
        counters = dict(conn.execute("SELECT device_id, last_counter FROM downlink_counters"))
    finally:
        conn.close()
    return frames, incidents, counters


def _downlinks(device):
    """Every downlink the wearable has taken since this was last called."""
    frames = []
    while not device.downlinks.empty():
        frames.append(device.downlinks.get_nowait())
    return frames


def test_backup_during_an_alarm_burst_then_restore(mosquitto, gateway_factory, devices,
                                                   tmp_path):
    prefix = "burst-" + uuid.uuid4().hex[:8]
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": prefix})
    for dev in DEVICES:
        gw.add_device(dev, key_for(dev))
    gw.start()
    wearables = [devices(mosquitto.port, dev, key_for(dev), prefix=prefix,
                         client_id="%s-%08x" % (prefix, dev)) for dev in DEVICES]

    backup_done = threading.Event()
    sent = {dev: [] for dev in DEVICES}
    errors = []

    def burst(device):
        try:
            after = 0
            while len(sent[device.device_id]) < AT_LEAST or after < AFTER_BACKUP:
                kind = KINDS[len(sent[device.device_id]) % len(KINDS)]
                device.publish(device.alarm(kind), wait=False)
                sent[device.device_id].append(device.counter)
                if backup_done.is_set():
                    after += 1
                time.sleep(GAP_S)
        except Exception as exc:  # pragma: no cover - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(w,), daemon=True) for w in wearables]
    for t in threads:
        t.start()
    wait_for(lambda: sum(len(_acked(w)) for w in wearables) >= len(DEVICES) * AT_LEAST // 4,
             20, "the first quarter of the burst acked")

    # What the gateway had acknowledged when the backup began (the wearables' own view).
    before = set().union(*(_acked(w) for w in wearables))
    dest = tmp_path / "backup"
    out = gw.cli("backup", str(dest)).stdout
    backup_done.set()
    assert "backup of %d devices" % len(DEVICES) in out, out
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads), errors
    everything = {(dev, c) for dev, counters in sent.items() for c in counters}
    assert len(everything) >= len(DEVICES) * AT_LEAST
    for w in wearables:
        w.wait_acked(sent[w.device_id], timeout=30)
    acked = set().union(*(_acked(w) for w in wearables))
    assert acked == everything

    # The copy: sound, and every alarm acked before the backup began is in it (its frame and
    # its incident). The burst went on past the backup's snapshot (else this tests nothing).
    copy = dest / "gateway.db"
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    copy_frames, copy_incidents, copy_counters = _alarms(copy)
    assert before <= copy_frames, sorted(before - copy_frames)[:10]
    assert before <= copy_incidents, sorted(before - copy_incidents)[:10]
    assert acked - copy_frames, "the burst ended before the backup's snapshot"
    assert copy_frames == copy_incidents

    # Nothing lost: every acked alarm is in the copy or in the live database afterwards (and
    # the backup cost the running gateway no failed commit).
    assert gw.metrics()["vigil_gateway_store_errors_total"] == 0
    # The wearables' view of the downlink counters: everything the gateway sent them.
    seen = {w.device_id: max(f.counter for f in _downlinks(w)) for w in wearables}
    gw.stop()
    live_frames, live_incidents, live_counters = _alarms(gw.dir / "data" / "gateway.db")
    assert acked <= copy_frames | live_frames, sorted(acked - copy_frames - live_frames)[:10]
    assert acked <= copy_incidents | live_incidents
    assert acked <= live_frames  # the live gateway itself lost nothing to the backup
    for dev in DEVICES:
        assert seen[dev] <= live_counters[dev]
        assert copy_counters[dev] < seen[dev]  # the lost gateway signed past the backup

    # The gateway's disk is lost: the copy restored into an empty data folder.
    shutil.move(str(gw.dir / "data"), str(tmp_path / "lost-data"))
    (gw.dir / "data").mkdir(mode=0o700)
    result = gw.cli("restore", str(dest))
    assert "restored %d devices" % len(DEVICES) in result.stdout
    gw.start()
    restored = {(int(i["device"], 16), i["counter"]) for i in gw.incidents()}
    assert before <= restored
    # Each wearable's next alarm: the restored gateway's ack has a downlink counter past every
    # counter that wearable has seen (a counter it has seen would be refused, SPEC section 7).
    for w in wearables:
        w.publish(w.alarm(p.SOS))
    for w in wearables:
        w.wait_acked([w.counter], timeout=20)
    for w in wearables:
        wait_for(lambda: not w.downlinks.empty(), 10, "the restored gateway's ack")
        acks = [f for f in _downlinks(w) if isinstance(f, p.Ack)]
        assert acks and all(f.counter > seen[w.device_id] for f in acks), (
            w.device_id, seen[w.device_id], [(f.ref, f.counter) for f in acks])
        # past every counter the lost gateway took, too (the wearable may have seen any)
        assert min(f.counter for f in acks) > live_counters[w.device_id]
        assert min(f.counter for f in acks) > copy_counters[w.device_id] + \
            backup_module.DOWNLINK_MARGIN
        assert [f.ref for f in acks if f.stage == p.RECEIVED] == [w.counter]
    assert not any(w.bad_downlinks for w in wearables)


@contextlib.contextmanager
def _read_only(folder):
    """`folder` as read-only media: a read-only bind mount when root may mount, else its
    write permissions taken away (which root would ignore); skips when neither is possible."""
    if os.geteuid() != 0:
        modes = {}
        for path in [folder] + [os.path.join(d, n) for d, ds, fs in os.walk(folder)
                                for n in ds + fs]:
            modes[path] = os.stat(path).st_mode
            os.chmod(path, modes[path] & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                os.chmod(path, mode)
        return
    view = tempfile.mkdtemp()
    mounted = subprocess.run(["mount", "--bind", str(folder), view], capture_output=True)
    if mounted.returncode == 0:
        mounted = subprocess.run(["mount", "-o", "remount,bind,ro", view], capture_output=True)
        if mounted.returncode != 0:
            subprocess.run(["umount", view])
    if mounted.returncode != 0:
        os.rmdir(view)
        pytest.skip("cannot make a read-only folder here (root, and no mount): %s"
                    % mounted.stderr.decode().strip())
    try:
        yield view
    finally:
        subprocess.run(["umount", view], check=True)
        os.rmdir(view)


def test_a_backup_is_one_file_and_restores_from_read_only_media(mosquitto, gateway_factory,
                                                                 devices, tmp_path):
    # A backup kept on a disk mounted read-only (as a backup disk is, when it is needed) is
    # restored: its database is a single file, which reading creates nothing beside.
    prefix = "robackup-" + uuid.uuid4().hex[:8]
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": prefix})
    gw.add_device(DEVICES[0], key_for(DEVICES[0]))
    gw.start()
    w = devices(mosquitto.port, DEVICES[0], key_for(DEVICES[0]), prefix=prefix,
                client_id=prefix)
    w.publish(w.alarm(p.SOS))
    w.wait_acked([1])
    dest = tmp_path / "backup"
    gw.cli("backup", str(dest))
    names = sorted(os.listdir(dest))
    for path in [dest / n for n in names] + [dest / "keys" / n for n in os.listdir(dest / "keys")]:
        if path.is_file():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    conn = sqlite3.connect("file:%s?mode=ro" % (dest / "gateway.db"), uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT counter FROM incidents").fetchall() == [(1,)]
    finally:
        conn.close()
    assert sorted(os.listdir(dest)) == names  # no -wal or -shm beside it
    gw.stop()
    shutil.move(str(gw.dir / "data"), str(tmp_path / "lost-data"))
    with _read_only(dest) as media:
        result = gw.cli("restore", str(media), check=False)
    assert result.returncode == 0 and "restored 1 devices, 1 incidents" in result.stdout, \
        result.stdout + result.stderr
    assert sorted(os.listdir(dest)) == names
    gw.start()
    assert [(i["counter"], i["kind"]) for i in gw.incidents()] == [(1, "SOS")]
    w.publish(w.alarm(p.SOS))
    w.wait_acked([2])
