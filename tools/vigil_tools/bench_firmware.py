"""`vigil bench firmware` and `vigil bench taps`: the wearable's budgets, printed as figures.

firmware: builds the mpy-cross bundle and its ROMFS image, then runs the real firmware core
(simulated board with the tap engine the LIS3DH has, real MQTT link to a local Mosquitto) on
the MicroPython unix port, with the heap capped (112 KiB by default: the 64-bit port's objects
are ~1.9x an ESP32's and the firmware does not fit 64 KiB there) and the image mapped as a
board's ROMFS partition (romfs.py), through its life with a gateway out of reach:

  1. boot on empty flash, link up; raise N alarms that nobody acknowledges (the outbox holds
     24 and refuses the rest);
  2. reboot (a new process) with that full outbox, link up, and drain it: a gateway on the
     broker acknowledges every alarm;
  3. boot once more and stay idle (link up, no alarm) for a few seconds, counting every task
     wake-up (asyncio's sleeps, flag waits and stream reads are wrapped to count returns).

Every phase counts task deaths and restarts (the app's supervisor restarts a task that raised)
and samples the live heap (after a collection) at each step: the peak, and the largest block
that can still be allocated at the peak (with --heap-map DIR, MicroPython's map of the heap,
micropython.mem_info(1), is written there where that block was smallest). The command fails
if any task died. With --runs N each build runs N times, with other environment and path
sizes; the figures are the worst of the runs (highest peak, smallest block), with the best
block beside them. The baseline, in
the same run: the same boot with the bundle loaded from files (bytecode in the heap). Where the
32-bit build with the firmware frozen in is available (vigil_tools.mpy32), phases 1 and 2 also
run on it, as a production image: its figures have an ESP32's object sizes. There the BLE link
is up too, as on a board: its real aioble on BTstack, on a pty of the emulated radio
(vigil_tools.ble_rig), with the gateway's central connected and subscribed but never
acknowledging (so every alarm also goes out by notification). Phase 3 runs on the frozen
32-bit build too, its BLE link advertising with no central on the radio (MQTT link up, BLE
advertising, no alarm: the case issue 11's goal of at most 3 wake-ups a second is for), and
prints idle_wakeups32_per_s with what the wake-ups were (which waits returned how often).
ble_loaded, ble32_loaded, ble32_romfs_loaded and idle32_ble_loaded say whether the wearable
had its BLE link in the runs they describe (the phases report it).
The device side of each phase is the module fw_bench_phase.py, run from ROM beside the firmware
(in the ROMFS image, frozen into the 32-bit build) as a board's main.py would be, so that the
heap figures are the firmware's and not the harness's bytecode.
taps: scores the software double-tap detector on synthetic traces.
"""
import json
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

from . import ToolError, firmware_build, micropython
from .broker import Mosquitto

DEVICE = "00c0ffee"
KEY_HEX = "6b" * 32

# Device side: the module that runs one phase on MicroPython (settings as JSON on stdin, it
# prints "FIGURES <json>"). Run from ROM beside the firmware, so its bytecode is not counted.
PHASE_MODULE = pathlib.Path(__file__).with_name("fw_bench_phase.py")
PHASE_IMPORT = "import fw_bench_phase\n"

BUDGET32_BYTES = 44800  # the peak live heap allowed: 70 % of the 64,000 bytes a classic ESP32 starts with
# The 64-bit unix port's default heap: its objects are ~1.9x an ESP32's and its ROMFS names are
# interned in its heap, so the firmware peaks at ~92.5 KB there (it does not boot in 64 KiB);
# the budget is held on the 32-bit build (BUDGET32_BYTES, at HEAPSIZE32).
HEAPSIZE64 = "112k"
HEAPSIZE32 = "64k"
HEAPSIZE32_ROMFS = "96k"
BASELINE_HEAPSIZE = "256k"  # room for the bundle loaded into the heap
IDLE_MS = 5000
IDLE_WAKEUPS_GOAL = 3  # per second at most, idle (MQTT up, BLE advertising, no alarm): issue 11


class _Gateway:
    """The gateway's side on the broker, for the drain phase: a RECEIVED ack, signed with the
    device key, for every alarm it sees while `acking`."""

    def __init__(self, port):
        import paho.mqtt.client as mqtt

        import vigil_protocol as p
        self.p = p
        self.key = p.DeviceKey(bytes.fromhex(KEY_HEX))
        self.acking = False
        self.counter = 0
        self.acked = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gateway")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("vigil/up/+", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        p = self.p
        try:
            frame = p.decode(msg.payload, self.key, p.UP)
        except p.RemoteProtocolError:
            return
        if self.acking and frame.NAME == "alarm":
            self.counter += 1
            self.acked.add(frame.counter)
            ack = p.encode(p.Ack(frame.device_id, self.counter, frame.counter, p.RECEIVED),
                           self.key)
            client.publish("vigil/down/" + DEVICE, ack, qos=1)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _phase(cmd, env, settings, gateway=None, timeout=90):
    """Run one phase; its FIGURES, or a ToolError saying how it failed."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(settings))
    proc.stdin.close()
    figures = None
    lines = []
    heap_map = None  # the last map the phase printed: where its free block was smallest
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith("HEAPMAP ") or (heap_map is not None and heap_map[-1] != ""):
                if line.startswith("HEAPMAP "):
                    heap_map = []
                heap_map.append("" if line.startswith("HEAPMAP-END") else line)
                continue
            lines.append(line)
            if line.startswith("READY") and gateway is not None:
                gateway.acking = True
            elif line.startswith("FIGURES "):
                figures = json.loads(line[8:])
        err = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
    if proc.returncode != 0 or figures is None:
        detail = (err or "".join(lines)).strip().splitlines()
        where = [x.strip() for x in detail if "File" in x][-2:]
        raise ToolError("the firmware failed in its %s phase (heap %s): %s%s" % (
            settings["phase"], settings.get("heapsize"), detail[-1] if detail else "no output",
            " (at %s)" % "; ".join(where) if where else ""))
    if heap_map:
        figures["heap_map"] = "".join(heap_map)
    return figures


def _settings(broker, alarms, heapsize, ble, heap_map=False, location=()):
    """The settings every phase gets (fw_bench_phase.py reads them on stdin). `ble`: 0 no BLE
    link; 1 a BLE link, and the phase waits for the central on the rig to connect it; 2 a BLE
    link advertising, with no central to wait for."""
    return {"port": broker.port, "device": DEVICE, "key": KEY_HEX, "alarms": alarms,
            "heapsize": heapsize, "count_wakes": False, "idle_ms": IDLE_MS, "ble": ble,
            "heap_map": heap_map, "gnss": "gnss" in location,
            "wifi_scan": "wifi_scan" in location}


def _run_phases(cmd, env, tmp, broker, alarms, heapsize, idle, run=0, ble=False,
                heap_map=False, location=()):
    """The phases on one MicroPython build: {phase: figures}. Run `run` > 0 varies what the
    heap's layout depends on (the host malloc's alignment follows the environment's and the
    paths' sizes): a padding variable and a deeper flash folder."""
    env = dict(env, VIGIL_BENCH_PAD="x" * (run * 37 % 301))
    flash = tempfile.mkdtemp(dir=tmp, prefix="f" * (1 + run * 13 % 90))
    common = _settings(broker, alarms, heapsize, ble, heap_map, location)
    out = {"fill": _phase(cmd, env, dict(common, phase="fill", fs=flash))}
    gateway = _Gateway(broker.port)
    try:
        out["drain"] = _phase(cmd, env, dict(common, phase="drain", fs=flash), gateway)
    finally:
        gateway.close()
    if idle:
        out["idle"] = _phase(cmd, env, dict(common, phase="idle", count_wakes=True,
                                            fs=tempfile.mkdtemp(dir=tmp)))
    return out


def _unix_port(heapsize, rom, path=()):
    """(command, environment) that runs the phase module on the unix port wheel, with the ROMFS
    image `rom` (which holds the phase module) mapped and mounted as a board's partition."""
    import os

    from .romfs import MOUNT_FILE, command
    cmd = command(rom) + ["-X", "heapsize=%s" % heapsize,
                          "-c", MOUNT_FILE.read_text() + PHASE_IMPORT]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(
        list(path) + [str(micropython.PROTOCOL_DIR), ".frozen"]))
    return cmd, env


def _frozen32(heapsize, romfs=False):
    """(command, environment) for the 32-bit build, or None: the firmware frozen in, or with
    `romfs` the stock build run from the ROMFS image frozen into it as a constant
    (mpy32.rom_image_module()), as a unit provisioned by `vigil provision` runs it."""
    import os

    from . import mpy32
    exe = mpy32.executable(romfs=romfs)
    if exe is None:
        return None
    lib = str(pathlib.Path(exe).parent / "lib")  # aioble, as mip installs it on a board
    mount = "import vigil_rom_image\nvigil_rom_image.mount(%r)\ndel vigil_rom_image\n" % lib
    return ([str(exe), "-X", "heapsize=%s" % heapsize, "-c",
             (mount if romfs else "") + PHASE_IMPORT],
            dict(os.environ, MICROPYPATH=".frozen"))


def _phases32_with_ble(frozen, tmp, broker, alarms, heapsize, run=0, heap_map=False,
                       location=()):
    """Phases 1 and 2 on the 32-bit build with its BLE link up: a rig's pty as its H4 UART,
    and the gateway's central on the rig connecting it (never acknowledging)."""
    from .ble_rig import BleRig

    cmd, env = frozen
    rig = BleRig(wearables=1).start()
    try:
        rig.listening_central({int(DEVICE, 16): bytes.fromhex(KEY_HEX)})
        return _run_phases(cmd, dict(env, MICROPYBTUART=rig.wearable_uart(0)), tmp, broker,
                           alarms, heapsize, idle=False, ble=1, run=run, heap_map=heap_map,
                           location=location)
    finally:
        rig.stop()


def _idle32_with_ble(frozen, tmp, broker, heapsize, central=False, location=()):
    """Phase 3 (idle: MQTT link up, no alarm, every task wake-up counted) on the 32-bit build
    with its BLE link up on a rig's pty: advertising, with no central on the radio to connect
    it (the issue's case: "MQTT link up, BLE advertising, no alarm"), or with `central` the
    gateway's central connected. Its figures, with "advertised": how many times the host
    enabled advertising on its controller during the phase (the rig's record of it)."""
    from .ble_rig import BleRig

    cmd, env = frozen
    rig = BleRig(wearables=1).start()
    try:
        if central:
            rig.listening_central({int(DEVICE, 16): bytes.fromhex(KEY_HEX)})
        # ble 1: wait for the central to connect the link; 2: advertising, nobody to wait for
        settings = dict(_settings(broker, 0, heapsize, 1 if central else 2, location=location),
                        phase="idle", count_wakes=True, fs=tempfile.mkdtemp(dir=tmp))
        f = _phase(cmd, dict(env, MICROPYBTUART=rig.wearable_uart(0)), settings)
        f["advertised"] = sum(1 for _, what, value in rig.advertising(0).events
                              if what == "enabled" and value)
    finally:
        rig.stop()
    return f


def _totals(phases):
    """The figures of all phases of one build, combined."""
    fill, drain = phases["fill"], phases["drain"]
    deaths = 0
    restarts = 0
    for f in phases.values():
        restarts += f["task_restarts"]
        deaths += f["task_restarts"] + f["run_died"]
    return {"task_deaths": deaths, "task_restarts": restarts,
            "heap_after_boot_bytes": fill["heap_after_boot_bytes"],
            "heap_after_reboot_bytes": drain["heap_after_boot_bytes"],
            "heap_peak_bytes": max(fill["heap_peak_bytes"], drain["heap_peak_bytes"]),
            "largest_free_block_bytes": min(fill["largest_free_block_bytes"],
                                            drain["largest_free_block_bytes"]),
            "alarms_queued": fill["queued_at_end"], "queued_at_reboot": drain["queued_at_boot"],
            "left_after_drain": drain["queued_at_end"],
            "memory_retries": fill["memory_retries"] + drain["memory_retries"],
            "link_up": min(fill["link_up"], drain["link_up"]),
            "alarms_sent": fill["alarms_sent"]}


def _worst(runs, into, suffix=""):
    """Put the worst of several runs' totals in `into`: highest peak, smallest free block (and
    the best block beside it), and how many runs had no task death."""
    into["heap%s_peak_bytes" % suffix] = max(t["heap_peak_bytes"] for t in runs)
    blocks = [t["largest_free_block_bytes"] for t in runs]
    into["largest_free_block%s_bytes" % suffix] = min(blocks)
    into["largest_free_block%s_max_bytes" % suffix] = max(blocks)
    into["left_after_drain%s" % suffix] = max(t["left_after_drain"] for t in runs)
    into["runs%s_without_death" % suffix] = sum(
        1 for t in runs if t["task_deaths"] == 0)


def _figures32(figures, runs, suffix, heapsize):
    """Put a 32-bit build's figures in `figures` under `suffix` ("32": frozen, "32_romfs": as
    provisioned); returns its runs' totals."""
    totals = [_totals(p) for p in runs]
    figures["heapsize%s_bytes" % suffix] = _size(heapsize)
    figures["heap%s_after_boot_bytes" % suffix] = totals[0]["heap_after_boot_bytes"]
    figures["heap%s_after_reboot_bytes" % suffix] = totals[0]["heap_after_reboot_bytes"]
    figures["ble%s_connected" % suffix] = min(
        f.get("ble_up", 0) for p in runs for f in p.values())
    if any("gnss_fix" in f for p in runs for f in p.values()):
        figures["gnss%s_fix" % suffix] = min(
            f.get("gnss_fix", 0) for p in runs for f in p.values())
    if any("wifi_heard" in f for p in runs for f in p.values()):
        figures["wifi%s_heard" % suffix] = min(
            f.get("wifi_heard", 0) for p in runs for f in p.values())
    _worst(totals, figures, suffix)
    return totals


def _save_heap_maps(folder, build, runs):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for run, phases in enumerate(runs):
        for phase, f in phases.items():
            if f.get("heap_map"):
                (folder / ("%s-run%d-%s.txt" % (build, run, phase))).write_text(f["heap_map"])


def _bench_images(tmp):
    """Two ROMFS images for the 64-bit runs: the phase module alone (for the files baseline,
    whose firmware comes from files) and the firmware image with the phase module added."""
    from .romfs import build_image
    harness = tmp / "harness-lib"
    harness.mkdir()
    firmware_build.compile_module(PHASE_MODULE, "fw_bench_phase.py",
                                  harness / "fw_bench_phase.mpy")
    bench = tmp / "bench-lib"
    shutil.copytree(tmp / "bundle" / "lib", bench)
    shutil.copy(harness / "fw_bench_phase.mpy", bench)
    paths = tmp / "harness.romfs", tmp / "bench.romfs"
    for folder, path in zip((harness, bench), paths):
        path.write_bytes(build_image(folder))
    return paths


def firmware(heapsize=HEAPSIZE64, alarms=30, runs=1, heapsize32=HEAPSIZE32, heap_map=None,
             heapsize32_romfs=HEAPSIZE32_ROMFS, location=()):
    maps = heap_map is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        files = firmware_build.build(tmp / "bundle")
        image_bytes = firmware_build.build_romfs(tmp / "bundle", tmp / "firmware.romfs")
        harness_rom, bench_rom = _bench_images(tmp)
        broker = Mosquitto(tmp / "broker").start()
        try:
            cmd, env = _unix_port(BASELINE_HEAPSIZE, harness_rom,
                                  path=[str(tmp / "bundle" / "lib")])
            baseline = _phase(cmd, env, {"phase": "fill", "port": broker.port,
                                         "device": "00baba00", "key": KEY_HEX, "alarms": 0,
                                         "count_wakes": False,
                                         "fs": tempfile.mkdtemp(dir=tmp)})
            cmd, env = _unix_port(heapsize, bench_rom)
            all64 = [_run_phases(cmd, env, tmp, broker, alarms, heapsize, idle=True,
                                 heap_map=maps, location=location)]
            for run in range(1, runs):
                all64.append(_run_phases(cmd, env, tmp, broker, alarms, heapsize, idle=False,
                                         run=run, heap_map=maps, location=location))
            frozen = _frozen32(heapsize32)
            all32, all32_romfs = [], []
            idle32 = None
            if frozen is not None:
                for run in range(runs):
                    all32.append(_phases32_with_ble(frozen, tmp, broker, alarms, heapsize32,
                                                    run=run, heap_map=maps, location=location))
                idle32 = _idle32_with_ble(frozen, tmp, broker, heapsize32, location=location)
                from_rom = _frozen32(heapsize32_romfs, romfs=True)
                for run in range(runs):
                    all32_romfs.append(_phases32_with_ble(from_rom, tmp, broker, alarms,
                                                          heapsize32_romfs, run=run,
                                                          heap_map=maps, location=location))
        finally:
            broker.stop()
    if maps:
        _save_heap_maps(heap_map, "64bit", all64)
        _save_heap_maps(heap_map, "32bit", all32)
        _save_heap_maps(heap_map, "32bit-romfs", all32_romfs)
    phases = all64[0]
    totals = [_totals(p) for p in all64]
    figures = _totals(phases)
    _worst(totals, figures)
    figures["runs"] = runs
    figures["gnss"] = 1 if "gnss" in location else 0
    figures["wifi_scan"] = 1 if "wifi_scan" in location else 0
    figures["heap_imported_bytes"] = phases["fill"]["heap_imported_bytes"]
    figures["idle_wakeups_per_s"] = round(phases["idle"]["wakeups"] * 1000 / IDLE_MS, 2)
    # Whether the wearable had a BLE link in every phase of these runs: never on this build,
    # which has no `bluetooth` module (the phases say so themselves).
    figures["ble_loaded"] = min(f.get("ble_loaded", 0) for p in all64 for f in p.values())
    figures["files_heap_after_boot_bytes"] = baseline["heap_after_boot_bytes"]
    figures["romfs_vs_files_after_boot"] = round(
        figures["heap_after_boot_bytes"] / baseline["heap_after_boot_bytes"], 3)
    figures["heapsize_bytes"] = _size(heapsize)
    figures["bundle_bytes"] = sum(files.values())
    figures["bundle_files"] = len(files)
    figures["romfs_image_bytes"] = image_bytes
    if all32:
        totals += _figures32(figures, all32, "32", heapsize32)
        figures["ble32_loaded"] = min(f.get("ble_loaded", 0) for p in all32 for f in p.values())
    if idle32 is not None:
        # The idle phase on the 32-bit frozen build, BLE advertising with no central.
        wakes_by, up_at_end, ble_connects, _ = idle32["idle"]
        figures["idle_wakeups32_per_s"] = round(idle32["wakeups"] * 1000 / IDLE_MS, 2)
        figures["idle32_ble_loaded"] = idle32["ble_loaded"]
        figures["idle32_ble_advertised"] = idle32["advertised"]
        figures["idle32_ble_connects"] = ble_connects
        figures["idle32_link_up"] = min(idle32["link_up"], up_at_end)
        figures["idle32_wakes_by"] = ",".join("%s:%d" % kv for kv in sorted(wakes_by.items()))
        totals.append({"task_deaths": idle32["task_restarts"] + idle32["run_died"],
                       "task_restarts": idle32["task_restarts"],
                       "memory_retries": idle32["memory_retries"]})
    if all32_romfs:
        totals += _figures32(figures, all32_romfs, "32_romfs", heapsize32_romfs)
        figures["ble32_romfs_loaded"] = min(f.get("ble_loaded", 0) for p in all32_romfs
                                            for f in p.values())
        figures["heap32_romfs_imported_bytes"] = all32_romfs[0]["fill"]["heap_imported_bytes"]
    for key in ("task_deaths", "task_restarts", "memory_retries"):  # every run of every build
        figures[key] = sum(t[key] for t in totals)
    return figures, files


def _size(text):
    text = str(text).lower()
    return int(text[:-1]) * 1024 if text.endswith("k") else int(text)


def firmware_command(args):
    from . import mpy32
    location = tuple(name for name, on in (("gnss", args.gnss), ("wifi_scan", args.wifi_scan))
                     if on)
    f, files = firmware(args.heapsize, args.alarms, args.runs, args.heapsize32, args.heap_map,
                        args.heapsize32_romfs, location)
    print("Vigil firmware budget (MicroPython unix port, heap capped at %s%s%s)" % (
        args.heapsize, "; GNSS on" if args.gnss else "",
        "; Wi-Fi scans on" if args.wifi_scan else ""))
    print("  bundle: %d files, %d bytes compiled with mpy-cross -O2; ROMFS image %d bytes" % (
        f["bundle_files"], f["bundle_bytes"], f["romfs_image_bytes"]))
    print("  64-bit unix port, firmware in ROMFS (run in place, as flashed), no BLE on this build:")
    print("    heap after imports: %d bytes; after boot: %d (files baseline %d: %.2f of it)" % (
        f["heap_imported_bytes"], f["heap_after_boot_bytes"], f["files_heap_after_boot_bytes"],
        f["romfs_vs_files_after_boot"]))
    print("    %d alarms raised, none acknowledged: %d queued; rebooted with %d queued "
          "(heap after boot %d), drained to %d" % (
              args.alarms, f["alarms_queued"], f["queued_at_reboot"],
              f["heap_after_reboot_bytes"], f["left_after_drain"]))
    print("    peak live heap %d bytes; largest free block at the peak %d bytes (%d in the "
          "best of %d runs)" % (f["heap_peak_bytes"], f["largest_free_block_bytes"],
                                f["largest_free_block_max_bytes"], f["runs"]))
    print("    idle (MQTT link up, no alarm): %.2f task wake-ups per second" %
          f["idle_wakeups_per_s"])
    if "heap32_peak_bytes" in f:
        print("  32-bit build, firmware frozen in (an ESP32's object sizes), heap capped at %s, "
              "BLE link up (aioble on BTstack; a central connected: %s):"
              % (args.heapsize32, "yes" if f["ble32_connected"] else "NO"))
        print("    heap after boot %d, after the reboot with a full outbox %d; peak %d (budget "
              "%d: %s); largest free block at the peak %d (%d in the best of %d runs)" % (
                  f["heap32_after_boot_bytes"], f["heap32_after_reboot_bytes"],
                  f["heap32_peak_bytes"], BUDGET32_BYTES,
                  "within it" if f["heap32_peak_bytes"] <= BUDGET32_BYTES
                  else "OVER BY %d" % (f["heap32_peak_bytes"] - BUDGET32_BYTES),
                  f["largest_free_block32_bytes"],
                  f["largest_free_block32_max_bytes"], f["runs"]))
        print("    idle (MQTT link up%s, BLE advertising with no central: advertising enabled "
              "%d times, %d connections; no alarm): %.2f task wake-ups per second (goal %d: "
              "%s); by what returned: %s" % (
                  "" if f["idle32_link_up"] else " NOT", f["idle32_ble_advertised"],
                  f["idle32_ble_connects"], f["idle_wakeups32_per_s"], IDLE_WAKEUPS_GOAL,
                  "met" if f["idle_wakeups32_per_s"] <= IDLE_WAKEUPS_GOAL else "NOT MET",
                  f["idle32_wakes_by"].replace(",", ", ").replace(":", " ")))
        print("  32-bit build, run as a provisioned unit runs it (firmware from ROMFS, aioble "
              "from /lib as .mpy files, a stock image), heap capped at %s, BLE link "
              "up (a central connected: %s):" % (args.heapsize32_romfs,
                                                 "yes" if f["ble32_romfs_connected"] else "NO"))
        print("    heap after the imports %d, after boot %d, after the reboot with a full outbox "
              "%d; peak %d (budget %d: %s); largest free block at the peak %d (%d in the best "
              "of %d runs)" % (
                  f["heap32_romfs_imported_bytes"], f["heap32_romfs_after_boot_bytes"],
                  f["heap32_romfs_after_reboot_bytes"], f["heap32_romfs_peak_bytes"],
                  BUDGET32_BYTES, "within it" if f["heap32_romfs_peak_bytes"] <= BUDGET32_BYTES
                  else "OVER BY %d" % (f["heap32_romfs_peak_bytes"] - BUDGET32_BYTES),
                  f["largest_free_block32_romfs_bytes"],
                  f["largest_free_block32_romfs_max_bytes"], f["runs"]))
    else:
        print("  no 32-bit build: %s" % mpy32.skip_reason())
    print("  task deaths %d, restarts %d, alarm-path memory retries %d (all runs); runs without "
          "a task death %d of %d%s" % (
              f["task_deaths"], f["task_restarts"], f["memory_retries"],
              f["runs_without_death"], f["runs"],
              "; 32-bit %d of %d, from ROMFS %d of %d" % (
                  f["runs32_without_death"], f["runs"], f["runs32_romfs_without_death"],
                  f["runs"]) if "runs32_without_death" in f else ""))
    if args.heap_map:
        print("  heap maps where the free block was smallest: %s" % args.heap_map)
    print(" ".join("%s=%s" % kv for kv in sorted(f.items())))
    if not f["link_up"]:
        raise ToolError("the MQTT link did not come up during the benchmark")
    if f["task_deaths"] or f["runs_without_death"] < f["runs"]:
        raise ToolError("tasks died during the benchmark (%d in all; %d of %d runs without a "
                        "death)" % (f["task_deaths"], f["runs_without_death"], f["runs"]))
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
    fw.add_argument("--heapsize", default=HEAPSIZE64,
                    help="heap cap for the 64-bit unix port (default %s: the firmware does not "
                         "fit 64k there, its objects being ~1.9x an ESP32's; the 32-bit build "
                         "is the one held to the %d-byte budget)" % (HEAPSIZE64, BUDGET32_BYTES))
    fw.add_argument("--alarms", type=int, default=30,
                    help="alarms to raise, none acknowledged (the outbox holds 24)")
    fw.add_argument("--heapsize32", default=HEAPSIZE32,
                    help="heap cap for the 32-bit frozen build, where there is one (default %s; "
                         "its peak is printed against the %d-byte budget)"
                         % (HEAPSIZE32, BUDGET32_BYTES))
    fw.add_argument("--heapsize32-romfs", default=HEAPSIZE32_ROMFS,
                    help="heap cap for the 32-bit build run from the ROMFS image a unit is "
                         "provisioned with (default %s: it does not fit 64k)" % HEAPSIZE32_ROMFS)
    fw.add_argument("--runs", type=int, default=1,
                    help="repeat the fill and drain phases with other environment and path "
                         "sizes (the heap's layout follows them), on each build; prints the "
                         "worst figures and how many runs had no death")
    fw.add_argument("--heap-map", metavar="DIR", default=None,
                    help="write MicroPython's heap map (micropython.mem_info(1)) of each phase "
                         "where its largest free block was smallest into DIR")
    fw.add_argument("--gnss", action="store_true",
                    help="the simulated unit has a UART GNSS module (gnss in its config) "
                         "sending a burst with a fix (fits the 64-bit build's default 112k)")
    fw.add_argument("--wifi-scan", action="store_true",
                    help="the simulated unit scans for Wi-Fi access points (wifi_scan in its "
                         "config, every check-in) and hears twelve")
    fw.set_defaults(func=firmware_command)
    tp = bench_sub.add_parser("taps", help="score the software double-tap detector")
    tp.add_argument("--hours", type=float, default=1.0, help="hours of walking to replay")
    tp.set_defaults(func=taps_command)
