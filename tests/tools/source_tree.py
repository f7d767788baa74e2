"""A copy of the source tree the firmware builds read, for tests that build from two places.
Imported by this unique name (several test folders have a conftest.py)."""
import shutil


def copy_sources(root, dest):
    """What firmware_build reads, copied from `root` into `dest`, laid out as the repository."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "firmware", dest / "firmware", ignore=ignore)
    shutil.copytree(root / "protocol" / "vigil_protocol", dest / "protocol" / "vigil_protocol",
                    ignore=ignore)
    phase = dest / "tools" / "vigil_tools"
    phase.mkdir(parents=True)
    shutil.copy(root / "tools" / "vigil_tools" / "fw_bench_phase.py", phase)
    return dest
