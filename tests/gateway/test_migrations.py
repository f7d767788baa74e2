# The database's schema version and the steps that bring an older database up
# (migrations.py): a new database is made at the current version; the previous release's
# database (fixtures/release-75582ed, from before versions were recorded) comes up to exactly
# the schema a new one has, every row kept; a database a newer gateway wrote is refused in one
# line and left as it was; a step that fails leaves the database at the version before it;
# a step runs once, even when two processes open the database together; step 3 keeps an
# incident's coordinates as a location record.
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from vigil_gateway import location, migrations
from vigil_gateway.db import DB_NAME, open_database
from vigil_gateway.errors import StoreError
from gateway_harness import VIGIL

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release-75582ed"


def _schema(conn):
    """{table: its columns as PRAGMA table_info gives them}, {index: (table, columns, unique,
    partial)}: what code reading the database depends on."""
    tables = {name: conn.execute("PRAGMA table_info(%s)" % name).fetchall() for (name,) in
              conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {}
    for table in tables:
        for _, name, unique, origin, partial in conn.execute("PRAGMA index_list(%s)" % table):
            columns = [r[2] for r in conn.execute("PRAGMA index_info(%s)" % name)]
            indexes[name if origin == "c" else (table, origin, tuple(columns))] = (
                table, columns, unique, partial)
    return tables, indexes


def _rows(conn):
    return {name: conn.execute("SELECT * FROM %s" % name).fetchall() for (name,) in
            conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _version(path):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def _old_data(tmp_path):
    data = tmp_path / "old"
    shutil.copytree(FIXTURE, data)
    return data


def test_a_new_database_is_made_at_the_current_version(tmp_path):
    conn = open_database(str(tmp_path))
    assert migrations.schema_version(conn) == migrations.VERSION >= 1
    tables, _ = _schema(conn)
    assert {"devices", "frames", "incidents", "audit", "outbox", "downlinks", "api_requests",
            "dc09_state", "wearers", "contact", "incident_lateness"} <= set(tables)


def test_the_previous_release_s_database_comes_up_to_the_schema_of_a_new_one(tmp_path):
    old = _old_data(tmp_path)
    assert _version(old / DB_NAME) == 0  # that release recorded no version
    before = sqlite3.connect(str(old / DB_NAME))
    rows_before, (tables_before, _) = _rows(before), _schema(before)
    before.close()
    assert "protocol" not in [c[1] for c in tables_before["devices"]]  # it is that old
    assert "incident_lateness" not in tables_before

    conn = open_database(str(old))
    assert migrations.schema_version(conn) == migrations.VERSION
    fresh = open_database(str(tmp_path / "new"))
    assert _schema(conn) == _schema(fresh)  # same columns, types, defaults, keys and indexes
    after = _rows(conn)
    for table, rows in rows_before.items():  # every row kept, the added columns at defaults
        assert [row[:len(rows[0])] for row in after[table]] == rows if rows else not after[table]
    assert sum(len(rows) for rows in rows_before.values()) >= 9
    # what the added columns say of the old rows
    assert conn.execute("SELECT protocol, counter_floor FROM devices").fetchall() == [(1, None)]
    assert conn.execute("SELECT counter, confirmed_at, offered_at, offers FROM downlinks"
                        ).fetchall() == [(7, None, None, 0)]
    assert conn.execute("SELECT dc09_account FROM wearers").fetchall() == [("",)]
    assert conn.execute("SELECT request_id, request_sha256, status, reply FROM api_requests"
                        ).fetchall() == [("old-request-1", None, None, None)]
    assert conn.execute("SELECT sequence, clock_offset FROM dc09_state").fetchall() == [
        (41, 1.5)]
    conn.close()
    again = open_database(str(old))  # opened again: nothing to do, nothing changed
    assert _rows(again) == after and migrations.schema_version(again) == migrations.VERSION


def test_a_database_a_newer_gateway_wrote_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    conn = open_database(str(tmp_path))
    conn.execute("PRAGMA user_version = %d" % (migrations.VERSION + 1))
    conn.execute("CREATE TABLE from_the_future (x)")
    conn.close()
    with pytest.raises(StoreError) as refused:
        open_database(str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message
    assert ("schema version %d" % (migrations.VERSION + 1)) in message
    assert ("up to version %d" % migrations.VERSION) in message and str(tmp_path) in message
    assert _version(tmp_path / DB_NAME) == migrations.VERSION + 1
    # the commands say so in the same line, exit status 2, no traceback
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\ndata_dir = "%s"\n' % tmp_path)
    for args in (["device", "list"], ["run"], ["check-config"]):
        done = subprocess.run(VIGIL + ["gateway"] + args +
                              ["--config", str(config)], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert [line for line in done.stderr.splitlines() if "newer Vigil gateway" in line], (
            args, done.stderr)


def _add_column(name):
    return ("add %s" % name, lambda conn: conn.execute(
        "ALTER TABLE devices ADD COLUMN %s INTEGER" % name))


def _fails(conn):
    conn.execute("ALTER TABLE devices ADD COLUMN half_done INTEGER")
    conn.execute("INSERT INTO no_such_table VALUES (1)")


def test_a_step_that_fails_leaves_the_database_at_the_version_before_it(tmp_path):
    conn = open_database(str(tmp_path))
    steps = migrations.STEPS + (_add_column("first"), ("breaks", _fails))
    with pytest.raises(StoreError) as failed:
        migrations.migrate(conn, "test db", steps)
    assert "\n" not in str(failed.value)
    assert "to schema version %d (breaks)" % (migrations.VERSION + 2) in str(failed.value)
    assert migrations.schema_version(conn) == migrations.VERSION + 1  # the good step stays
    columns = [row[1] for row in conn.execute("PRAGMA table_info(devices)")]
    assert "first" in columns and "half_done" not in columns  # the bad one left nothing
    assert not conn.in_transaction
    fixed = migrations.STEPS + (_add_column("first"), _add_column("second"))
    assert migrations.migrate(conn, "test db", fixed) == migrations.VERSION + 1
    assert migrations.schema_version(conn) == migrations.VERSION + 2


def test_a_step_runs_once_when_two_processes_open_the_database_together(tmp_path):
    runs = []

    def step(conn):
        runs.append(1)
        conn.execute("ALTER TABLE devices ADD COLUMN once INTEGER")

    steps = migrations.STEPS + (("once", step),)
    one, two = open_database(str(tmp_path)), open_database(str(tmp_path))
    # both read the version before either migrates; `one` gets the write lock first
    assert migrations.schema_version(two) == migrations.VERSION
    migrations.migrate(one, "test db", steps)
    migrations._run_step(two, migrations.VERSION + 1, steps[-1], "test db")  # too late
    assert runs == [1] and migrations.schema_version(two) == migrations.VERSION + 1
    migrations.migrate(two, "test db", steps)
    assert runs == [1]


def test_a_backup_of_the_previous_release_restores_and_one_of_a_newer_is_refused(tmp_path):
    from vigil_gateway import backup

    made = backup.backup(str(_old_data(tmp_path)), str(tmp_path / "backup"))
    assert made["schema_version"] == 0  # the backup is a copy, not migrated
    backup.restore(str(tmp_path / "backup"), str(tmp_path / "restored"))
    conn = open_database(str(tmp_path / "restored"))
    assert migrations.schema_version(conn) == migrations.VERSION
    assert conn.execute("SELECT device_id, protocol FROM devices").fetchall() == [(10, 1)]
    # The stored action the broker never took (counter 7) is signed again above the moved
    # counter: the restored gateway's first ack would otherwise put it below the window.
    assert conn.execute("SELECT last_counter FROM downlink_counters").fetchall() == [
        (8 + backup.DOWNLINK_MARGIN,)]
    assert conn.execute("SELECT counter FROM downlinks").fetchall() == [
        (8 + backup.DOWNLINK_MARGIN,)]
    assert conn.execute("SELECT device_id, counter FROM downlink_old_counters").fetchall() == [
        (10, 7)]
    conn.close()

    newer = sqlite3.connect(str(tmp_path / "backup" / DB_NAME))
    newer.execute("PRAGMA user_version = %d" % (migrations.VERSION + 1))
    newer.close()
    with pytest.raises(backup.BackupError, match="newer Vigil gateway") as refused:
        backup.restore(str(tmp_path / "backup"), str(tmp_path / "empty"))
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "empty" / DB_NAME).exists()


def test_step_3_keeps_an_incident_s_coordinates_as_a_location_of_unknown_age(tmp_path):
    conn = sqlite3.connect(str(tmp_path / DB_NAME), isolation_level=None)
    migrations.migrate(conn, "test db", migrations.STEPS[:2])
    conn.execute("INSERT INTO incident_locations VALUES (4, 51.5007, -0.1246, 9, 1000.5)")
    migrations.migrate(conn, "test db")
    [(incident, text)] = conn.execute("SELECT * FROM incident_locations").fetchall()
    got = location.from_record(json.loads(text))
    fix = location.Fix(51.5007, -0.1246, 9, 1000.5, False)
    assert (incident, got) == (4, location.Location("gnss", None, None, None, 51.5007, -0.1246,
                                                    9, 1000.5, False, fix))
    assert location.is_stale(got, 1000.5 + 30) is None   # its age was never known
    assert location.is_stale(got, 1000.5 + 61) is True


def test_a_release_of_schema_version_2_comes_up_with_its_locations_as_records(tmp_path):
    # fixtures/release-321d6f6: the beacon table (step 2) with a beacon, an incident whose
    # location was kept as coordinates alone
    old = tmp_path / "old2"
    shutil.copytree(FIXTURE.parent / "release-321d6f6", old)
    assert _version(old / DB_NAME) == 2
    before = sqlite3.connect(str(old / DB_NAME))
    rows_before = _rows(before)
    before.close()
    conn = open_database(str(old))
    assert migrations.schema_version(conn) == migrations.VERSION
    assert _schema(conn) == _schema(open_database(str(tmp_path / "new")))
    after = _rows(conn)
    for table, rows in rows_before.items():
        if table != "incident_locations":
            assert [row[:len(rows[0])] for row in after[table]] == rows if rows else \
                not after[table], table
    [(incident, text)] = after["incident_locations"]
    assert rows_before["incident_locations"] == [(incident, 51.5007, -0.1246, 9, 1796000000.0)]
    got = location.from_record(json.loads(text))
    assert (got.source, got.lat, got.lon, got.accuracy_m, got.taken_at, got.age_known) == \
        ("gnss", 51.5007, -0.1246, 9, 1796000000.0, False)
    assert [b[3] for b in after["beacons"]] == ["Main hall"]
