"""`vigil bench firmware` and `vigil bench taps`: the wearable's budgets, printed as figures.

firmware: builds the mpy-cross bundle and its ROMFS image, then boots the real firmware core
(simulated board, real MQTT link to a local Mosquitto) on the MicroPython unix port with the
heap capped at 64 KiB and the image mapped as a board's ROMFS partition (romfs.py), and
prints the heap in use after boot and the growth per raised alarm. The baseline, in the same
run: the same boot with the bundle loaded from the filesystem (bytecode copied into the heap,
as on a board without ROMFS), with a heap large enough for it.
taps: scores the software double-tap detector on synthetic traces.
"""
import json
import pathlib
import tempfile

from . import ToolError, firmware_build, micropython
from .broker import Mosquitto

# Runs on MicroPython with the bundle first on its path.
_HEAP_SCRIPT = """
import gc, sys, json
gc.collect()
base = gc.mem_alloc()
import asyncio
from vigil_fw.app import Wearable
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
from vigil_fw.mqtt_link import MqttLink
S = json.loads(sys.stdin.read())
gc.collect()
imported = gc.mem_alloc()
cfg = Config({"version": 1, "device_id": "00c0ffee", "key": "6b" * 32,
              "mqtt": {"host": "127.0.0.1", "port": S["port"], "username": "00c0ffee",
                       "password": "bench"}})
board = SimBoard(S["fs"])
w = Wearable(board, cfg, [MqttLink(cfg, log=lambda m: None)], log=lambda m: None)
async def main():
    t = asyncio.create_task(w.run())
    for _ in range(100):
        if w.links[0].up:
            break
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(300)
    gc.collect()
    booted = gc.mem_alloc()
    free_after_boot = gc.mem_free()
    n = S["alarms"]
    for i in range(n):
        w.raise_alarm((1, 2, 4)[i % 3])
        await asyncio.sleep_ms(50)
    gc.collect()
    grown = gc.mem_alloc()
    t.cancel()
    print("heap_base_bytes=%d heap_imported_bytes=%d heap_after_boot_bytes=%d "
          "heap_per_alarm_bytes=%d heap_free_after_boot_bytes=%d link_up=%d alarms_sent=%d "
          "alarms_queued=%d heap_free_at_end_bytes=%d"
          % (base, imported, booted, (grown - booted) // n, free_after_boot,
             1 if w.links[0].up else 0, w.stats["sent"], len(w.outbox), gc.mem_free()))
asyncio.run(main())
"""


BASELINE_HEAPSIZE = "256k"  # room for the bundle loaded into the heap


def _boot(tmp, broker, alarms, **layout):
    flash = tempfile.mkdtemp(dir=tmp)
    try:
        out = micropython.run(_HEAP_SCRIPT, stdin=json.dumps(
            {"port": broker.port, "alarms": alarms, "fs": flash}), **layout)
    except ToolError as exc:
        if "MemoryError" in str(exc):
            where = [line.strip() for line in str(exc).splitlines() if "File" in line][-2:]
            raise ToolError("the firmware ran out of heap (%s): %s (at %s)" % (
                layout.get("heapsize"), str(exc).strip().splitlines()[-1],
                "; ".join(where))) from None
        raise
    return {k: int(v) for k, v in (pair.split("=") for pair in out.split())}


def firmware(heapsize="64k", alarms=6):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        files = firmware_build.build(tmp / "bundle")
        image_bytes = firmware_build.build_romfs(tmp / "bundle", tmp / "firmware.romfs")
        broker = Mosquitto(tmp / "broker").start()
        try:
            baseline = _boot(tmp, broker, alarms, heapsize=BASELINE_HEAPSIZE,
                             path=[str(tmp / "bundle" / "lib")])
            figures = _boot(tmp, broker, alarms, heapsize=heapsize, rom=tmp / "firmware.romfs")
        finally:
            broker.stop()
    figures["files_heap_imported_bytes"] = baseline["heap_imported_bytes"]
    figures["files_heap_after_boot_bytes"] = baseline["heap_after_boot_bytes"]
    figures["romfs_vs_files_after_boot"] = round(
        figures["heap_after_boot_bytes"] / baseline["heap_after_boot_bytes"], 3)
    figures["heapsize_bytes"] = _size(heapsize)
    figures["bundle_bytes"] = sum(files.values())
    figures["bundle_files"] = len(files)
    figures["romfs_image_bytes"] = image_bytes
    return figures, files


def _size(text):
    text = str(text).lower()
    return int(text[:-1]) * 1024 if text.endswith("k") else int(text)


def firmware_command(args):
    figures, files = firmware(args.heapsize, args.alarms)
    print("Vigil firmware budget (MicroPython unix port, heap capped at %s)" % args.heapsize)
    print("  bundle: %d files, %d bytes compiled with mpy-cross -O2; ROMFS image %d bytes" % (
        figures["bundle_files"], figures["bundle_bytes"], figures["romfs_image_bytes"]))
    for name in sorted(files):
        print("    %6d  %s" % (files[name], name))
    print("  firmware in ROMFS (run in place, as flashed):")
    print("    heap after imports:     %d bytes" % figures["heap_imported_bytes"])
    print("    heap in use after boot: %d bytes (%d free)" % (
        figures["heap_after_boot_bytes"], figures["heap_free_after_boot_bytes"]))
    print("    heap growth per alarm:  %d bytes (while waiting for its ack)" %
          figures["heap_per_alarm_bytes"])
    print("    %d alarms raised with no gateway to ack them: %d queued, %d bytes free" % (
        args.alarms, figures["alarms_queued"], figures["heap_free_at_end_bytes"]))
    print("  baseline, firmware loaded from the filesystem (heap %s):" % BASELINE_HEAPSIZE)
    print("    heap after imports:     %d bytes" % figures["files_heap_imported_bytes"])
    print("    heap in use after boot: %d bytes (ROMFS uses %.2f of it)" % (
        figures["files_heap_after_boot_bytes"], figures["romfs_vs_files_after_boot"]))
    if not figures["link_up"]:
        raise ToolError("the MQTT link did not come up during the benchmark")
    print(" ".join("%s=%s" % kv for kv in sorted(figures.items())))
    return 0


def taps(hours=1.0):
    """Detection rate per strength and false positives per hour of walking, running, falls."""
    import sys
    sys.path.insert(0, str(firmware_build.FIRMWARE))  # the detector is device code
    from vigil_fw.taps import DoubleTapDetector

    from . import traces

    def count(samples):
        d = DoubleTapDetector()
        return sum(1 for s in samples if d.feed(s[0], s[1], s[2]))

    figures = {}
    trials = 40
    for strength in (600, 900, 1200, 2000, 3500):
        hits = sum(1 for seed in range(trials)
                   if count(traces.double_tap(strength, gap_ms=120 + 8 * seed, seed=seed)) == 1)
        figures["detect_%dmg" % strength] = hits / trials
    slow = sum(1 for seed in range(trials)
               if count(traces.double_tap(2000, gap_ms=700, seed=seed)) == 1)
    figures["detect_gap_700ms"] = slow / trials
    moving = sum(1 for seed in range(trials) if count(traces.overlay(
        list(traces.walking(1.5, seed=seed)), traces.double_tap(2500, seed=seed))) == 1)
    figures["detect_while_walking"] = moving / trials
    figures["single_tap_false"] = sum(count(traces.single_tap(3000, seed=s))
                                      for s in range(trials)) / trials
    seconds = int(hours * 3600)
    figures["walking_fp_per_hour"] = count(traces.walking(seconds, seed=11)) / hours
    figures["running_fp_per_hour"] = count(traces.running(seconds // 4, seed=12)) / (hours / 4)
    figures["desk_knocks_fp_per_hour"] = count(traces.bumps(seconds, seed=13)) / hours
    figures["fall_false"] = sum(count(traces.fall(seed=s)) for s in range(trials)) / trials
    return figures


def taps_command(args):
    f = taps(args.hours)
    print("Software double-tap detector on synthetic traces (100 Hz)")
    for key, value in f.items():
        print("  %-22s %.3f" % (key, value))
    print(" ".join("%s=%.3f" % kv for kv in f.items()))
    return 0


def register_bench(bench_sub):
    fw = bench_sub.add_parser("firmware", help="firmware heap and bundle size (MicroPython)")
    fw.add_argument("--heapsize", default="64k", help="MicroPython heap cap (default 64k)")
    fw.add_argument("--alarms", type=int, default=6,
                    help="alarms to raise, none acknowledged (the outbox holds 24)")
    fw.set_defaults(func=firmware_command)
    tp = bench_sub.add_parser("taps", help="score the software double-tap detector")
    tp.add_argument("--hours", type=float, default=1.0, help="hours of walking to replay")
    tp.set_defaults(func=taps_command)
