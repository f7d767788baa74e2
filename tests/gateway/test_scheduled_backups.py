# Scheduled backups (`vigil gateway backup --rotate`, run daily by the timer install-service
# writes; its units are checked in test_service.py): each run a new backup folder in
# [backup] dir (default: "backups" beside data_dir), the newest [backup] keep kept, the older
# removed, nothing else in the folder touched, a run killed midway never counted; a run that
# fails removes nothing.
import datetime
import os
import stat

from gateway_harness import key_for
from vigil_gateway import backup, config
from vigil_gateway.db import DB_NAME, open_database
from vigil_gateway.registry import Registry

A = 0x0000000A


def _names(out):
    """The backup folder a run's output names."""
    return out.split(" in ", 1)[1].split(" (taken", 1)[0]


def test_the_newest_backups_are_kept_and_nothing_else_is_touched(gateway_factory, tmp_path):
    gw = gateway_factory(1883, backup={"keep": 3})
    gw.add_device(A, key_for(A))
    folder = gw.dir / "backups"  # the default: beside data_dir
    folder.mkdir()
    (folder / "notes.txt").write_text("the operator's\n")
    (folder / "20200101T000000Z").mkdir()  # no manifest: not a backup of ours
    (folder / (backup.PARTIAL + "20200102T000000Z")).mkdir()  # a run killed midway
    made = []
    for _ in range(5):
        out = gw.cli("backup", "--rotate").stdout
        made.append(_names(out))
    assert "removed the oldest" in out and "3 backups kept" in out
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(["notes.txt", "20200101T000000Z"] +
                          [os.path.basename(m) for m in made[2:]])
    assert (folder / "notes.txt").read_text() == "the operator's\n"
    assert backup.rotated(str(folder)) == [os.path.basename(m) for m in made[2:]]
    newest = folder / os.path.basename(made[-1])
    assert stat.S_IMODE(os.stat(newest).st_mode) == 0o700
    # each is a whole backup: the newest restores, its device there
    backup.restore(str(newest), str(tmp_path / "restored"))
    registry = Registry(open_database(str(tmp_path / "restored")),
                        str(tmp_path / "restored" / "keys"))
    assert registry.get(A) is not None and registry.key(registry.get(A))


def test_a_run_that_fails_removes_nothing(gateway_factory, tmp_path):
    folder = tmp_path / "backups"
    gw = gateway_factory(1883, backup={"keep": 1, "dir": str(folder)})
    gw.add_device(A, key_for(A))
    first = _names(gw.cli("backup", "--rotate").stdout)
    broken = gateway_factory(1883, gateway={"data_dir": str(tmp_path / "empty")},
                             backup={"keep": 1, "dir": str(folder)})
    result = broken.cli("backup", "--rotate", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("vigil: no gateway database in ")
    assert len(result.stderr.splitlines()) == 1
    assert backup.rotated(str(folder)) == [os.path.basename(first)]
    assert [p.name for p in folder.iterdir()] == [os.path.basename(first)]  # no partial left
    both = gw.cli("backup", str(tmp_path / "x"), "--rotate", check=False)
    assert both.returncode == 2 and "DEST, or --rotate" in both.stderr


def test_backups_in_one_second_are_numbered_and_kept_in_order(tmp_path):
    data = tmp_path / "data"
    conn = open_database(str(data))
    Registry(conn, str(data / "keys")).add(A, key_for(A), None, 60, "van 3")
    conn.close()
    at = datetime.datetime(2026, 12, 1, 3, 0, 0, tzinfo=datetime.timezone.utc)
    for _ in range(12):  # all in one second: ...Z, ...Z-2 ... ...Z-12
        _, path, _ = backup.rotate(str(data), str(tmp_path / "b"), 3, clock=lambda: at)
    assert os.path.basename(path) == "20261201T030000Z-12"
    assert backup.rotated(str(tmp_path / "b")) == [
        "20261201T030000Z-10", "20261201T030000Z-11", "20261201T030000Z-12"]
    assert os.path.exists(os.path.join(path, DB_NAME))


def test_the_backup_folder_is_configured_or_beside_the_data(tmp_path):
    cfg = config.load_dict({"gateway": {"data_dir": "/var/lib/vigil/gateway"}}, str(tmp_path))
    assert backup.rotation_dir(cfg) == "/var/lib/vigil/backups" and cfg.backup.keep == 7
    cfg = config.load_dict({"backup": {"dir": "bk", "keep": 30}}, str(tmp_path))
    assert (backup.rotation_dir(cfg), cfg.backup.keep) == (str(tmp_path / "bk"), 30)
