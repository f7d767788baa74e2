# Shared tests on the MicroPython unix port:  micropython tests/mpy/run_unix.py [module ...]
# (default: the protocol modules of suite.MODULES; the firmware units are test_fw_units).
# Needs micropython-lib's unittest on MICROPYPATH (make setup puts it in .venv/mpy-lib).
# Exits 1 on any failure or error, 0 otherwise.
import sys

ROOT = __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else "."
for sub in ("/protocol", "/firmware", "/tests/protocol", "/tests/firmware", "/tests/mpy", "/tools/vigil_tools"):
    sys.path.append(ROOT + sub)

import suite  # noqa: E402

ran, failures = suite.run(sys.argv[1:] or suite.MODULES)
sys.exit(1 if failures or not ran else 0)
