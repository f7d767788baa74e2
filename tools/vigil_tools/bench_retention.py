"""`vigil bench retention`: the gateway database's size after N days of a simulated fleet,
with [store] retain_days pruning and without (the baseline, in the same run).

Each simulated day every device checks in every `interval` seconds and raises one alarm;
the frames go through the gateway's own store (insert_frame, one transaction a day), each
alarm raises its incident and a responder resolves it ten minutes on (incidents.py: audit
trail, outbox events, both delivered to a webhook), and the pruned database runs the gateway's
Retention once a day, as the service does hourly. Incidents and their audit are never pruned:
what they take grows with the days whatever retain_days says, and is shown apart. Prints the
file size and the live data (pages in use) of both; last line key=value pairs.
"""
import os
import sqlite3
import tempfile

DAY_S = 86400


def simulate(path, devices, days, interval_s, retain_days):
    from vigil_gateway.db import open_database
    from vigil_gateway.downlinks import Downlinks
    from vigil_gateway.incidents import RESOLVED, Incidents
    from vigil_gateway.outbox import Outbox
    from vigil_gateway.pipeline import WINDOW_SIZE, Pipeline
    from vigil_gateway.registry import Registry
    from vigil_gateway.retention import Retention
    from vigil_gateway.store import Contact, Store
    from vigil_gateway.topics import Topics

    conn = open_database(path, synchronous="normal")
    store = Store(conn)
    registry = Registry(conn, os.path.join(path, "keys"))
    downlinks = Downlinks(conn, registry, Pipeline(registry, store, Topics("vigil")))
    outbox = Outbox(conn, ["webhook"])
    incidents = Incidents(store, outbox)
    retention = Retention(store, outbox, downlinks, retain_days, WINDOW_SIZE)
    start = 1_800_000_000.0
    counters = [0] * devices
    per_day = DAY_S // interval_s
    payload = bytes(20)  # a v2 frame's size
    for day in range(days):
        now = start + day * DAY_S
        with store.transaction():
            for d in range(devices):
                if day == 0:
                    store.write_contact(Contact(d + 1, now, interval_s, None, 0))
                for i in range(per_day + 1):
                    counters[d] += 1
                    kind = "alarm" if i == per_day else "checkin"
                    at = now + i * interval_s
                    store.insert_frame(d + 1, counters[d], os.urandom(8), kind,
                                       "SOS" if kind == "alarm" else None, None, payload, at)
                    if kind == "alarm":
                        incident = incidents.raise_alarm(d + 1, counters[d], "SOS", at,
                                                         "waited 2s on the wearable")
                        incidents.apply(incident, RESOLVED, at + 600, "by A. Responder")
            for item in outbox.items("webhook", pending_only=True):
                outbox.delivered(item, now + DAY_S - 1)
        if retention.due(now + DAY_S):
            retention.prune(now + DAY_S)
            retention._last = None  # once a simulated day
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    size = os.path.getsize(os.path.join(path, "gateway.db"))
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    used = (conn.execute("PRAGMA page_count").fetchone()[0]
            - conn.execute("PRAGMA freelist_count").fetchone()[0]) * page
    frames = store.frame_count()
    incidents_count = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
    # what incidents and audit take (the dbstat table, where SQLite has it: pages of each)
    try:
        kept = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN ('incidents', "
                            "'audit')").fetchone()[0] or 0
    except sqlite3.OperationalError:  # an SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        kept = None
    conn.close()
    return size, used, frames, incidents_count, kept


def bench(devices=20, days=60, interval_s=300, retain_days=30):
    figures = {"devices": devices, "days": days, "interval_s": interval_s,
               "retain_days": retain_days}
    with tempfile.TemporaryDirectory() as tmp:
        for label, keep in (("kept_all", 0), ("pruned", retain_days)):
            size, used, frames, incidents, kept = simulate(
                os.path.join(tmp, label), devices, days, interval_s, keep)
            figures[label + "_file_bytes"] = size
            figures[label + "_used_bytes"] = used
            figures[label + "_frames"] = frames
            figures[label + "_incidents"] = incidents
            figures[label + "_incident_bytes"] = kept
    figures["pruned_over_kept_used"] = round(
        figures["pruned_used_bytes"] / figures["kept_all_used_bytes"], 3)
    return figures


def register_bench(bench_sub):
    ret = bench_sub.add_parser("retention", help="database size after N days of a simulated "
                                                 "fleet, pruned and not")
    ret.add_argument("--devices", type=int, default=20)
    ret.add_argument("--days", type=int, default=60)
    ret.add_argument("--interval", type=int, default=300, help="check-in interval, seconds")
    ret.add_argument("--retain-days", type=float, default=30)
    ret.set_defaults(func=command)


def command(args):
    f = bench(args.devices, args.days, args.interval, args.retain_days)
    print("Vigil retention: %d devices, a check-in every %d s and an alarm a day, %d days"
          % (f["devices"], f["interval_s"], f["days"]))
    for label, what in (("kept_all", "everything kept"),
                        ("pruned", "retain_days = %g" % f["retain_days"])):
        print("  %-20s %9d frames  file %6.1f MB  in use %6.1f MB  %d incidents%s"
              % (what, f[label + "_frames"], f[label + "_file_bytes"] / 1e6,
                 f[label + "_used_bytes"] / 1e6, f[label + "_incidents"],
                 "" if f[label + "_incident_bytes"] is None else " (with their audit %.2f MB)"
                 % (f[label + "_incident_bytes"] / 1e6)))
    print("  pruned / kept (in use): %.3f" % f["pruned_over_kept_used"])
    print(" ".join("%s=%s" % (k, v) for k, v in f.items()))
    return 0
