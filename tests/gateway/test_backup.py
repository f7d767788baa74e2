# `vigil gateway backup` while the gateway runs and `vigil gateway restore` into a new data
# folder: every device, incident and undelivered event is there again, and the restored
# gateway signs no downlink with a counter the wearable has already seen.
import json
import os
import shutil
import sqlite3
import stat

import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from vigil_gateway import backup as backup_module

A, B = 0x0000000A, 0x0000000B


def _acks(device):
    """The RECEIVED acks' own (downlink) counters the wearable got so far."""
    frames = []
    while not device.downlinks.empty():
        frames.append(device.downlinks.get_nowait())
    return [f.counter for f in frames if isinstance(f, p.Ack)]


def test_backup_while_running_then_restore(mosquitto, gateway_factory, devices, tmp_path):
    write_secret(tmp_path / "hook.secret", "webhook-secret\n")
    # A webhook nobody answers: the events stay undelivered, in the outbox.
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "backup"},
                         **{"forward.webhook": {"url": "https://127.0.0.1:9/hook",
                                                "secret_file": str(tmp_path / "hook.secret")}})
    gw.add_device(A, key_for(A))
    gw.add_device(B, key_for(B))
    gw.cli("wearer", "set", "%08x" % A, "--name", "A. Worker")
    gw.start()
    a = devices(mosquitto.port, A, key_for(A), prefix="backup")
    for kind in (p.SOS, p.DURESS):
        a.publish(a.alarm(kind))
    a.wait_acked([1, 2])
    before = gw.incidents()
    pending = gw.cli("outbox", "--pending", "--json").stdout.splitlines()
    assert len(before) == 2 and len(pending) == 2

    dest = tmp_path / "backup-1"
    out = gw.cli("backup", str(dest)).stdout
    assert "2 devices, 2 incidents" in out
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    for name in os.listdir(dest / "keys"):
        assert stat.S_IMODE(os.stat(dest / "keys" / name).st_mode) == 0o600
    manifest = json.loads((dest / backup_module.MANIFEST).read_text())
    assert manifest["devices"] == 2 and manifest["created_at"].endswith("Z")
    assert key_for(A).hex() not in (dest / backup_module.MANIFEST).read_text()
    conn = sqlite3.connect(dest / "gateway.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    # After the backup the wearable goes on: more alarms, more acks (downlink counters) that
    # the backup does not know of. Then the gateway's disk is lost.
    for _ in range(3):
        a.publish(a.alarm(p.FALL))
    a.wait_acked([3, 4, 5])
    seen = _acks(a)
    assert max(seen) >= 5
    gw.stop()
    shutil.rmtree(gw.dir / "data")

    result = gw.cli("restore", str(dest))
    assert "restored 2 devices, 2 incidents" in result.stdout
    assert stat.S_IMODE(os.stat(gw.dir / "data" / "gateway.db").st_mode) == 0o600
    again = gw.cli("restore", str(dest), check=False)  # never over a database
    assert again.returncode == 2 and "already holds a gateway database" in again.stderr
    gw.start()
    after = gw.incidents()
    assert [(i["id"], i["kind"], i["state"]) for i in after] == [
        (i["id"], i["kind"], i["state"]) for i in before]
    assert [json.loads(line)["key"] for line in
            gw.cli("outbox", "--pending", "--json").stdout.splitlines()] == [
        json.loads(line)["key"] for line in pending]
    assert sorted(json.loads(line)["device"] for line in
                  gw.cli("device", "list", "--json").stdout.splitlines()) == ["0000000a",
                                                                              "0000000b"]
    assert "A. Worker" in gw.cli("wearer", "show", "%08x" % A).stdout
    # The wearable's next alarm: its ack's counter is past every one it has seen.
    a.publish(a.alarm(p.SOS))
    a.wait_acked([6])
    wait_for(lambda: not a.downlinks.empty(), 10, "the ack")
    new = _acks(a)
    assert new and min(new) > max(seen), (seen, new)
    assert min(new) > backup_module.DOWNLINK_MARGIN


def test_restore_refuses_what_is_not_a_backup_and_a_running_gateway(mosquitto, gateway_factory,
                                                                    tmp_path):
    gw = gateway_factory(mosquitto.port, mqtt={"prefix": "backup2"})
    gw.add_device(A, key_for(A))
    result = gw.cli("restore", str(tmp_path), check=False)
    assert result.returncode == 2
    assert result.stderr == "vigil: %s is not a gateway backup (vigil-backup.json: No such " \
                            "file or directory)\n" % tmp_path
    gw.cli("backup", str(tmp_path / "b"))
    gw.start()
    result = gw.cli("restore", str(tmp_path / "b"), check=False)
    assert result.returncode == 2 and "another gateway (pid %d) is running" % gw.proc.pid in \
        result.stderr
    result = gw.cli("backup", str(tmp_path / "b"), check=False)  # never into an old backup
    assert result.returncode == 2 and "is not empty" in result.stderr
