"""`vigil bench ble`: the BLE path over an emulated radio (bumble), measured end to end.

N simulated wearables (the firmware's own core and BLE link, on CPython) and one gateway
central (real bleak code, bumble backend) feeding the gateway's real pipeline and store. Prints
the time to connect them all, the alarm-notify -> RECEIVED-ack-at-the-wearable latency
(p50/p99), and how many wearables the central holds at once. The baseline, measured in the same
run, is a bare notify -> write round trip over the same emulated link with no Vigil work.
"""
import asyncio
import statistics
import sys
import tempfile
import time

from vigil_gateway.bleak_bumble import factories
from vigil_gateway.bumble_air import Air
from . import ToolError
from .firmware_build import FIRMWARE

KEY = bytes(range(0x40, 0x60))


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _bench(wearables, alarms):
    sys.path.insert(0, str(FIRMWARE))  # the wearable's core is device code
    import vigil_protocol as p
    from vigil_fw import ble_link
    from vigil_fw.app import Wearable
    from vigil_fw.config import Config
    from vigil_fw.hal_sim import SimBoard
    from vigil_gateway.ble_central import BleCentral
    from vigil_gateway.db import open_database
    from vigil_gateway.pipeline import Pipeline
    from vigil_gateway.registry import Registry
    from vigil_gateway.store import Store
    from vigil_gateway.topics import Topics

    from .aioble_bumble import Aioble

    tmp = tempfile.TemporaryDirectory()
    air = Air()
    conn = open_database(tmp.name)
    registry = Registry(conn, tmp.name + "/keys")
    topics = Topics("vigil")
    pipeline = Pipeline(registry, Store(conn), topics)
    devices = []
    for i in range(wearables):
        device_id = 0x00B1E000 + i
        registry.add(device_id, KEY)
        config = Config({"version": 1, "device_id": "%08x" % device_id, "key": KEY.hex(),
                         "mqtt": {"host": "-", "username": "%08x" % device_id,
                                  "password": "-"}})
        flash = tempfile.mkdtemp(dir=tmp.name)
        w = Wearable(SimBoard(flash), config, [], log=lambda m: None)
        aioble = Aioble(await air.device("F1:00:00:00:%02X:%02X" % (i // 256, i % 256)))
        w.links.append(ble_link.BleLink(config, aioble, aioble.UUID, log=lambda m: None,
                                        urgent=w.urgent))
        devices.append((device_id, w))
    central_device = await air.device("F0:00:00:00:00:01")
    inbound = asyncio.Queue()
    central = BleCentral(
        topics, inbound.put_nowait, lambda: {d for d, _ in devices},
        *factories(central_device), max_connections=wearables)

    async def gateway_loop():
        while True:
            batch = [await inbound.get()]
            while not inbound.empty():
                batch.append(inbound.get_nowait())
            for outcome in pipeline.process(batch):
                if outcome.downlink is not None:
                    await central.send(outcome.device_id, outcome.downlink[1])

    tasks = [asyncio.create_task(w.run()) for _, w in devices]
    start = time.perf_counter()
    tasks.append(asyncio.create_task(central.run()))
    tasks.append(asyncio.create_task(gateway_loop()))
    while len(central.status.connected) < wearables:
        if time.perf_counter() - start > 60:
            break
        await asyncio.sleep(0.01)
    connect_s = time.perf_counter() - start
    held = len(central.status.connected)
    await asyncio.sleep(0.5)  # let the first check-ins settle

    latencies = []
    lost = 0
    connected = [(d, w) for d, w in devices if d in central.status.connected]
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
    if not latencies:
        raise ToolError("no alarm was acknowledged over BLE (%d of %d wearables connected)"
                        % (held, wearables))

    baseline = await _baseline(central, devices[0][0], p)
    for task in tasks:
        task.cancel()
    await central.close()
    await air.close()
    conn.close()
    tmp.cleanup()
    return {"wearables": wearables, "connected": held, "connect_all_s": connect_s,
            "alarms_unacked": lost,
            "ack_p50_ms": statistics.median(latencies),
            "ack_p99_ms": _percentile(latencies, 0.99),
            "baseline_roundtrip_ms": baseline,
            "ack_vs_baseline": statistics.median(latencies) / baseline}


async def _baseline(central, device_id, p):
    """A bare write-with-response round trip on an already connected link."""
    from vigil_gateway.ble_central import DOWNLINK
    client = central._clients.get(device_id)
    samples = []
    for _ in range(50):
        t0 = time.perf_counter()
        await client.write_gatt_char(DOWNLINK, b"\x00" * 20, response=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def ble_command(args):
    f = asyncio.run(_bench(args.wearables, args.alarms))
    print("Vigil BLE benchmark (emulated controllers, bumble host, real bleak central)")
    print("  wearables connected:          %d of %d in %.2f s" % (f["connected"],
                                                                f["wearables"],
                                                                f["connect_all_s"]))
    print("  alarm notify -> RECEIVED ack: p50 %.2f ms, p99 %.2f ms" % (f["ack_p50_ms"],
                                                                       f["ack_p99_ms"]))
    print("  baseline write round trip:    %.2f ms (ack p50 = %.1f x baseline)" % (
        f["baseline_roundtrip_ms"], f["ack_vs_baseline"]))
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in f.items()))
    return 0


def register_bench(bench_sub):
    ble = bench_sub.add_parser("ble", help="BLE connect time, alarm->ack latency, capacity")
    ble.add_argument("--wearables", type=int, default=8, help="simulated wearables")
    ble.add_argument("--alarms", type=int, default=100, help="alarms to time")
    ble.set_defaults(func=ble_command)
