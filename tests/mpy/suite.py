# Runs the shared test modules under MicroPython's unittest and reports what it ran.
# Used by run_unix.py (unix port) and run_wasm.mjs (WebAssembly port); the last line it
# prints is what tests/test_micropython.py reads.
import sys

import unittest

# The modules every interpreter runs; tests/test_micropython.py checks the counts match.
MODULES = ("test_vectors", "test_codec", "test_window", "test_v2", "test_ble_id",
           "test_location_ext")


def run(modules=MODULES):
    suite = unittest.TestSuite()
    for name in modules:
        module = __import__(name)
        for attr in dir(module):
            obj = getattr(module, attr)
            if isinstance(obj, type) and issubclass(obj, unittest.TestCase) \
                    and obj is not unittest.TestCase:
                suite.addTest(obj)
    result = unittest.TestRunner().run(suite)
    for text in getattr(result, "exceptions", ()):  # unix port's unittest keeps tracebacks
        print(text)
    failures = result.failuresNum + result.errorsNum
    print("VIGIL-MPY implementation=%s version=%s ran=%d failures=%d"
          % (sys.implementation.name, ".".join(str(x) for x in sys.implementation.version[:3]),
             result.testsRun, failures))
    return result.testsRun, failures
