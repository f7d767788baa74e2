"""`vigil bench protocol`: the codec's speed on CPython and its heap use on MicroPython.

Rates are shown against a baseline measured in the same run: one bare HMAC-SHA256 over the
same bytes with the standard library, the floor under any signed frame.
"""
import hmac
import time

import vigil_protocol as p

from . import micropython

KEY = bytes(range(32))
DEVICE = 0x00C0FFEE

# Runs on the MicroPython unix port: heap bytes allocated per encode and per decode.
_MPY_HEAP = """
import gc, sys, time
import vigil_protocol as p
N = int(sys.argv[1])
key = p.DeviceKey(bytes(range(32)))
frame = p.Alarm(0x00C0FFEE, 1, p.SOS)
data = p.encode(frame, key)
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
enc = lambda: p.encode(frame, key)
dec = lambda: p.decode(data, key, "up")
print("mpy_encode_heap_bytes=%d mpy_decode_heap_bytes=%d mpy_encode_per_s=%d mpy_decode_per_s=%d"
      % (heap_per(enc), heap_per(dec), rate(enc), rate(dec)))
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
    message = b"VIGIL-UP" + data[:-8]

    figures = {}
    figures["baseline_hmac_per_s"] = _rate(lambda: hmac.digest(KEY, message, "sha256"), seconds)
    figures["encode_per_s"] = _rate(lambda: p.encode(frame, key), seconds)
    figures["decode_per_s"] = _rate(lambda: p.decode(data, key, p.UP), seconds)
    window = p.ReplayWindow()
    counter = [0]

    def decode_and_window():
        counter[0] += 1
        window.accept(counter[0], p.decode(data, key, p.UP).tag)

    figures["decode_window_per_s"] = _rate(decode_and_window, seconds)
    figures["encode_ratio"] = figures["encode_per_s"] / figures["baseline_hmac_per_s"]
    figures["decode_ratio"] = figures["decode_per_s"] / figures["baseline_hmac_per_s"]

    out = micropython.run(_MPY_HEAP, [mpy_iterations])
    for pair in out.split():
        name, value = pair.split("=")
        figures[name] = int(value)
    return figures


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
BENCHMARKS = ("vigil_tools.bench_firmware", "vigil_tools.bench_ingest", "vigil_tools.bench_ble")


def protocol_command(args):
    f = protocol(seconds=args.seconds)
    print("Vigil protocol benchmark (alarm frame, 20 bytes)")
    print("CPython:   bare HMAC-SHA256 baseline  %10.0f /s" % f["baseline_hmac_per_s"])
    print("           sign + encode              %10.0f /s  (%.2f x baseline)"
          % (f["encode_per_s"], f["encode_ratio"]))
    print("           decode + verify            %10.0f /s  (%.2f x baseline)"
          % (f["decode_per_s"], f["decode_ratio"]))
    print("           decode + verify + window   %10.0f /s" % f["decode_window_per_s"])
    print("MicroPython unix port: heap per encode %d B, per decode %d B; %d encodes/s, "
          "%d decodes/s" % (f["mpy_encode_heap_bytes"], f["mpy_decode_heap_bytes"],
                            f["mpy_encode_per_s"], f["mpy_decode_per_s"]))
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in f.items()))
    return 0

