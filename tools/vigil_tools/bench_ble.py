"""`vigil bench ble`: the BLE path over an emulated radio (bumble), measured end to end.

N simulated wearables (the firmware's own core and BLE link, on CPython over an aioble-shaped
layer on bumble) and one gateway central (real bleak code, bumble backend) feeding the
gateway's real pipeline and store. Prints the time to connect them all, the alarm-notify ->
RECEIVED-ack-at-the-wearable latency (p50/p99), and how many wearables the central holds at
once, for wearables sealing protocol v1 frames and v2 frames, one after the other in the same
run. Both go over the same private BLE link (rotating identifier resolved by the central,
every frame masked), which frame version does not change. The baseline, measured in the same
run, is a bare notify -> write round trip over the same emulated link with no Vigil work.

With --device micropython, the same again with the wearables as a board runs them, beside the
CPython figures: each in a process of the 32-bit MicroPython build with `bluetooth`
(vigil_tools.mpy32: BTstack, micropython-lib's aioble and the firmware frozen in) on a pty of
the project's emulated radio (vigil_tools.ble_rig), the central reaching its controller over
TCP. Their latency is timed on the wearable (ticks_us from raising the alarm to the verified
ack taking it out of the outbox); its baseline is the same bare write round trip.
"""
import asyncio
import hashlib
import math
import statistics
import sys
import tempfile
import time

from . import ToolError
from .firmware_build import FIRMWARE

KEY = bytes(range(0x40, 0x60))


def _key(device_id):
    """Each wearable's own key: a central tells wearables apart by the key that resolves them."""
    return hashlib.sha256(KEY + device_id.to_bytes(4, "big")).digest()
SOS = 1
CONNECT_LIMIT_S = 60


def _percentile(values, q):
    """Nearest rank: the smallest value that a fraction `q` of them do not exceed. Of 100
    alarms, p99 is the 99th fastest (the second slowest); the slowest is shown as max."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values) - 1e-9) - 1)]


class _GatewaySide:
    """The gateway's real pipeline and store, fed by a BleCentral on bumble device `radio`;
    acks are written back over BLE."""

    def __init__(self, radio, device_ids, tmp):
        from vigil_gateway.bleak_bumble import factories
        from vigil_gateway.ble_central import BleCentral
        from vigil_gateway.db import open_database
        from vigil_gateway.pipeline import Pipeline
        from vigil_gateway.registry import Registry
        from vigil_gateway.store import Store
        from vigil_gateway.topics import Topics

        self.conn = open_database(tmp)
        registry = Registry(self.conn, tmp + "/keys")
        topics = Topics("vigil")
        self.pipeline = Pipeline(registry, Store(self.conn), topics)
        for device_id in device_ids:
            registry.add(device_id, _key(device_id))
        self.inbound = asyncio.Queue()
        keys = {device_id: registry.key(registry.get(device_id)) for device_id in device_ids}
        self.central = BleCentral(topics, self.inbound.put_nowait, lambda: set(device_ids),
                                  *factories(radio),
                                  max_connections=len(device_ids), key_of=keys.get)
        self.tasks = []

    async def _loop(self):
        while True:
            batch = [await self.inbound.get()]
            while not self.inbound.empty():
                batch.append(self.inbound.get_nowait())
            for outcome in self.pipeline.process(batch):
                if outcome.downlink is not None:
                    await self.central.send(outcome.device_id, outcome.downlink[1])

    def start(self):
        self.tasks = [asyncio.create_task(self.central.run()),
                      asyncio.create_task(self._loop())]

    async def connect_all(self, count):
        """Seconds until `count` wearables are connected (or the limit passed)."""
        start = time.perf_counter()
        while len(self.central.status.connected) < count:
            if time.perf_counter() - start > CONNECT_LIMIT_S:
                break
            await asyncio.sleep(0.01)
        return time.perf_counter() - start

    async def baseline(self, device_id):
        """A bare write-with-response round trip on an already connected link (ms, median)."""
        from vigil_gateway.ble_central import DOWNLINK
        client = self.central._clients.get(device_id)
        samples = []
        for _ in range(50):
            t0 = time.perf_counter()
            await client.write_gatt_char(DOWNLINK, b"\x00" * 20, response=True)
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples)

    async def close(self):
        for task in self.tasks:
            task.cancel()
        await self.central.close()
        self.conn.close()


def _figures(wearables, held, connect_s, latencies, lost, baseline):
    if not latencies:
        raise ToolError("no alarm was acknowledged over BLE (%d of %d wearables connected)"
                        % (held, wearables))
    return {"wearables": wearables, "connected": held, "connect_all_s": connect_s,
            "alarms_unacked": lost,
            "ack_p50_ms": statistics.median(latencies),
            "ack_p99_ms": _percentile(latencies, 0.99),
            "ack_max_ms": max(latencies),
            "ack_max_alarm": latencies.index(max(latencies)) + 1,  # 1: the first one timed
            "alarms_timed": len(latencies),
            "baseline_roundtrip_ms": baseline,
            "ack_vs_baseline": statistics.median(latencies) / baseline}


async def _bench(wearables, alarms, version=2):
    """The wearables on CPython, in this process, on an in-process emulated link, sealing
    protocol `version` frames."""
    sys.path.insert(0, str(FIRMWARE))  # the wearable's core is device code
    import vigil_protocol as p
    from vigil_fw import ble_link
    from vigil_fw.app import Wearable
    from vigil_fw.config import Config
    from vigil_fw.hal_sim import SimBoard
    from vigil_gateway.bumble_air import Air

    from .aioble_bumble import Aioble

    tmp = tempfile.TemporaryDirectory()
    air = Air()
    devices = []
    for i in range(wearables):
        device_id = 0x00B1E000 + i
        config = Config({"version": 1, "device_id": "%08x" % device_id,
                         "key": _key(device_id).hex(),
                         "protocol": version,
                         "mqtt": {"host": "-", "username": "%08x" % device_id,
                                  "password": "-"}})
        flash = tempfile.mkdtemp(dir=tmp.name)
        w = Wearable(SimBoard(flash), config, [], log=lambda m: None)
        aioble = Aioble(await air.device("F1:00:00:00:%02X:%02X" % (i // 256, i % 256)))
        w.links.append(ble_link.BleLink(config, aioble, aioble.UUID, log=lambda m: None,
                                        urgent=w.urgent))
        devices.append((device_id, w))
    gateway = _GatewaySide(await air.device("F0:00:00:00:00:01"), [d for d, _ in devices],
                           tmp.name)
    tasks = [asyncio.create_task(w.run()) for _, w in devices]
    gateway.start()
    connect_s = await gateway.connect_all(wearables)
    held = len(gateway.central.status.connected)
    await asyncio.sleep(0.5)  # let the first check-ins settle

    latencies = []
    lost = 0
    connected = [(d, w) for d, w in devices if d in gateway.central.status.connected]
    for n in range(alarms if connected else 0):
        device_id, w = connected[n % len(connected)]
        t0 = time.perf_counter()
        w.raise_alarm(p.SOS)
        while len(w.outbox) and time.perf_counter() - t0 < 10:
            await asyncio.sleep(0.0005)
        if len(w.outbox):
            lost += 1  # not acknowledged within 10 s (counted, not timed)
            continue
        latencies.append((time.perf_counter() - t0) * 1000)
    baseline = await gateway.baseline(connected[0][0]) if connected else 0.0
    for task in tasks:
        task.cancel()
    await gateway.close()
    await air.close()
    tmp.cleanup()
    return _figures(wearables, held, connect_s, latencies, lost, baseline)


async def _bench_micropython(exe, wearables, alarms, version=2):
    """The wearables on the 32-bit MicroPython build, a process each, on the rig's ptys."""
    from vigil_gateway.bumble_air import open_device

    from .ble_rig import BleRig, WearableProcess

    tmp = tempfile.TemporaryDirectory()
    rig = BleRig(wearables=wearables).start()
    devices = []
    try:
        for i in range(wearables):
            device_id = 0x00B1F000 + i
            flash = tempfile.mkdtemp(dir=tmp.name)
            devices.append((device_id, await asyncio.to_thread(
                WearableProcess, exe, rig.wearable_uart(i),
                {"device": "%08x" % device_id, "key": _key(device_id).hex(), "fs": flash,
                 "log": False, "protocol": version})))
        radio = await open_device(rig.gateway_transport, "F0:00:00:00:00:02")
        gateway = _GatewaySide(radio, [d for d, _ in devices], tmp.name)
        gateway.start()
        connect_s = await gateway.connect_all(wearables)
        held = len(gateway.central.status.connected)
        await asyncio.sleep(0.5)  # let the first check-ins settle

        latencies = []
        lost = 0
        connected = [(d, w) for d, w in devices if d in gateway.central.status.connected]
        for n in range(alarms if connected else 0):
            device_id, w = connected[n % len(connected)]
            counter = await asyncio.to_thread(w.raise_alarm, SOS)
            try:
                acked = await asyncio.to_thread(w.acked, counter, 10.0)
            except TimeoutError:
                lost += 1  # not acknowledged within 10 s (counted, not timed)
                continue
            latencies.append(acked["us"] / 1000)
        baseline = await gateway.baseline(connected[0][0]) if connected else 0.0
        await gateway.close()
        await radio.power_off()
        await radio.transport.close()
    finally:
        for _, w in devices:
            await asyncio.to_thread(w.close)
        rig.stop()
        tmp.cleanup()
    return _figures(wearables, held, connect_s, latencies, lost, baseline)


def _print(title, f):
    print(title)
    print("  wearables connected:          %d of %d in %.2f s" % (f["connected"],
                                                                f["wearables"],
                                                                f["connect_all_s"]))
    print("  alarm notify -> RECEIVED ack: p50 %.2f ms, p99 %.2f ms, max %.2f ms (alarm %d of %d; "
          "%d not acknowledged)" % (f["ack_p50_ms"], f["ack_p99_ms"], f["ack_max_ms"],
                                    f["ack_max_alarm"], f["alarms_timed"], f["alarms_unacked"]))
    print("  baseline write round trip:    %.2f ms (ack p50 = %.1f x baseline)" % (
        f["baseline_roundtrip_ms"], f["ack_vs_baseline"]))


def _versions(run):
    """{1: figures, 2: figures}: `run(version)` for wearables on v1, then on v2."""
    return {version: run(version) for version in (1, 2)}


def _print_versions(title, by_version):
    for version in (1, 2):
        _print("%s, protocol v%d frames" % (title, version), by_version[version])
    v1, v2 = by_version[1], by_version[2]
    print("  v2 / v1: ack p50 %.2f x, p99 %.2f x" % (v2["ack_p50_ms"] / v1["ack_p50_ms"],
                                                     v2["ack_p99_ms"] / v1["ack_p99_ms"]))


def _flat(prefix, by_version):
    out = {}
    for version in (1, 2):
        out.update(("%sv%d_%s" % (prefix, version, k), v) for k, v in by_version[version].items())
    out[prefix + "v2_vs_v1_ack_p50"] = (by_version[2]["ack_p50_ms"]
                                        / by_version[1]["ack_p50_ms"])
    return out


def ble_command(args):
    f = _versions(lambda v: asyncio.run(_bench(args.wearables, args.alarms, v)))
    _print_versions("Vigil BLE benchmark (emulated controllers, bumble host, real bleak "
                    "central)", f)
    figures = _flat("", f)
    if args.device == "micropython":
        from . import mpy32
        exe = mpy32.executable()
        if exe is None:
            raise ToolError("--device micropython: %s" % mpy32.skip_reason())
        m = _versions(lambda v: asyncio.run(_bench_micropython(exe, args.wearables,
                                                               args.alarms, v)))
        _print_versions("The same with the wearables on the 32-bit MicroPython build "
                        "(BTstack, aioble, a process each on a pty; latency timed on the "
                        "wearable)", m)
        print("  MicroPython / CPython (v2): connect %.2f x, ack p50 %.2f x, p99 %.2f x" % (
            m[2]["connect_all_s"] / f[2]["connect_all_s"],
            m[2]["ack_p50_ms"] / f[2]["ack_p50_ms"], m[2]["ack_p99_ms"] / f[2]["ack_p99_ms"]))
        figures.update(_flat("mpy_", m))
        figures["mpy_vs_cpython_ack_p50"] = m[2]["ack_p50_ms"] / f[2]["ack_p50_ms"]
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in figures.items()))
    return 0


def register_bench(bench_sub):
    ble = bench_sub.add_parser("ble", help="BLE connect time, alarm->ack latency, capacity")
    ble.add_argument("--wearables", type=int, default=8, help="simulated wearables")
    ble.add_argument("--alarms", type=int, default=100, help="alarms to time")
    ble.add_argument("--device", choices=("cpython", "micropython"), default="cpython",
                     help="micropython: also run the wearables on the 32-bit MicroPython build "
                          "with `bluetooth` (vigil_tools.mpy32), beside the CPython figures")
    ble.set_defaults(func=ble_command)
