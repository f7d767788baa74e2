"""`vigil bench ingest`: the gateway's ingest rate and RECEIVED-ack latency through a real broker.

One run, one Mosquitto on loopback, simulated devices publishing signed alarms (QoS 1):
  1. baseline: a bare paho subscriber process (no verification, no disk) counts the alarms;
  2. the gateway (`vigil gateway run`, its own process, default settings: fsync per commit)
     verifies, persists and acknowledges them; the rate counts only alarms whose signed
     RECEIVED ack came back to the device;
  3. latency: alarms offered at a fixed rate; each one's time from publish to its RECEIVED ack
     at the device (p50, p99).
Rates are the median of a few rounds each (a single round on a busy 2-core machine varies by
+-20 %).
With --store postgresql --workers N the gateway is N workers (`python -m
vigil_gateway.service_pg`) in one shared group on a PostgreSQL of the run's own (fsync on, as
SQLite's commits are); the run also measures the CPU each alarm costs in the workers and in
PostgreSQL, and ends with duplicate deliveries (every alarm published twice, and again a
moment later) counted at the simulated wearables: downlink counters seen twice by one device
(reused_downlink_counters) and alarms with more than one incident (duplicate_incidents).
The last line is key=value pairs (ingest_ratio, ack_p99_ms, ...) for scripts.
"""
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from . import ToolError
from .broker import free_port

_PREFIX = "vigil"
_FIRST_DEVICE = 0x00B00000


def _no_delay(client, userdata, sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _key(device_id):
    return bytes((device_id * 31 + i) & 0xFF for i in range(32))


class _Broker:
    def __init__(self, workdir):
        self.port = free_port()
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("%slistener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest none\n"
                    "set_tcp_nodelay true\n"
                    % ("user root\n" if os.geteuid() == 0 else "", self.port))
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, "mosquitto")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def _wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError("%s exited early" % what)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise ToolError("%s did not start" % what)


class _Link:
    """A lean MQTT 3.1.1 client for the simulated devices (QoS 1 publish, one subscription):
    the devices must not be what limits the measurement, and paho in the same process as
    twenty devices would be."""

    def __init__(self, port, client_id, on_publish):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.on_publish = on_publish
        self.send_lock = threading.Lock()
        self.next_id = 0
        cid = client_id.encode()
        self._send(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid)
        self.buffer = b""
        if self._read_packet()[0] != 0x20:
            raise ToolError("the broker refused the simulated devices")
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    @staticmethod
    def _packet(first, body):
        n, length = len(body), b""
        while True:
            n, digit = n >> 7, n & 0x7F
            length += bytes([digit | (0x80 if n else 0)])
            if not n:
                return bytes([first]) + length + body

    def _send(self, first, body):
        with self.send_lock:
            self.sock.sendall(self._packet(first, body))

    def _id(self):
        self.next_id = self.next_id % 0xFFFF + 1
        return self.next_id

    def subscribe(self, topic):
        t = topic.encode()
        self._send(0x82, struct.pack(">HH", self._id(), len(t)) + t + b"\x01")

    def publish_packet(self, topic, payload):
        t = topic.encode()
        return self._packet(0x32, struct.pack(">H", len(t)) + t + struct.pack(">H", self._id())
                            + payload)

    def send_raw(self, data):
        with self.send_lock:
            self.sock.sendall(data)

    def _read_packet(self):
        while True:
            if len(self.buffer) >= 2:
                n, shift, i = 0, 0, 1
                while i < len(self.buffer) and i < 5:
                    n |= (self.buffer[i] & 0x7F) << shift
                    shift += 7
                    if not self.buffer[i] & 0x80:
                        break
                    i += 1
                if i < len(self.buffer) and len(self.buffer) >= i + 1 + n:
                    first, body = self.buffer[0], self.buffer[i + 1:i + 1 + n]
                    self.buffer = self.buffer[i + 1 + n:]
                    return first, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buffer += chunk

    def _read_loop(self):
        try:
            while True:
                first, body = self._read_packet()
                if first & 0xF0 == 0x30:  # PUBLISH from the broker: an ack for a device
                    tlen = struct.unpack_from(">H", body)[0]
                    topic = body[2:2 + tlen].decode()
                    start = 2 + tlen
                    if first & 0x06:
                        self._send(0x40, body[start:start + 2])  # PUBACK
                        start += 2
                    self.on_publish(topic, body[start:])
        except (OSError, ConnectionError):
            return

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


class _Devices:
    """Simulated devices on a lean MQTT connection; they record when each RECEIVED ack
    (verified with the device's key) comes back."""

    def __init__(self, port, count):
        import vigil_protocol as p

        self.p = p
        self.ids = [_FIRST_DEVICE + i for i in range(count)]
        self.keys = {d: p.DeviceKey(_key(d)) for d in self.ids}
        self.counters = {d: 0 for d in self.ids}
        self.acked = {}       # (device, counter) -> monotonic time of its first RECEIVED ack
        self.counters_seen = {d: [] for d in self.ids}  # every downlink counter, per device
        self.lock = threading.Lock()
        self.link = _Link(port, "bench-devices", self._on_ack)
        self.link.subscribe("%s/down/+" % _PREFIX)
        time.sleep(0.3)

    def _on_ack(self, topic, payload):
        now = time.monotonic()
        device = int(topic.rsplit("/", 1)[1], 16)
        try:
            ack = self.p.decode(payload, self.keys[device], self.p.DOWN)
        except (self.p.RemoteProtocolError, KeyError):
            return
        with self.lock:
            self.counters_seen[device].append(ack.counter)
            if ack.stage == self.p.RECEIVED:
                self.acked.setdefault((device, ack.ref), now)

    def frames(self, n):
        """n signed alarms, round robin over the devices, ready to send:
        [(device, counter, MQTT PUBLISH packet)]."""
        out = []
        for i in range(n):
            device = self.ids[i % len(self.ids)]
            self.counters[device] += 1
            data = self.p.encode(self.p.Alarm(device, self.counters[device], self.p.SOS),
                                 self.keys[device])
            packet = self.link.publish_packet("%s/up/%08x" % (_PREFIX, device), data)
            out.append((device, self.counters[device], packet))
        return out

    def send(self, packets):
        self.link.send_raw(b"".join(packets))

    def send_all(self, frames, chunk=50):
        for i in range(0, len(frames), chunk):
            self.send([packet for _, _, packet in frames[i:i + chunk]])

    def wait_acked(self, keys, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(k in self.acked for k in keys):
                    return max(self.acked[k] for k in keys)
            time.sleep(0.002)
        with self.lock:
            missing = sum(1 for k in keys if k not in self.acked)
        raise ToolError("%d alarms were never acknowledged" % missing)

    def close(self):
        self.link.close()


def bare_subscriber(port, count):
    """Run in its own process: count `count` QoS 1 messages, print the last one's time."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    seen = [0]
    done = threading.Event()
    last = [0.0]

    def on_message(client, userdata, message):
        seen[0] += 1
        if seen[0] == count:
            last[0] = time.monotonic()
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare",
                         protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 1000
    client.on_message = on_message
    client.on_socket_open = _no_delay
    client.connect("127.0.0.1", port, properties=props)
    client.subscribe("%s/up/+" % _PREFIX, qos=1)
    client.loop_start()
    time.sleep(0.3)
    print("ready", flush=True)
    if not done.wait(120):
        print("timeout %d" % seen[0], flush=True)
        return 1
    print("last %.6f" % last[0], flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


def _baseline_rate(broker, devices, n):
    proc = subprocess.Popen([sys.executable, "-m", "vigil_tools.bench_ingest",
                             "--bare-subscriber", str(broker.port), str(n)],
                            stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise ToolError("the bare subscriber did not start")
    frames = devices.frames(n)
    start = time.monotonic()
    devices.send_all(frames)
    line = proc.stdout.readline().split()
    proc.wait(30)
    if not line or line[0] != "last":
        raise ToolError("the bare subscriber missed messages: %s" % " ".join(line))
    return n / (float(line[1]) - start)


def _start_gateway(workdir, broker, devices):
    from vigil_gateway import config as gateway_config
    from vigil_gateway.service import open_state

    http_port = free_port()
    path = os.path.join(workdir, "gateway.toml")
    with open(path, "w") as f:
        f.write('[gateway]\ndata_dir = "data"\n[mqtt]\nport = %d\n[http]\nport = %d\n'
                % (broker.port, http_port))
    conn, registry, _ = open_state(gateway_config.load(path))
    for device in devices.ids:
        registry.add(device, _key(device))
    conn.close()
    log = open(os.path.join(workdir, "gateway.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "vigil_tools.cli", "gateway", "run",
                             "--config", path], stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError("the gateway exited: see %s" % log.name)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                        timeout=1) as r:
                if r.status == 200:
                    return proc, http_port
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise ToolError("the gateway did not become healthy")


def _start_pg_workers(workdir, broker, devices, count):
    """A PostgreSQL of the run's own (fsync on) with the devices registered, and `count`
    workers in one shared group, each healthy: (server, url, [(process, http port)])."""
    import psycopg

    from vigil_gateway import store_pg
    from vigil_gateway.registry_pg import PostgresRegistry
    from vigil_gateway.store_pg import PostgresStore

    from .postgres import PostgresServer

    server = PostgresServer(fsync=True).start()
    url = server.create_database("vigil_bench")
    with psycopg.connect(url) as conn:
        store_pg.create_schema(conn)
    store = PostgresStore(url)
    registry = PostgresRegistry(store, os.path.join(workdir, "data", "keys"))
    for device in devices.ids:
        registry.add(device, _key(device), counter_floor=1)
    store.close()
    workers = []
    try:
        for index in range(count):
            http_port = free_port()
            path = os.path.join(workdir, "worker%d.toml" % index)
            with open(path, "w") as f:
                f.write('[gateway]\ndata_dir = "data"\n[store]\nurl = "%s"\n[mqtt]\nport = %d\n'
                        'client_id = "bench-worker-%d"\nshared_group = "bench"\n[http]\n'
                        'port = %d\n' % (url, broker.port, index, http_port))
            log = open(os.path.join(workdir, "worker%d.log" % index), "w")
            proc = subprocess.Popen([sys.executable, "-m", "vigil_gateway.service_pg",
                                     "--config", path], stdout=log, stderr=log, cwd=workdir)
            workers.append((proc, http_port))
            _wait_healthy(proc, http_port, log.name)
    except BaseException:
        for proc, _ in workers:
            proc.kill()
        server.stop()
        raise
    return server, url, workers


def _wait_healthy(proc, http_port, log_name):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError("a worker exited: see %s" % log_name)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                        timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise ToolError("a worker did not become healthy")


def _cpu_s(pids):
    """User + system CPU seconds the processes have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total / tick


def _postgres_pids(server):
    """The server's processes: the postmaster and its children (one backend per connection)."""
    with open(server.data / "postmaster.pid") as f:
        master = int(f.readline())
    pids = [master]
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _duplicates(devices, url, n):
    """n alarms, each published twice at once and again 0.5 s later (every copy another chance
    for another worker): (alarms with more than one incident, downlink counters a device saw
    twice)."""
    import psycopg

    frames = devices.frames(n)

    def copy(device, packet):  # the same alarm again: its payload in a PUBLISH of its own
        i = 1
        while packet[i] & 0x80:  # the remaining length's bytes
            i += 1
        start = i + 1 + 2 + struct.unpack_from(">H", packet, i + 1)[0] + 2  # topic, packet id
        return devices.link.publish_packet("%s/up/%08x" % (_PREFIX, device), packet[start:])

    packets = []
    for device, _, packet in frames:
        packets += [packet, copy(device, packet)]
    devices.send(packets)
    time.sleep(0.5)
    devices.send([copy(device, packet) for device, _, packet in frames])
    devices.wait_acked([(d, c) for d, c, _ in frames], timeout=120)
    time.sleep(1.0)  # the last copies' acks
    with psycopg.connect(url) as conn:
        duplicate = conn.execute("SELECT count(*) FROM (SELECT 1 FROM incidents WHERE counter "
                                 "IS NOT NULL GROUP BY device_id, counter HAVING count(*) > 1) "
                                 "d").fetchone()[0]
    with devices.lock:
        reused = sum(len(c) - len(set(c)) for c in devices.counters_seen.values())
    return duplicate, reused


def _gateway_rate(devices, n):
    frames = devices.frames(n)
    start = time.monotonic()
    devices.send_all(frames)
    end = devices.wait_acked([(d, c) for d, c, _ in frames], timeout=120)
    return n / (end - start)


def _latency(devices, rate, seconds):
    n = int(rate * seconds)
    frames = devices.frames(n)
    sent = {}
    start = time.monotonic()
    for i, (device, counter, packet) in enumerate(frames):
        due = start + i / rate
        while True:
            now = time.monotonic()
            if now >= due:
                break
            time.sleep(min(due - now, 0.0005))
        sent[(device, counter)] = time.monotonic()
        devices.send([packet])
    offered = n / (time.monotonic() - start)
    devices.wait_acked(list(sent), timeout=60)
    with devices.lock:
        latencies = sorted(devices.acked[k] - t for k, t in sent.items())
    return offered, latencies


def _percentile(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def ingest(alarms=20000, device_count=20, rate=1000.0, seconds=5.0, rounds=5,
           store="sqlite", workers=1):
    figures = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as workdir:
        broker = _Broker(workdir)
        devices = gateway = server = None
        procs = []
        try:
            devices = _Devices(broker.port, device_count)
            figures["bare_subscriber_per_s"] = statistics.median(
                _baseline_rate(broker, devices, alarms) for _ in range(rounds))
            if store == "postgresql":
                server, url, started = _start_pg_workers(workdir, broker, devices, workers)
                procs = [proc for proc, _ in started]
            else:
                gateway, http_port = _start_gateway(workdir, broker, devices)
                procs = [gateway]
            _gateway_rate(devices, min(2000, alarms))  # warm up: windows, caches, WAL
            if server is not None:
                pg_pids = _postgres_pids(server)
                cpu = (_cpu_s([p.pid for p in procs]), _cpu_s(pg_pids))
            measured = [_gateway_rate(devices, alarms) for _ in range(rounds)]
            figures["gateway_ingest_per_s"] = statistics.median(measured)
            if server is not None:
                done = alarms * rounds
                figures["cpu_ms_per_alarm_workers"] = (
                    _cpu_s([p.pid for p in procs]) - cpu[0]) * 1000 / done
                figures["cpu_ms_per_alarm_postgresql"] = (
                    _cpu_s(_postgres_pids(server)) - cpu[1]) * 1000 / done
            time.sleep(0.5)
            offered, latencies = _latency(devices, rate, seconds)
            figures["offered_per_s"] = offered
            figures["ack_p50_ms"] = _percentile(latencies, 0.50) * 1000
            figures["ack_p99_ms"] = _percentile(latencies, 0.99) * 1000
            figures["ack_max_ms"] = latencies[-1] * 1000
            if server is not None:
                figures["duplicate_incidents"], figures["reused_downlink_counters"] = (
                    _duplicates(devices, url, min(2000, alarms)))
        finally:
            if devices is not None:
                devices.close()
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            if server is not None:
                server.stop()
                server.remove()
            broker.stop()
    figures["ingest_ratio"] = figures["gateway_ingest_per_s"] / figures["bare_subscriber_per_s"]
    figures["alarms"] = alarms
    figures["devices"] = device_count
    figures["rounds"] = rounds
    if store == "postgresql":
        figures["store"] = "postgresql"
        figures["workers"] = workers
        figures["ingest_per_s"] = figures["gateway_ingest_per_s"]
    return figures


def register_bench(bench_sub):
    cmd = bench_sub.add_parser("ingest", help="gateway ingest rate and RECEIVED-ack latency "
                                              "through a real Mosquitto")
    cmd.add_argument("--alarms", type=int, default=20000, help="alarms per rate measurement")
    cmd.add_argument("--devices", type=int, default=20, help="simulated devices")
    cmd.add_argument("--rate", type=float, default=1000.0,
                     help="offered load for the latency measurement, alarms/s")
    cmd.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    cmd.add_argument("--rounds", type=int, default=5,
                     help="rate measurements of each kind; the median is reported")
    cmd.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                     help="the gateway's store: one process on SQLite, or workers sharing a "
                          "PostgreSQL of the run's own")
    cmd.add_argument("--workers", type=int, default=1,
                     help="with --store postgresql: gateway workers in one shared group")
    cmd.set_defaults(func=ingest_command)


def ingest_command(args):
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        raise ToolError("mosquitto is not installed (make setup installs it)")
    if args.store == "postgresql" and args.workers < 1:
        raise ToolError("--workers is at least 1")
    f = ingest(args.alarms, args.devices, args.rate, args.seconds, args.rounds, args.store,
               args.workers)
    print("Vigil gateway ingest benchmark (%d signed alarms from %d devices, QoS 1, loopback "
          "Mosquitto; median of %d rounds)" % (f["alarms"], f["devices"], f["rounds"]))
    print("bare paho subscriber (baseline)          %8.0f alarms/s" % f["bare_subscriber_per_s"])
    what = ("gateway: verified, persisted, acked     " if args.store == "sqlite" else
            "%d worker%s on PostgreSQL (fsync on)     " % (args.workers,
                                                          "s" if args.workers > 1 else " "))
    print("%s %8.0f alarms/s  (%.2f x baseline)"
          % (what, f["gateway_ingest_per_s"], f["ingest_ratio"]))
    if args.store == "postgresql":
        print("CPU per alarm: workers %.3f ms, PostgreSQL %.3f ms (this machine: %d cores)"
              % (f["cpu_ms_per_alarm_workers"], f["cpu_ms_per_alarm_postgresql"],
                 os.cpu_count()))
    print("RECEIVED ack at the device, at %.0f alarms/s offered: p50 %.2f ms, p99 %.2f ms, "
          "max %.2f ms" % (f["offered_per_s"], f["ack_p50_ms"], f["ack_p99_ms"],
                           f["ack_max_ms"]))
    if args.store == "postgresql":
        print("duplicate deliveries (%d alarms, each 3 times): %d alarms with a second "
              "incident, %d downlink counters a wearable saw twice"
              % (min(2000, args.alarms), f["duplicate_incidents"],
                 f["reused_downlink_counters"]))
    print(" ".join("%s=%s" % (k, ("%.3f" % v) if isinstance(v, float) else v)
                   for k, v in f.items()))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-subscriber":
        sys.exit(bare_subscriber(int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps({"usage": "vigil bench ingest"}))
    sys.exit(2)
