"""`vigil bench protocol`: the codec's speed on CPython and its heap use on MicroPython, for
v1 (signed) and v2 (sealed: encrypted, then signed) frames in the same run.

Rates are shown against a baseline measured in the same run: one bare HMAC-SHA256 over the
same bytes with the standard library's hmac.digest. A v2 frame costs two HMACs (one keystream
block, one tag) where a v1 frame costs one. Heap figures come from the 64-bit unix port, and
from the 32-bit one (ESP32-sized objects) where `make mpy32` has built it.
"""
import hmac
import os
import subprocess
import time

import vigil_protocol as p

from . import ToolError, micropython

KEY = bytes(range(32))
DEVICE = 0x00C0FFEE

# Runs on the MicroPython unix port: heap bytes allocated per encode and per decode of the
# 20-byte alarm, v1 and v2, and their rates.
_MPY_HEAP = """
import gc, sys, time
import vigil_protocol as p
from vigil_protocol.frames import decode, encode
N = int(sys.argv[1])
key = p.DeviceKey(bytes(range(32)))
frame = p.Alarm(0x00C0FFEE, 1, p.SOS)
data1 = encode(frame, key)
data2 = encode(frame, key, 2)  # derives the v2 keys once, before anything is measured
decode(data2, key, "up")
def heap_per(fn):
    fn()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(N):
        fn()
    used = gc.mem_alloc() - before
    gc.enable()
    gc.collect()
    return used // N
def rate(fn):
    t = time.ticks_us()
    for _ in range(N):
        fn()
    return N * 1000000 // max(1, time.ticks_diff(time.ticks_us(), t))
out = []
for name, version, data in (("", 1, data1), ("v2_", 2, data2)):
    enc = lambda: encode(frame, key, version)
    dec = lambda: decode(data, key, "up")
    out.append("mpy_%sencode_heap_bytes=%d mpy_%sdecode_heap_bytes=%d mpy_%sencode_per_s=%d "
               "mpy_%sdecode_per_s=%d" % (name, heap_per(enc), name, heap_per(dec), name,
                                          rate(enc), name, rate(dec)))
print(" ".join(out))
"""


def _rate(fn, seconds):
    n = 0
    batch = 200
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def protocol(seconds=1.0, mpy_iterations=200):
    key = p.DeviceKey(KEY)
    frame = p.Alarm(DEVICE, 1, p.SOS)
    data = p.encode(frame, key)
    data2 = p.encode(frame, key, version=2)
    message = b"VIGIL-UP" + data[:-8]

    figures = {}
    figures["baseline_hmac_per_s"] = _rate(lambda: hmac.digest(KEY, message, "sha256"), seconds)
    figures["encode_per_s"] = _rate(lambda: p.encode(frame, key), seconds)
    figures["decode_per_s"] = _rate(lambda: p.decode(data, key, p.UP), seconds)
    figures["v2_encode_per_s"] = _rate(lambda: p.encode(frame, key, version=2), seconds)
    figures["v2_decode_per_s"] = _rate(lambda: p.decode(data2, key, p.UP), seconds)
    window = p.ReplayWindow()
    counter = [0]

    def decode_and_window():
        counter[0] += 1
        window.accept(counter[0], p.decode(data, key, p.UP).tag)

    figures["decode_window_per_s"] = _rate(decode_and_window, seconds)
    base = figures["baseline_hmac_per_s"]
    figures["encode_ratio"] = figures["encode_per_s"] / base
    figures["decode_ratio"] = figures["decode_per_s"] / base
    figures["v2_encode_ratio"] = figures["v2_encode_per_s"] / base
    figures["v2_decode_ratio"] = figures["v2_decode_per_s"] / base
    figures["v2_over_v1_encode"] = figures["v2_encode_per_s"] / figures["encode_per_s"]
    figures["v2_over_v1_decode"] = figures["v2_decode_per_s"] / figures["decode_per_s"]

    out = micropython.run(_MPY_HEAP, [mpy_iterations])
    for pair in out.split():
        name, value = pair.split("=")
        figures[name] = int(value)
    for pair in _mpy32(mpy_iterations).split():  # ESP32-like figures, where the build is
        name, value = pair.split("=")
        figures["mpy32_" + name[len("mpy_"):]] = int(value)
    return figures


def _mpy32(iterations):
    """_MPY_HEAP's line from the 32-bit unix port (vigil_tools.mpy32), with this checkout's
    protocol on its path ahead of the frozen copy; "" when that build is not there."""
    from . import mpy32

    exe = mpy32.executable()
    if exe is None:
        return ""
    env = dict(os.environ, MICROPYPATH=str(micropython.PROTOCOL_DIR))
    proc = subprocess.run([exe, "-c", _MPY_HEAP, str(iterations)], env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ToolError("MicroPython (32-bit) failed:\n" + (proc.stderr or proc.stdout)[-2000:])
    return proc.stdout


def register(sub):
    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    proto = bench_sub.add_parser("protocol", help="codec speed (CPython) and heap (MicroPython)")
    proto.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    proto.set_defaults(func=protocol_command)
    # Other benchmarks add themselves to this group: see BENCHMARKS in their own modules.
    for name in BENCHMARKS:
        __import__(name, fromlist=["register_bench"]).register_bench(bench_sub)


# Modules with a register_bench(bench_subparsers) adding `vigil bench <what>`.
BENCHMARKS = ("vigil_tools.bench_firmware", "vigil_tools.bench_ingest", "vigil_tools.bench_ble",
              "vigil_tools.bench_dc09", "vigil_tools.bench_retention", "vigil_tools.bench_falls")


def protocol_command(args):
    f = protocol(seconds=args.seconds)
    print("Vigil protocol benchmark (alarm frame, 20 bytes; v1 signed, v2 sealed)")
    print("CPython:   bare HMAC-SHA256 baseline  %10.0f /s" % f["baseline_hmac_per_s"])
    for label, name in (("sign + encode", "encode"), ("decode + verify", "decode")):
        print("           %-18s v1  %10.0f /s  (%.2f x baseline)"
              % (label, f[name + "_per_s"], f[name + "_ratio"]))
        print("           %-18s v2  %10.0f /s  (%.2f x baseline, %.2f x v1)"
              % ("", f["v2_" + name + "_per_s"], f["v2_" + name + "_ratio"],
                 f["v2_over_v1_" + name]))
    print("           decode + verify + window v1 %8.0f /s" % f["decode_window_per_s"])
    for port, mpy in (("unix port", "mpy_"), ("32-bit port", "mpy32_")):
        if mpy + "encode_heap_bytes" not in f:
            print("MicroPython %s: not built here (make mpy32)" % port)
            continue
        for version, prefix in (("v1", mpy), ("v2", mpy + "v2_")):
            print("MicroPython %s, %s: heap per encode %d B, per decode %d B; %d encodes/s, "
                  "%d decodes/s" % (port, version, f[prefix + "encode_heap_bytes"],
                                    f[prefix + "decode_heap_bytes"], f[prefix + "encode_per_s"],
                                    f[prefix + "decode_per_s"]))
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in f.items()))
    return 0
