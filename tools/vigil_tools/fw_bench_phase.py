# Device side of `vigil bench firmware` (MicroPython only): one phase of the firmware's life,
# its settings as JSON on stdin, its figures printed as "FIGURES <json>". Imported, never run as
# a -c script: in the 64-bit runs it sits in the ROMFS image beside the firmware and in the
# 32-bit build it is frozen in, so its bytecode stays in flash, as a board's main.py would, and
# the heap figures are the firmware's, not this harness's source compiled into the heap.
import gc
import json
import sys
S = json.loads(sys.stdin.read())
gc.collect()
base = gc.mem_alloc()
import asyncio
# Wake-ups counted, and (idle phase only: no new object in the others' heap figures) a dict
# of them by what returned (sleep_ms, wait, readinto, ...). Names already interned are used
# for the keys: the 64-bit runs load this module from ROMFS, interning its new names in the
# heap they measure.
WAKES = [0, None]
if S["count_wakes"]:
    WAKES[1] = {}

    def _counted(fn, name):
        async def wrapper(*args):
            r = await fn(*args)
            WAKES[0] += 1
            WAKES[1][name] = WAKES[1].get(name, 0) + 1
            return r
        return wrapper
    asyncio.sleep_ms = _counted(asyncio.sleep_ms, "sleep_ms")
    asyncio.sleep = _counted(asyncio.sleep, "sleep")
    asyncio.ThreadSafeFlag.wait = _counted(asyncio.ThreadSafeFlag.wait, "wait")
    asyncio.StreamReader.read = _counted(asyncio.StreamReader.read, "read")
    asyncio.StreamReader.readexactly = _counted(asyncio.StreamReader.readexactly, "readexactly")
    asyncio.StreamReader.readinto = _counted(asyncio.StreamReader.readinto, "readinto")
from vigil_fw.app import Wearable
from vigil_fw.config import Config
from vigil_fw.hal_sim import SimBoard
from vigil_fw.mqtt_link import MqttLink
gc.collect()
imported = gc.mem_alloc()
cfg = Config({"version": 1, "device_id": S["device"], "key": S["key"],
              "mqtt": {"host": "127.0.0.1", "port": S["port"], "username": S["device"],
                       "password": "bench"},
              # as provisioned: fall and no motion on (no movement for 120 s), 30 s to cancel
              "man_down": {"fall": True, "no_motion_s": 120, "cancel_s": 30},
              # with "gnss": a UART GNSS module, as `vigil provision --gnss-rx/--gnss-tx` sets it
              "gnss": {"uart": 1, "rx": 12, "tx": 13} if S.get("gnss") else None,
              # with "wifi_scan": the station scans at every check-in (--wifi-scan-every 1)
              "wifi": {"ssid": "bench"} if S.get("wifi_scan") else None,
              "wifi_scan": {"every": 1} if S.get("wifi_scan") else None})
board = SimBoard(S["fs"], hardware_taps=True, gnss=cfg.gnss, wifi_scan=cfg.wifi_scan)
if cfg.wifi_scan is not None:
    # Twelve access points (their BSSIDs in ROM with this module), a list of tuples made at
    # each scan as WLAN.scan() makes it.
    APS = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20\x21\x22\x23\x24\x25\x26\x27\x28\x29\x2a\x2b\x2c\x2d\x2e\x2f\x30\x31\x32\x33\x34\x35\x36\x37\x38\x39\x3a\x3b\x3c\x3d\x3e\x3f\x40\x41\x42\x43\x44\x45\x46\x47"
    board.wifi_scan = lambda: [(b"", APS[i:i + 6], 6, -40 - i // 6, 3, False)
                               for i in range(0, 72, 6)]
# A receiver's 1 Hz burst (GGA, GSA, GSV, RMC) with a fix, fed 64 bytes at each sample (the
# constant is in ROM with this module): the parser busy and a fix held from boot.
BURST = (b"$GPGGA,120000.00,5130.0468,N,00007.6542,W,1,09,0.9,12.4,M,47.0,M,,*46\r\n"
         b"$GNGSA,A,3,28,31,,,,,,,,,,,1.6,0.9,1.3*28\r\n"
         b"$GPGSV,3,1,12,28,76,017,38,31,45,120,41*7B\r\n"
         b"$GNRMC,120000.00,A,5130.0468,N,00007.6542,W,0.02,,011226,,,A*44\r\n")
AT = [0]

def _gnss_piece():
    if board.gnss is not None:
        i = AT[0]
        board.gnss.feed(BURST[i:i + 64])
        AT[0] = 0 if i + 64 >= len(BURST) else i + 64

if board.gnss is not None:
    board.gnss.feed(BURST)

def _still(n):
    # a still wrist (1 g on z, a few mg of noise), made as it is played: no list on the heap
    for i in range(n):
        yield (i % 3 - 1, 1 - i % 5 // 2, 1000 + i % 7 - 3)

board.accel.feed(_still(100))  # a second of it; then the wrist stays as it was left
w = Wearable(board, cfg, [MqttLink(cfg, log=lambda m: None)], log=lambda m: None)
if S.get("ble"):
    import aioble, bluetooth
    from vigil_fw.ble_link import BleLink
    w.links.append(BleLink(cfg, aioble, bluetooth.UUID, urgent=w.urgent, log=lambda m: None))
F = {"heap_base_bytes": base, "heap_imported_bytes": imported, "heap_peak_bytes": 0,
     "largest_free_block_bytes": 1 << 30, "queued_at_boot": len(w.outbox)}

def largest_free():
    gc.collect()
    lo, hi = 0, gc.mem_free()
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            b = bytearray(mid)
            b = None
            lo = mid
        except MemoryError:
            hi = mid - 1
    if S.get("heap_map") and lo < F["largest_free_block_bytes"]:
        import micropython
        print("HEAPMAP %d" % lo)
        micropython.mem_info(1)  # one character a block: what splits the free space
        print("HEAPMAP-END")
    return lo

def sample(block=False):
    _gnss_piece()
    gc.collect()
    used = gc.mem_alloc()
    if used > F["heap_peak_bytes"]:
        F["heap_peak_bytes"] = used
        if block:
            F["largest_free_block_bytes"] = min(F["largest_free_block_bytes"], largest_free())
    return used

async def until(pred, ms):
    t = 0
    while not pred() and t < ms:
        await asyncio.sleep_ms(20)
        t += 20
    return pred()

async def main():
    run = asyncio.create_task(w.run())
    F["link_up"] = 1 if await until(lambda: w.links[0].up, 5000) else 0
    if S.get("ble") == 1:  # a central on the radio connects it (2: advertising, no central)
        F["ble_up"] = 1 if await until(lambda: w.links[1].up, 8000) else 0
    await asyncio.sleep_ms(300)
    F["heap_after_boot_bytes"] = sample(True)
    F["heap_free_after_boot_bytes"] = gc.mem_free()
    if S["phase"] == "fill":
        for i in range(S["alarms"]):
            w.raise_alarm((1, 2, 4)[i % 3])
            await asyncio.sleep_ms(50)
            sample()
        await until(lambda: w.stats["sent"] >= len(w.outbox), 3000)
        sample(True)
        F["largest_free_block_bytes"] = min(F["largest_free_block_bytes"], largest_free())
    elif S["phase"] == "drain":
        print("READY")
        t = 0
        while len(w.outbox) and t < 20000:
            await asyncio.sleep_ms(100)
            t += 100
            sample()
        F["largest_free_block_bytes"] = min(F["largest_free_block_bytes"], largest_free())
    else:  # idle
        await asyncio.sleep_ms(1000)
        WAKES[0] = 0
        WAKES[1].clear()
        await asyncio.sleep_ms(S["idle_ms"])
        F["wakeups"] = WAKES[0] - 1  # this task's own sleep returning
        WAKES[1]["sleep_ms"] -= 1
        # [wake-ups by what returned, MQTT up at the end, BLE connections made (advertising
        # all along: 0) and BLE up at the end (-1, -1 without BLE)]
        ble = w.links[1] if S.get("ble") else None
        F["idle"] = [WAKES[1], 1 if w.links[0].up else 0, -1 if ble is None else ble.connects,
                     -1 if ble is None else 1 if ble.up else 0]
    F["heap_free_at_end_bytes"] = gc.mem_free()
    # whether this run's wearable had a BLE link among its links (aioble on `bluetooth`)
    F["ble_loaded"] = 1 if len(w.links) > 1 and w.links[1].name == "ble" else 0
    F["queued_at_end"] = len(w.outbox)
    F["alarms_sent"] = w.stats["sent"]
    F["task_restarts"] = w.stats["restarts"]
    F["memory_retries"] = w.stats["memory_retries"]
    F["run_died"] = 1 if run.done() else 0
    if w.gnss is not None:
        F["gnss_fix"] = 0 if w.gnss.fix(0) is None else 1  # the parser had a fix all along
    if w.wifi_scanner is not None:
        heard = w.wifi_scanner.entries(0)
        F["wifi_heard"] = 0 if heard is None else len(heard[1])  # the last scan's, kept
    run.cancel()
    print("FIGURES " + json.dumps(F))

asyncio.run(main())
