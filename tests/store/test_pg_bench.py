# `vigil bench ingest --store postgresql --workers N`, small: it runs, and its last line says
# what it counted at the simulated wearables over the duplicate deliveries.
import subprocess
import sys


def test_the_postgresql_ingest_benchmark_counts_duplicates_at_the_wearables():
    proc = subprocess.run([sys.executable, "-m", "vigil_tools.cli", "bench", "ingest",
                           "--store", "postgresql", "--workers", "2", "--alarms", "400",
                           "--devices", "4", "--rounds", "1", "--seconds", "0.5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "2 workers on PostgreSQL (fsync on)" in proc.stdout
    figures = dict(pair.split("=", 1) for pair in lines[-1].split())
    assert (figures["store"], figures["workers"]) == ("postgresql", "2")
    assert figures["duplicate_incidents"] == "0" and figures["reused_downlink_counters"] == "0"
    assert float(figures["ingest_per_s"]) > 0 and float(figures["ack_p99_ms"]) > 0
    assert float(figures["cpu_ms_per_alarm_postgresql"]) > 0
