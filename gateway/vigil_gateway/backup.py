# `vigil gateway backup DEST` and `vigil gateway restore SRC`: the gateway's database and its
# device key files, consistent while the gateway runs.
#
# Rules:
#   the database is copied with SQLite's online backup API (a snapshot of one moment, WAL and
#   all), the key files beside it; the copy is checked (integrity_check, and a key file for
#   every device's key version) and taken again if a key was rotated meanwhile;
#   the copy is one self-contained file in rollback-journal mode, not WAL: reading it needs
#   nothing beside it, so a backup on read-only media (a backup disk mounted ro) can be
#   checked and restored; a backup's database is only ever read as it is on disk (immutable:
#   what restore checks is the file it copies, never a -wal beside it), also one taken in WAL
#   mode by an earlier release;
#   a backup that fails leaves nothing behind: the folders it made on the way to DEST are
#   removed, or, when DEST was there (empty), what it put into it;
#   a backup is private like the data it holds: folder 0700, files 0600 (the manifest too);
#   a manifest (vigil-backup.json) says when it was taken and what it holds, never a key;
#   a backup of an older release is restored as it is and brought up when the gateway opens it
#   (migrations.py); one of a newer release is refused before anything is written;
#   restore writes into a data folder with no database and no gateway running on it (the
#   instance lock is held while it works), then moves every device's downlink counter
#   DOWNLINK_MARGIN past the backup's (a restore that fails midway removes what it put there:
#   no database is left whose counters were not moved): the wearables saw the downlinks the
#   lost gateway sent after the backup, and a counter they have seen is refused (SPEC,
#   section 7), so a restored gateway must never sign with one again; and in the same
#   transaction signs again, above the moved counters, every stored downlink the restored
#   gateway will send (downlinks.restored(): a v2 device's unconfirmed ones, any never sent),
#   whose first counters the wearables' windows would refuse once the first new ack reached
#   them. Uplink counters need nothing: the wearables count on from their own flash, and the
#   gateway takes any counter above its history;
#   scheduled backups (rotate(), run daily by the systemd timer service_install.py writes) go
#   into a folder of their own, one folder per backup named by its UTC time, made under a
#   ".partial-" name and renamed when complete; the oldest complete ones beyond `keep` are then
#   removed, and nothing else in the folder is ever touched; a backup that fails removes
#   nothing;
#   newest() is what /metrics reports of them (read at each scrape, so it is true even when the
#   timer has stopped): how many complete ones the folder holds and the time of the newest, by
#   its name; a missing or unreadable folder holds none (0, 0).
import calendar
import datetime
import json
import os
import re
import shutil
import sqlite3
import time
import urllib.parse

from . import downlinks, instance_lock, migrations
from .db import DB_NAME, open_database
from .errors import GatewayError
from .registry import Registry

MANIFEST = "vigil-backup.json"
FORMAT = 1
# Downlinks a device may have been sent between the backup and the loss of the gateway: more
# than a RECEIVED ack for a check-in every minute for a year, with its retransmissions. A
# counter is 32 bits: thousands of restores fit.
DOWNLINK_MARGIN = 1_000_000
_ATTEMPTS = 3


class BackupError(GatewayError):
    pass


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# A scheduled backup's folder: its UTC time, and a number when two fall in one second.
_ROTATED = re.compile(r"^([0-9]{8}T[0-9]{6}Z)(?:-([0-9]{1,6}))?$")
PARTIAL = ".partial-"


def _copy_private(src, dst):
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(f, out)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_only(db_path, immutable=False):
    """A read-only connection to a database file; immutable: a backup's copy, read as the
    file holds it, with nothing written beside it (its folder may be read-only)."""
    uri = "file:%s?mode=ro%s" % (urllib.parse.quote(os.path.abspath(db_path)),
                                 "&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True, timeout=10.0)


def _missing_keys(db_path, keys_dir):
    """Key files the database (a backup's copy) names and keys_dir lacks."""
    conn = _read_only(db_path, immutable=True)
    try:
        rows = conn.execute("SELECT device_id, key_version FROM devices").fetchall()
    finally:
        conn.close()
    return [name for name in ("%08x.v%d.key" % row for row in rows)
            if not os.path.exists(os.path.join(keys_dir, name))]


def _summary(db_path):
    """Counts, downlink counters, integrity and schema version of a backup's copy."""
    conn = _read_only(db_path, immutable=True)
    try:
        count = {table: conn.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
                 for table in ("devices", "incidents", "frames")}
        counters = dict(conn.execute("SELECT device_id, last_counter FROM downlink_counters"))
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return count, counters, check, version


def backup(data_dir, dest):
    """Copy the gateway's database and key files into the new folder `dest`; returns the
    manifest (a dict)."""
    db_path = os.path.join(data_dir, DB_NAME)
    if not os.path.exists(db_path):
        raise BackupError("no gateway database in %s (gateway.data_dir)" % data_dir)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise BackupError("%s is not a folder: a backup goes into a new folder" % dest)
    if os.path.exists(dest) and os.listdir(dest):
        raise BackupError("%s exists and is not empty: a backup goes into a new folder" % dest)
    # What a failed backup removes: the first folder on the way to dest it made, or else what
    # it put into dest (which was empty).
    made = os.path.abspath(dest)
    while not os.path.exists(os.path.dirname(made)) and os.path.dirname(made) != made:
        made = os.path.dirname(made)
    existed = os.path.exists(made)
    try:
        return _backup(db_path, data_dir, dest)
    except BaseException:
        if not existed:
            shutil.rmtree(made, ignore_errors=True)
        elif os.path.isdir(dest):
            for name in os.listdir(dest):
                path = os.path.join(dest, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        raise


def _backup(db_path, data_dir, dest):
    os.makedirs(os.path.join(dest, "keys"), mode=0o700, exist_ok=True)
    os.chmod(dest, 0o700)
    keys_src, keys_dst = os.path.join(data_dir, "keys"), os.path.join(dest, "keys")
    copy_path = os.path.join(dest, DB_NAME)
    for _ in range(_ATTEMPTS):
        if os.path.isdir(keys_src):
            for name in sorted(os.listdir(keys_src)):
                if name.endswith(".key"):
                    _copy_private(os.path.join(keys_src, name), os.path.join(keys_dst, name))
        source = _read_only(db_path)
        fd = os.open(copy_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        target = sqlite3.connect(copy_path)
        try:
            source.backup(target)  # one consistent snapshot, while writers go on
            # The snapshot carries the live database's WAL mode: made a single file again.
            if target.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
                raise sqlite3.OperationalError("the copy stays in WAL mode")
        except sqlite3.Error as exc:
            raise BackupError("cannot back up %s: %s" % (db_path, exc)) from None
        finally:
            target.close()
            source.close()
        if not _missing_keys(copy_path, keys_dst):
            break  # else a key was rotated between the two copies: take both again
    else:
        raise BackupError("device keys kept changing during the backup: try again")
    count, counters, check, version = _summary(copy_path)
    if check != "ok":
        raise BackupError("the copy of %s fails SQLite's integrity check: %s" % (db_path, check))
    manifest = {"format": FORMAT, "created_at": _now(), "data_dir": os.path.abspath(data_dir),
                "devices": count["devices"], "incidents": count["incidents"],
                "frames": count["frames"], "schema_version": version,
                "highest_downlink_counter": max(counters.values(), default=0)}
    fd = os.open(os.path.join(dest, MANIFEST), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    for folder in (keys_dst, dest):
        _fsync_dir(folder)
    return manifest


def restore(src, data_dir):
    """Put the backup in `src` into `data_dir` (which holds no database), with every device's
    downlink counter moved DOWNLINK_MARGIN past the backup's; returns the manifest."""
    try:
        with open(os.path.join(src, MANIFEST)) as f:
            manifest = json.load(f)
    except OSError as exc:
        raise BackupError("%s is not a gateway backup (%s: %s)" % (
            src, MANIFEST, exc.strerror)) from None
    except ValueError:
        raise BackupError("%s is not a gateway backup (%s is not JSON)" % (src, MANIFEST)) \
            from None
    if manifest.get("format") != FORMAT:
        raise BackupError("%s is a backup of format %r; this gateway reads format %d" % (
            src, manifest.get("format"), FORMAT))
    lock = instance_lock.acquire(data_dir)  # no gateway may run on it meanwhile
    try:
        db_path = os.path.join(data_dir, DB_NAME)
        if os.path.exists(db_path):
            raise BackupError("%s already holds a gateway database: restore into an empty data "
                              "folder (move this one away first)" % data_dir)
        copy = os.path.join(src, DB_NAME)
        _, _, check, version = _summary(copy)
        if check != "ok":
            raise BackupError("%s fails SQLite's integrity check" % copy)
        if version > migrations.VERSION:  # refused before anything is written
            raise BackupError("%s was taken by a newer Vigil gateway (schema version %d; this "
                              "one knows up to %d): restore it with that version" % (
                                  src, version, migrations.VERSION))
        if _missing_keys(copy, os.path.join(src, "keys")):
            raise BackupError("%s lacks key files its database names" % src)
        keys = os.path.join(data_dir, "keys")
        copied = []  # what a failed restore removes: no database whose counters were not moved
        try:
            os.makedirs(keys, mode=0o700, exist_ok=True)
            for name in sorted(os.listdir(os.path.join(src, "keys"))):
                if not os.path.exists(os.path.join(keys, name)):
                    copied.append(os.path.join(keys, name))
                _copy_private(os.path.join(src, "keys", name), os.path.join(keys, name))
            restoring = db_path + ".restoring"
            if not os.path.lexists(restoring):
                copied.append(restoring)
            _copy_private(copy, restoring)
            os.replace(restoring, db_path)
            copied += [db_path, db_path + "-wal", db_path + "-shm"]
            conn = open_database(data_dir)  # its files' modes, as the gateway makes them
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR IGNORE INTO downlink_counters (device_id, "
                             "last_counter) SELECT device_id, 0 FROM devices")
                conn.execute("UPDATE downlink_counters SET last_counter = last_counter + ?",
                             (DOWNLINK_MARGIN,))
                # What the backup holds for the wearables and they may not have, signed again
                # above the moved counters: its first counters are far below what they will
                # be sent first now, and their windows would refuse it.
                manifest = dict(manifest, downlinks_signed_again=downlinks.restored(
                    conn, Registry(conn, keys)))
                conn.execute("COMMIT")
            finally:
                conn.close()
            _fsync_dir(keys)
            _fsync_dir(data_dir)
        except BaseException:
            for path in copied:
                if os.path.lexists(path):
                    os.unlink(path)
            raise
    finally:
        lock.close()
    return manifest


def rotation_dir(config):
    """Where scheduled backups go: [backup] dir, or "backups" beside the data folder."""
    return config.backup.dir or os.path.join(
        os.path.dirname(os.path.abspath(config.gateway.data_dir)), "backups")


def rotated(folder):
    """The complete scheduled backups in `folder`, oldest first (names only)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _ROTATED.match(name)
        if match and os.path.isfile(os.path.join(folder, name, MANIFEST)):
            found.append(((match.group(1), int(match.group(2) or 1)), name))
    return [name for _, name in sorted(found)]


def rotate(data_dir, folder, keep, clock=None):
    """A new backup in `folder` (made if missing, 0700), then the oldest complete ones beyond
    `keep` removed. Returns (its manifest, its path, the names removed)."""
    if keep < 1:
        raise BackupError("backup.keep must be at least 1")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):  # what a run killed midway left
        if name.startswith(PARTIAL):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    now = clock() if clock else datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    # after every backup of the same second, even one since removed (names sort as made)
    taken = [_ROTATED.match(n) for n in os.listdir(folder)]
    number = max([int(m.group(2) or 1) for m in taken if m and m.group(1) == stamp] + [0]) + 1
    name = stamp if number == 1 else "%s-%d" % (stamp, number)
    partial = os.path.join(folder, PARTIAL + name)
    try:
        manifest = backup(data_dir, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = os.path.join(folder, name)
    os.rename(partial, final)
    _fsync_dir(folder)
    older = [n for n in rotated(folder) if n != name]  # the new one stays, whatever the clock
    removed = older[:max(0, len(older) + 1 - keep)]
    for old in removed:
        shutil.rmtree(os.path.join(folder, old))
    if removed:
        _fsync_dir(folder)
    return manifest, final, removed


def newest(folder):
    """(how many complete scheduled backups `folder` holds, the unix time of the newest, 0 when
    there is none); a missing or unreadable folder holds none."""
    try:
        names = rotated(folder)
    except OSError:
        return 0, 0
    if not names:
        return 0, 0
    stamp = _ROTATED.match(names[-1]).group(1)
    return len(names), calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
