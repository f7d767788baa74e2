"""`make bench`: its BENCHES list is every `vigil bench` subcommand, its loop runs each one's
command and prints each one's last line, and a failing benchmark does not stop the others."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def benches():
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^BENCHES :?= (.*)$", text, re.M).group(1).split()


def bench_subcommands():
    from vigil_tools.cli import build_parser
    parser = build_parser()
    top = next(a for a in parser._actions if a.dest == "command")
    bench = top.choices["bench"]
    return set(next(a for a in bench._actions if a.dest == "bench_command").choices)


def test_benches_lists_every_vigil_bench_subcommand_once():
    listed = benches()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == bench_subcommands()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_the_bench_loop_runs_every_listed_bench_and_carries_on_past_a_failure(tmp_path):
    # A stand-in `vigil` in BIN records its arguments, prints a key=value line, and fails for
    # one benchmark; `-o setup` keeps make from building anything first.
    calls = tmp_path / "calls"
    fake = tmp_path / "vigil"
    fake.write_text('#!/bin/sh\necho "$*" >> %s\n[ "$2" = taps ] && { echo boom; exit 3; }\n'
                    'echo "figure_of_$2=1"\n' % calls)
    fake.chmod(0o755)
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", "setup", "bench",
                           "BIN=%s" % tmp_path, "VENV=%s" % tmp_path],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MAKEFLAGS=""))
    listed = benches()
    assert calls.read_text().splitlines() == ["bench %s" % b for b in listed]
    for b in listed:
        if b != "taps":
            assert "%s: figure_of_%s=1" % (b, b) in proc.stdout.splitlines(), proc.stdout
    assert "bench taps failed" in proc.stdout
    assert "benchmarks that failed: taps" in proc.stdout
    assert proc.returncode != 0


# `vigil bench firmware` at its defaults (what the loop runs: a 112 KiB heap on the 64-bit
# port, where 64 KiB does not hold the firmware) exits 0: tests/tools/test_romfs.py's
# benchmark runs it so, with --runs 3 only, and checks each build's heap cap.
