"""`vigil bench ingest`: the gateway's ingest rate, COMMIT and RECEIVED-ack latency through a
real broker.

Each configuration on a Mosquitto of its own on loopback, simulated devices publishing signed
alarms (QoS 1):
  1. baseline: a bare paho subscriber process (no verification, no disk) counts the alarms;
  2. the gateway verifies, persists and acknowledges them; the rate counts only alarms whose
     signed RECEIVED ack came back to the device; meanwhile the CPU of the gateway's processes,
     PostgreSQL's, the broker's, the devices' (this process) and the whole machine's, and each
     batch's COMMIT (vigil_gateway_commit_seconds, scraped from every process before and after:
     p50/p99 from the summed buckets, as Prometheus' histogram_quantile() computes them);
  3. latency: alarms offered at a fixed rate; each one's time from publish to its RECEIVED ack
     at the device (p50, p99), and the COMMITs meanwhile;
  4. duplicate deliveries (every alarm published twice, and again a moment later): alarms with
     more than one incident (duplicate_incidents, in the database) and downlink counters seen
     twice by one device (reused_downlink_counters, at the simulated wearables).
Configurations: --store sqlite (the default: `vigil gateway run`, one process, default settings,
fsync per commit), --store postgresql --workers N (N workers, `python -m
vigil_gateway.service_pg`, in one shared group on a PostgreSQL of the run's own, fsync on, as
SQLite's commits are), or --store all: SQLite, then PostgreSQL with 1, 2 and 4 workers
(--worker-counts), one after the other. What limits each one is printed from what was measured:
CPU-bound when the machine's cores were busy, or each gateway process's one core (CPU_BOUND),
else where the workers' time went.
Rates are the median of a few rounds each (a single round on a busy 2-core machine varies by
+-20 %).
The last line is key=value pairs for scripts: the last configuration's figures unprefixed
(store, workers, ingest_per_s, ingest_ratio, ack_p99_ms, duplicate_incidents,
reused_downlink_counters, ...), and with several configurations each one's under its prefix
(sqlite_, pg1_, pg2_, pg4_: sqlite_ingest_per_s, pg2_commit_p99_ms, ...).
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
    """The SQLite gateway (`vigil gateway run`, default settings) with the devices registered,
    healthy: ([(process, http port)], the incidents' (device, counter) pairs, a callable)."""
    from vigil_gateway import config as gateway_config
    from vigil_gateway.service import open_state
    from vigil_gateway.store import Store

    http_port = free_port()
    path = os.path.join(workdir, "gateway.toml")
    with open(path, "w") as f:
        f.write('[gateway]\ndata_dir = "data"\n[mqtt]\nport = %d\n[http]\nport = %d\n'
                % (broker.port, http_port))
    config = gateway_config.load(path)
    conn, registry, _ = open_state(config)
    for device in devices.ids:
        registry.add(device, _key(device))
    conn.close()
    log = open(os.path.join(workdir, "gateway.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "vigil_tools.cli", "gateway", "run",
                             "--config", path], stdout=log, stderr=log)
    _wait_healthy(proc, http_port, log.name)

    def alarm_incidents():
        conn = open_state(config)[0]
        try:
            return [(i.device_id, i.counter) for i in Store(conn).incidents()
                    if i.counter is not None]
        finally:
            conn.close()

    return [(proc, http_port)], alarm_incidents


def _start_pg_workers(workdir, broker, devices, count, server, database):
    """A database of its own on the run's PostgreSQL with the devices registered, and `count`
    workers in one shared group, each healthy: ([(process, http port)], the incidents'
    (device, counter) pairs, a callable)."""
    import psycopg

    from vigil_gateway import store_pg
    from vigil_gateway.incidents import STATES
    from vigil_gateway.registry_pg import PostgresRegistry
    from vigil_gateway.store_pg import PostgresStore

    url = server.create_database(database)
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
        raise

    def alarm_incidents():
        store = PostgresStore(url)
        try:
            return [(i.device_id, i.counter) for device in devices.ids
                    for i in store.incidents(device, STATES) if i.counter is not None]
        finally:
            store.close()

    return workers, alarm_incidents


def _wait_healthy(proc, http_port, log_name):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ToolError("a gateway process exited: see %s" % log_name)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % http_port,
                                        timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise ToolError("a gateway process did not become healthy: see %s" % log_name)


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


def _machine_busy_s():
    """CPU seconds every process on the machine has used so far (all cores; /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(parent pid, CPU seconds of its own, CPU seconds of its children it has waited for)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


def _postgres_cpu_s(server):
    """CPU seconds of the PostgreSQL server so far: the postmaster's, its children's now (a
    backend per connection, the background processes) and those that have exited (autovacuum
    workers come and go: the postmaster has waited for them)."""
    with open(server.data / "postmaster.pid") as f:
        master = int(f.readline())
    _, own, exited = _stat(master)
    total = own + exited
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != master:
            try:
                parent, cpu, _ = _stat(int(name))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile (then counted in the postmaster's exited children)
            if parent == master:
                total += cpu
    return total


class _Usage:
    """CPU seconds of groups of processes, and of the whole machine, over the measured rounds
    only (start() .. stop(), summed): not while the bench signs the next round's frames."""

    def __init__(self, groups):
        self.groups = groups  # name -> a callable: that group's CPU seconds so far
        self.cpu = {name: 0.0 for name in groups}
        self.machine = 0.0
        self.wall = 0.0

    def start(self):
        self._at = (time.monotonic(), _machine_busy_s(),
                    {name: cpu_s() for name, cpu_s in self.groups.items()})

    def stop(self):
        wall, machine, cpu = self._at
        self.wall += time.monotonic() - wall
        self.machine += _machine_busy_s() - machine
        for name, cpu_s in self.groups.items():
            self.cpu[name] += cpu_s() - cpu[name]


def _commit_histogram(ports):
    """vigil_gateway_commit_seconds from each process's /metrics, summed over them:
    ({upper bound: cumulative count}, sum of seconds)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets, seconds = {}, 0.0
    for port in ports:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            if family.name != "vigil_gateway_commit_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0) + sample.value
                elif sample.name.endswith("_sum"):
                    seconds += sample.value
    if not buckets:
        raise ToolError("a gateway process exports no vigil_gateway_commit_seconds")
    return buckets, seconds


def _since(after, before):
    return ({le: n - before[0].get(le, 0) for le, n in after[0].items()},
            after[1] - before[1])


def histogram_quantile(q, buckets):
    """The q-quantile of a histogram's cumulative buckets ({upper bound: count}, +Inf
    included), as Prometheus' histogram_quantile() computes it: linear within the bucket the
    rank falls in, from the bucket below's bound (0 for the first); the highest finite bound
    when it falls in +Inf. None for an empty histogram."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _duplicates(devices, n, alarm_incidents):
    """n alarms, each published twice at once and again 0.5 s later (every copy another chance
    for another worker): (alarms with more than one incident, in the database; downlink
    counters a device saw twice, at the simulated wearables)."""
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
    seen = {}
    for alarm in alarm_incidents():
        seen[alarm] = seen.get(alarm, 0) + 1
    with devices.lock:
        reused = sum(len(c) - len(set(c)) for c in devices.counters_seen.values())
    return sum(1 for k in seen.values() if k > 1), reused


def _gateway_rate(devices, frames):
    start = time.monotonic()
    devices.send_all(frames)
    end = devices.wait_acked([(d, c) for d, c, _ in frames], timeout=120)
    return len(frames) / (end - start)


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


def _ms(seconds):
    return None if seconds is None else seconds * 1000


# One configuration: (the prefix of its figures, "sqlite" or "postgresql", gateway processes).
def configurations(store, workers=1, worker_counts=(1, 2, 4)):
    if store == "sqlite":
        return [("sqlite", "sqlite", 1)]
    if store == "postgresql":
        return [("pg%d" % workers, "postgresql", workers)]
    return [("sqlite", "sqlite", 1)] + [("pg%d" % n, "postgresql", n) for n in worker_counts]


def _measure(workdir, kind, processes, server, alarms, device_count, rate, seconds, rounds):
    """One configuration, on a broker of its own (a stopped gateway's MQTT session would keep
    queueing the next configuration's messages): its figures."""
    os.makedirs(workdir)
    f = {"store": kind, "workers": processes}
    broker = _Broker(workdir)
    devices = None
    started = []
    try:
        devices = _Devices(broker.port, device_count)
        f["bare_subscriber_per_s"] = statistics.median(
            _baseline_rate(broker, devices, alarms) for _ in range(rounds))
        if kind == "postgresql":
            started, alarm_incidents = _start_pg_workers(
                workdir, broker, devices, processes, server, os.path.basename(workdir))
        else:
            started, alarm_incidents = _start_gateway(workdir, broker, devices)
        ports = [port for _, port in started]
        _gateway_rate(devices, devices.frames(min(2000, alarms)))  # warm up: windows, WAL
        pids = [proc.pid for proc, _ in started]
        usage = _Usage({"workers": lambda: _cpu_s(pids),
                        "postgresql": (lambda: _postgres_cpu_s(server)) if kind == "postgresql"
                        else (lambda: 0.0),
                        "broker": lambda: _cpu_s([broker.proc.pid]),
                        "devices": lambda: _cpu_s([os.getpid()])})
        before = _commit_histogram(ports)
        rates = []
        for _ in range(rounds):
            frames = devices.frames(alarms)
            usage.start()
            rates.append(_gateway_rate(devices, frames))
            usage.stop()
        buckets, commit_s = _since(_commit_histogram(ports), before)
        done, commits = alarms * rounds, buckets[float("inf")]
        f["ingest_per_s"] = statistics.median(rates)
        f["ingest_ratio"] = f["ingest_per_s"] / f["bare_subscriber_per_s"]
        f["commit_p50_ms"] = _ms(histogram_quantile(0.50, buckets))
        f["commit_p99_ms"] = _ms(histogram_quantile(0.99, buckets))
        f["commits_per_s"] = commits / usage.wall
        f["alarms_per_commit"] = done / commits if commits else None
        f["cpu_ms_per_alarm_workers"] = usage.cpu["workers"] * 1000 / done
        if kind == "postgresql":
            f["cpu_ms_per_alarm_postgresql"] = usage.cpu["postgresql"] * 1000 / done
        for name in ("workers", "postgresql", "broker", "devices"):
            if name != "postgresql" or kind == "postgresql":
                f["cores_%s" % name] = usage.cpu[name] / usage.wall
        f["cores_busy"] = sum(usage.cpu.values()) / usage.wall  # this run's processes
        f["machine_cores_busy"] = usage.machine / usage.wall  # everything, others' work too
        f["worker_cpu_share"] = usage.cpu["workers"] / (usage.wall * processes)
        f["commit_share"] = commit_s / (usage.wall * processes)
        f["limit"] = ("cpu" if f["machine_cores_busy"] >= CPU_BOUND * os.cpu_count() else
                      "process_cpu" if f["worker_cpu_share"] >= CPU_BOUND else "waits")
        time.sleep(0.5)
        before = _commit_histogram(ports)
        offered, latencies = _latency(devices, rate, seconds)
        buckets, _ = _since(_commit_histogram(ports), before)
        f["offered_per_s"] = offered
        f["ack_p50_ms"] = _percentile(latencies, 0.50) * 1000
        f["ack_p99_ms"] = _percentile(latencies, 0.99) * 1000
        f["ack_max_ms"] = latencies[-1] * 1000
        f["offered_commit_p50_ms"] = _ms(histogram_quantile(0.50, buckets))
        f["offered_commit_p99_ms"] = _ms(histogram_quantile(0.99, buckets))
        f["duplicate_incidents"], f["reused_downlink_counters"] = _duplicates(
            devices, min(2000, alarms), alarm_incidents)
    finally:
        if devices is not None:
            devices.close()
        for proc, _ in started:
            proc.terminate()
            proc.wait(10)
        broker.stop()
    return f


# CPU-bound: this share of the machine's cores busy over the rounds, or of one core in each
# gateway process.
CPU_BOUND = 0.85


def ingest(alarms=20000, device_count=20, rate=1000.0, seconds=5.0, rounds=5,
           store="sqlite", workers=1, worker_counts=(1, 2, 4)):
    """{prefix: figures} for each configuration, one after the other (configurations())."""
    from .postgres import PostgresServer

    configs = configurations(store, workers, worker_counts)
    results = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as workdir:
        server = None
        try:
            if any(kind == "postgresql" for _, kind, _ in configs):
                server = PostgresServer(fsync=True).start()
            for prefix, kind, processes in configs:
                results[prefix] = _measure(os.path.join(workdir, prefix), kind, processes,
                                           server, alarms, device_count, rate, seconds, rounds)
                if kind == "postgresql":  # its data no longer needed: the next one's disk
                    server.drop_database(prefix)
        finally:
            if server is not None:
                server.stop()
                server.remove()
    return results


def register_bench(bench_sub):
    cmd = bench_sub.add_parser("ingest", help="gateway ingest rate, COMMIT and RECEIVED-ack "
                                              "latency through a real Mosquitto")
    cmd.add_argument("--alarms", type=int, default=20000, help="alarms per rate measurement")
    cmd.add_argument("--devices", type=int, default=20, help="simulated devices")
    cmd.add_argument("--rate", type=float, default=1000.0,
                     help="offered load for the latency measurement, alarms/s")
    cmd.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    cmd.add_argument("--rounds", type=int, default=5,
                     help="rate measurements of each kind; the median is reported")
    cmd.add_argument("--store", choices=("sqlite", "postgresql", "all"), default="sqlite",
                     help="the gateway's store: one process on SQLite, workers sharing a "
                          "PostgreSQL of the run's own, or all: SQLite, then PostgreSQL with "
                          "each of --worker-counts, one after the other")
    cmd.add_argument("--workers", type=int, default=1,
                     help="with --store postgresql: gateway workers in one shared group")
    cmd.add_argument("--worker-counts", default="1,2,4",
                     help="with --store all: the PostgreSQL worker counts, comma-separated")
    cmd.set_defaults(func=ingest_command)


def _worker_counts(text):
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ToolError("--worker-counts is worker counts of at least 1, comma-separated: "
                        "1,2,4")
    return counts


def _label(prefix, f):
    if f["store"] == "sqlite":
        return "SQLite, 1 process"
    return "PostgreSQL, %d worker%s" % (f["workers"], "s" if f["workers"] > 1 else "")


def _num(value, fmt="%.2f"):
    return "-" if value is None else fmt % value


def limit_text(f):
    """What limits a configuration, from what was measured over its rate rounds."""
    cores = os.cpu_count()
    ours = "%s %.2f%s, broker %.2f, simulated devices %.2f" % (
        "gateway" if f["store"] == "sqlite" else "workers", f["cores_workers"],
        ", PostgreSQL %.2f" % f["cores_postgresql"] if f["store"] == "postgresql" else "",
        f["cores_broker"], f["cores_devices"])
    other = max(0.0, f["machine_cores_busy"] - f["cores_busy"])
    if f["limit"] == "cpu" and other > f["cores_busy"]:
        head = ("CPU-bound, the machine shared: %.1f of %d cores busy, %.2f of them other work "
                "(this run's: %s)" % (f["machine_cores_busy"], cores, other, ours))
    elif f["limit"] == "cpu":
        head = "CPU-bound: %.1f of %d cores busy (%s; other work on the machine %.2f)" % (
            f["machine_cores_busy"], cores, ours, other)
    elif f["limit"] == "process_cpu":  # a Python process runs on one core at a time
        head = ("CPU-bound in its process%s: %.0f %% of a core%s, %.1f of %d cores busy "
                "(%s; other work %.2f)" % ("" if f["workers"] == 1 else "es",
                                           f["worker_cpu_share"] * 100,
                                           "" if f["workers"] == 1 else " each",
                                           f["machine_cores_busy"], cores, ours, other))
    else:
        head = "not the CPU: %.1f of %d cores busy (%s; other work %.2f)" % (
            f["machine_cores_busy"], cores, ours, other)
    own, commit = f["worker_cpu_share"], f["commit_share"]
    batches = "%.0f commits/s of %s alarms" % (f["commits_per_s"],
                                               _num(f["alarms_per_commit"], "%.0f"))
    if f["store"] == "sqlite":  # a large batch's COMMIT runs in the writer thread, overlapping
        return "%s; the gateway: its own CPU %.0f %% of the time, a COMMIT under way %.0f %% " \
               "(%s)" % (head, own * 100, commit * 100, batches)
    rest = max(0.0, 1 - own - commit)
    waits = {"its own CPU": own, "waiting for COMMITs": commit,
             "waiting for its statements' answers and the broker": rest}
    turns = ""
    if f["workers"] == 1:  # its batches are serial: while PostgreSQL works, the worker waits
        turns = " (one batch at a time: the worker and PostgreSQL take turns, %.2f of a core " \
                "together)" % (f["cores_workers"] + f["cores_postgresql"])
    return ("%s; each worker: its own CPU %.0f %% of the time, waiting for COMMITs %.0f %% "
            "(%s), for its statements' answers and the broker %.0f %%: mostly %s%s"
            % (head, own * 100, commit * 100, batches, rest * 100, max(waits, key=waits.get),
               turns))


def _key_values(results, alarms, device_count, rounds):
    """The last line's pairs: the largest configuration's figures unprefixed (with the issue's
    names), then every configuration's under its prefix."""
    prefixes = list(results)
    last = results[prefixes[-1]]
    pairs = [("store", "all" if len(prefixes) > 1 else last["store"]),
             ("workers", last["workers"])]
    for key in ("ingest_per_s", "ingest_ratio", "bare_subscriber_per_s", "commit_p50_ms",
                "commit_p99_ms", "ack_p50_ms", "ack_p99_ms", "cpu_ms_per_alarm_workers",
                "cpu_ms_per_alarm_postgresql", "duplicate_incidents",
                "reused_downlink_counters"):
        if key in last:
            pairs.append((key, last[key]))
    if len(prefixes) == 1:  # a single configuration: every figure, unprefixed, as before
        pairs.append(("gateway_ingest_per_s", last["ingest_per_s"]))
        pairs += [(k, v) for k, v in last.items() if k not in dict(pairs)]
    else:
        for prefix in prefixes:
            pairs += [("%s_%s" % (prefix, k), v) for k, v in results[prefix].items()
                      if k not in ("store", "workers")]
        pg = [p for p in prefixes if p.startswith("pg")]
        for prefix in pg[1:]:  # scaling: against one worker (or the fewest)
            pairs.append(("%s_vs_%s" % (prefix, pg[0]),
                          results[prefix]["ingest_per_s"] / results[pg[0]]["ingest_per_s"]))
        if "sqlite" in results:
            for prefix in pg:
                pairs.append(("%s_vs_sqlite" % prefix, results[prefix]["ingest_per_s"]
                              / results["sqlite"]["ingest_per_s"]))
    pairs += [("alarms", alarms), ("devices", device_count), ("rounds", rounds)]
    return " ".join("%s=%s" % (k, "none" if v is None else ("%.3f" % v) if isinstance(v, float)
                               else v) for k, v in pairs)


def ingest_command(args):
    if shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"):
        raise ToolError("mosquitto is not installed (make setup installs it)")
    if args.store == "postgresql" and args.workers < 1:
        raise ToolError("--workers is at least 1")
    counts = _worker_counts(args.worker_counts)
    load = os.getloadavg()[0]
    results = ingest(args.alarms, args.devices, args.rate, args.seconds, args.rounds,
                     args.store, args.workers, counts)
    duplicates = min(2000, args.alarms)
    print("Vigil gateway ingest benchmark: %d signed alarms a round from %d devices (QoS 1, "
          "a loopback Mosquitto for each configuration), median of %d rounds%s; this machine: "
          "%d cores, load average %.2f before, %.2f after"
          % (args.alarms, args.devices, args.rounds,
             "" if args.store == "sqlite" else "; PostgreSQL of the run's own, fsync on (as "
             "SQLite's commits), one configuration after the other", os.cpu_count(), load,
             os.getloadavg()[0]))
    print()
    row = "%-22s %9s %7s %15s %17s %17s %13s"
    print(row % ("", "alarms/s", "x paho", "COMMIT ms", "RECEIVED ack ms", "CPU ms an alarm",
                 "duplicates"))
    print(row % ("", "", "", "p50 / p99", "p50 / p99 at", "gateway +", "incidents /"))
    print(row % ("", "", "", "", "%.0f/s offered" % args.rate, "PostgreSQL", "counters"))
    for prefix, f in results.items():
        print(row % (
            _label(prefix, f), "{:,.0f}".format(f["ingest_per_s"]), "%.2f" % f["ingest_ratio"],
            "%s / %s" % (_num(f["commit_p50_ms"]), _num(f["commit_p99_ms"])),
            "%.2f / %.2f" % (f["ack_p50_ms"], f["ack_p99_ms"]),
            "%.3f + %s" % (f["cpu_ms_per_alarm_workers"],
                           _num(f.get("cpu_ms_per_alarm_postgresql"), "%.3f")),
            "%d / %d" % (f["duplicate_incidents"], f["reused_downlink_counters"])))
    print()
    print("x paho: against a bare paho subscriber (no verification, no disk, no acks) measured "
          "on the same broker just before: %s alarms/s"
          % ", ".join("{:,.0f}".format(f["bare_subscriber_per_s"]) for f in results.values()))
    print("commit: each batch's COMMIT (vigil_gateway_commit_seconds), every process's /metrics "
          "scraped before and after the rate rounds, the buckets summed over the processes and "
          "the quantiles interpolated within a bucket as Prometheus' histogram_quantile() "
          "does; at %.0f alarms/s offered: %s"
          % (args.rate, "; ".join("%s p50 %s ms, p99 %s ms" % (
              _label(p, f), _num(f["offered_commit_p50_ms"]), _num(f["offered_commit_p99_ms"]))
              for p, f in results.items())))
    print("RECEIVED ack: publish -> broker -> gateway -> disk -> broker -> device, offered at "
          "%s alarms/s (max %s ms)" % (
              ", ".join("%.0f" % f["offered_per_s"] for f in results.values()),
              ", ".join("%.1f" % f["ack_max_ms"] for f in results.values())))
    print("duplicates: %d alarms, each published 3 times (twice at once, again 0.5 s later): "
          "alarms with a second incident (in the database) / downlink counters a wearable saw "
          "twice (at the simulated wearables)" % duplicates)
    print("what limits it (CPU over the rate rounds, cores in use of %d):" % os.cpu_count())
    for prefix, f in results.items():
        print("  %s: %s" % (_label(prefix, f), limit_text(f)))
    print(_key_values(results, args.alarms, args.devices, args.rounds))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-subscriber":
        sys.exit(bare_subscriber(int(sys.argv[2]), int(sys.argv[3])))
    print(json.dumps({"usage": "vigil bench ingest"}))
    sys.exit(2)
