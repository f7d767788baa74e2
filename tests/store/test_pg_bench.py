# `vigil bench ingest`, small: --store all runs SQLite and PostgreSQL with each worker count,
# one after the other, and prints each one's figures (a row each, COMMIT p50/p99 from the
# processes' vigil_gateway_commit_seconds, what limits it) and a last line with the issue's
# names for the largest worker count and every configuration's under its prefix; the
# single-configuration modes still run alone. Figures are printed, never judged here.
import subprocess
import sys


def _bench(*args):
    proc = subprocess.run([sys.executable, "-m", "vigil_tools.cli", "bench", "ingest",
                           "--alarms", "400", "--devices", "4", "--rounds", "1",
                           "--seconds", "0.5"] + list(args),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    return proc.stdout, dict(pair.split("=", 1) for pair in last.split())


def _measured(figures, prefix=""):
    for key in ("ingest_per_s", "ingest_ratio", "bare_subscriber_per_s", "commit_p50_ms",
                "commit_p99_ms", "ack_p50_ms", "ack_p99_ms", "cpu_ms_per_alarm_workers"):
        assert float(figures[prefix + key]) > 0, prefix + key
    assert float(figures[prefix + "commit_p99_ms"]) >= float(figures[prefix + "commit_p50_ms"])
    # counted over the deliberate duplicate deliveries
    assert figures[prefix + "duplicate_incidents"] == "0"
    assert figures[prefix + "reused_downlink_counters"] == "0"


def test_one_run_compares_sqlite_with_1_2_and_4_workers_on_postgresql():
    out, figures = _bench("--store", "all")
    rows = ["SQLite, 1 process", "PostgreSQL, 1 worker", "PostgreSQL, 2 workers",
            "PostgreSQL, 4 workers"]
    for row in rows:
        assert sum(1 for line in out.splitlines() if line.startswith(row)) == 1, row
        limits = [line for line in out.splitlines() if line.startswith("  %s: " % row)]
        assert len(limits) == 1 and limits[0].split(": ", 1)[1].startswith(
            ("CPU-bound", "not the CPU")), row  # what limits it, from what was measured
    assert "histogram_quantile()" in out
    assert (figures["store"], figures["workers"]) == ("all", "4")
    for prefix in ("", "sqlite_", "pg1_", "pg2_", "pg4_"):
        _measured(figures, prefix)
    for prefix in ("pg1_", "pg2_", "pg4_"):
        assert float(figures[prefix + "cpu_ms_per_alarm_postgresql"]) > 0
    for key in ("ingest_per_s", "ack_p99_ms", "commit_p99_ms", "duplicate_incidents"):
        assert figures[key] == figures["pg4_" + key]  # the unprefixed ones: the largest run
    assert float(figures["pg4_vs_pg1"]) > 0 and float(figures["pg1_vs_sqlite"]) > 0


def test_a_single_configuration_runs_alone():
    out, figures = _bench("--store", "postgresql", "--workers", "2")
    assert "PostgreSQL, 2 workers" in out and "SQLite, 1 process" not in out
    assert (figures["store"], figures["workers"]) == ("postgresql", "2")
    _measured(figures)
    assert float(figures["cpu_ms_per_alarm_postgresql"]) > 0

    out, figures = _bench()  # the default: SQLite
    assert "SQLite, 1 process" in out and "PostgreSQL," not in out
    assert (figures["store"], figures["workers"]) == ("sqlite", "1")
    _measured(figures)
    assert "cpu_ms_per_alarm_postgresql" not in figures
