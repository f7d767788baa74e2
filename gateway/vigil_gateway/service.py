# The gateway service: wires the link, the pipeline, supervision and the HTTP endpoints
# together on one asyncio loop.
#
#   link --Message--> inbound queue --batch--> pipeline (write) --> commit (writer thread)
#                                                         --> acks published --> broker PUBACKs
# Rules:
#   the ingest loop takes whatever is queued (up to store.batch_max) as one batch: one commit,
#   then the RECEIVED acks, then the broker acknowledgements, in that order;
#   a large batch's commit runs in one writer thread (its fsync releases the GIL) while the
#   loop goes on with the link; meanwhile every other statement on the database waits for it
#   (db.py);
#   a batch the store cannot commit is retried until it can; /healthz says unhealthy meanwhile,
#   and the broker keeps redelivering nothing new because nothing was acknowledged;
#   the inbound queue is bounded by the broker: it sends at most mqtt.receive_maximum
#   unacknowledged messages, so nothing is ever dropped here;
#   incident changes queue their forwarding in the outbox inside the batch's commit; the
#   forwarding loops (forwarding.py) deliver them and store DELIVERED downlinks; responder
#   actions (actions.py, under /v1/ on the HTTP port) store action downlinks; the downlink pump
#   sends stored downlinks on MQTT once connected and over BLE while the wearable is connected;
#   a stored downlink is *sent* on MQTT only when the broker's PUBACK for it says it took it
#   (reason 0), over BLE only when the wearable answered the write: until then it is published
#   again - the stored bytes, so the same counter - after a reconnect (paho's session) and
#   after a restart (the store); the pump publishes each one once at a time;
#   a PUBACK saying the broker took it but no session is subscribed (16: the wearable has
#   never connected, or its session is gone) or refused it leaves it unsent: it is offered
#   again after a backoff (DOWNLINK_RETRY_S), and at once when the wearable is next heard from.
import asyncio
import gc
import json
import logging
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import vigil_protocol as p

from . import backup, config_files, instance_lock, logs
from .config import read_secret
from .actions import ActionsApi, read_tokens
from .ble_central import BleCentral
from .db import open_database
from .dc09 import Account, Dc09Error, parse_key
from .downlinks import Downlinks
from .retention import Retention
from .running import api_response, close_transports, run_until_stopped
from .forward_dc09 import Dc09State, Dc09Transport
from .forward_webhook import WebhookTransport
from .forwarding import Forwarding
from .outbox import Outbox
from .errors import ConfigError, GatewayError, RegistryError, StoreError
from .http_server import serve_all
from .incidents import STATES
from .metrics import Metrics
from .mqtt_link import NO_SUBSCRIBERS, NOT_QUEUED, MqttLink
from .pipeline import REASONS, WINDOW_SIZE, Pipeline
from .registry import ACTIVE, REVOKED, Registry
from .store import Store
from .supervision import Supervisor
from .topics import Topics

log = logging.getLogger("vigil_gateway.service")
_STORE_RETRY_S = (0.1, 5.0)
# A batch this large means uplinks arrive faster than single commits go: its COMMIT (and fsync)
# runs in the writer thread while the loop goes on reading uplinks and sending acks. A smaller
# one is committed at once: the hand-off's two thread switches would only add to its acks'
# latency (at 1,000 alarms/s: p50 0.75 -> 0.95 ms, p99 up to 2x).
_WRITER_MIN_BATCH = 32
# A stored downlink the broker did not take waits this long (doubling) before it is offered again.
DOWNLINK_RETRY_S = (5.0, 300.0)
_DOWNLINK_PAGE = 200
_DOWNLINKS_PER_ROUND = 1000


def open_state(config):
    """The gateway's database, registry and store (for the service and the CLI)."""
    conn = open_database(config.gateway.data_dir, config.store.synchronous)
    registry = Registry(conn, os.path.join(config.gateway.data_dir, "keys"))
    return conn, registry, Store(conn)


def bleak_factories(config):
    """The BLE central's scanner and client factories on this machine's Bluetooth (bleak's
    platform backend: BlueZ on Linux)."""
    from bleak import BleakClient, BleakScanner

    from .ble_central import SERVICE

    return (lambda callback: BleakScanner(callback, [SERVICE]),
            lambda device, gone: BleakClient(device, gone))


async def emulated_factories(transport):
    """The same factories on an emulated controller (ble.hci): bleak with the bumble backend."""
    from .bleak_bumble import factories
    from .ble_central import SERVICE
    from .bumble_air import open_device

    device = await open_device(transport, "F0:00:00:00:00:01")
    return factories(device, [SERVICE])


class Gateway:
    def __init__(self, config, link_factory=MqttLink, clock=time.time, ble_factories=None,
                 transports=None):
        self.config = config
        self.clock = clock
        self.metrics = Metrics(REASONS)
        folder = backup.rotation_dir(config)
        self.metrics.watch_backups(lambda: backup.newest(folder))
        config_files.check(config)  # every file the config names: one line each, no traceback
        self.conn, self.registry, self.store = open_state(config)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="vigil-store")
        self.topics = Topics(config.mqtt.prefix)
        if transports is None:
            transports = make_transports(config, self.conn, clock)
        self.metrics.declare_destinations([t.name for t in transports])
        self.outbox = Outbox(self.conn, [t.name for t in transports],
                             (config.forward.backoff_min_s, config.forward.backoff_max_s),
                             config.forward.max_event_age_s)
        self.pipeline = Pipeline(self.registry, self.store, self.topics, self.metrics, clock,
                                 self.outbox, accept_v1=config.protocol.accept_v1,
                                 late_after_s=config.incidents.late_after_s,
                                 reack_interval_s=config.protocol.reack_interval_s)
        self.downlinks = Downlinks(self.conn, self.registry, self.pipeline)
        self.retention = Retention(self.store, self.outbox, self.downlinks,
                                   config.store.retain_days, WINDOW_SIZE)
        self._downlink_wake = asyncio.Event()
        self.forwarding = Forwarding(self.store, self.outbox, self.downlinks, transports,
                                     self.metrics, clock, self.pipeline, self._downlink_wake.set)
        self.api = None
        if config.actions.tokens_file:
            self.api = ActionsApi(self.store, self.pipeline.incidents, self.downlinks,
                                  read_tokens(config.actions.tokens_file), clock,
                                  config.actions.tolerance_s, self._actions_done, self.pipeline)
        self.supervisor = Supervisor(self.store, self.registry,
                                     config.supervision.default_interval_s,
                                     config.supervision.grace_s, self.pipeline)
        password = (read_secret(config.mqtt.password_file, "mqtt.password_file")
                    if config.mqtt.password_file else None)
        self.inbound = asyncio.Queue()
        self.link = link_factory(config.mqtt, self.topics, self.inbound.put_nowait, password,
                                 self.metrics)
        self.ble = None
        if config.ble.enabled:
            if ble_factories is not None:
                scanner_factory, client_factory = ble_factories
            elif config.ble.hci:  # opened in run(): it needs the event loop
                scanner_factory, client_factory = None, None
            else:
                scanner_factory, client_factory = bleak_factories(config)
            self.ble = BleCentral(self.topics, self.inbound.put_nowait, self._ble_allowed,
                                  scanner_factory, client_factory,
                                  max_connections=config.ble.max_connections,
                                  scan_stall_s=config.ble.scan_stall_s,
                                  key_of=self._ble_key)
        self._ble_writes = set()
        # Stored downlinks handed over and not yet confirmed: id -> (Downlink, future or task).
        self._mqtt_waiting = {}
        self._ble_waiting = {}
        # Stored downlinks the broker did not take: id -> (retry at, delay), by device too.
        self._mqtt_retry = {}
        self._mqtt_retry_devices = {}
        self.store_ok = True
        self.http = None
        self.api_http = None
        self._stop = asyncio.Event()

    def _ble_allowed(self):
        """The BLE allow-list: configured ids, or every active registered device."""
        if self.config.ble.allow:
            return {int(v, 16) for v in self.config.ble.allow.split(",") if v.strip()}
        return {d.device_id for d in self.registry.devices() if d.state == ACTIVE}

    def _ble_key(self, device_id):
        """An active device's key, to resolve its rotating BLE identifier; None otherwise."""
        device = self.registry.get(device_id)
        if device is None or device.state != ACTIVE:
            return None
        try:
            return self.registry.key(device)
        except RegistryError:  # its key file is unreadable: the MQTT path says so too
            return None

    # -- running --
    async def run(self):
        """Run until stop() (or SIGTERM/SIGINT when installed by main())."""
        try:  # the API on a listener of its own when [actions] host is set
            self.http, self.api_http = await serve_all(
                self.config, {"/metrics": self._metrics_page, "/healthz": self._health_page},
                self._api if self.api is not None else None)
        except ConfigError:
            self.conn.close()
            raise
        logs.event(log, logging.INFO, "gateway_started", data_dir=self.config.gateway.data_dir,
                   devices=len(self.registry.devices()))
        if self.config.mqtt.shared_group:
            # Gateways in a group share no state: retransmissions landing on another gateway,
            # colliding downlink counters, supervision on a share (README, "Several gateways").
            logs.event(log, logging.WARNING, "shared_group_shares_no_state",
                       group=self.config.mqtt.shared_group)
        tasks = [asyncio.create_task(self.link.run(), name="mqtt"),
                 asyncio.create_task(self._ingest(), name="ingest"),
                 asyncio.create_task(self._supervise(), name="supervision"),
                 asyncio.create_task(self._pump_downlinks(), name="downlinks")]
        tasks += self.forwarding.tasks(self.config.forward.dc09.null_interval_s,
                                       self.config.forward.dc09.probe_interval_s)
        if self.ble is not None:
            if self.ble.scanner_factory is None:  # ble.hci: an emulated controller
                self.ble.scanner_factory, self.ble.client_factory = await emulated_factories(
                    self.config.ble.hci)
            tasks.append(asyncio.create_task(self.ble.run(), name="ble"))
        await run_until_stopped(tasks, self._stop, self.link)
        await close_transports(self.forwarding.transports)
        self.http.close()
        if self.api_http is not None:
            self.api_http.close()
        self.conn.close()  # after the COMMIT in flight, if any
        self._writer.shutdown()
        logs.event(log, logging.INFO, "gateway_stopped")

    def stop(self):
        self._stop.set()

    @property
    def http_port(self):
        return self.http.sockets[0].getsockname()[1] if self.http else None

    @property
    def api_port(self):
        """The actions API's port: its own listener's, else the local one's."""
        server = self.api_http or self.http
        return server.sockets[0].getsockname()[1] if server else None

    async def _ingest(self):
        batch_max = self.config.store.batch_max
        while True:
            batch = [await self.inbound.get()]
            while len(batch) < batch_max and not self.inbound.empty():
                batch.append(self.inbound.get_nowait())
            with logs.batch():
                outcomes = await self._commit(batch)
                now = time.monotonic()
                for outcome in outcomes:
                    if outcome.downlink is not None:
                        if outcome.device_id in self._mqtt_retry_devices:
                            self._reachable(outcome.device_id)
                        self.link.publish(*outcome.downlink)
                        self._send_ble(outcome.device_id, outcome.downlink[1])
                        self.metrics.acks.inc("RECEIVED")
                        self.metrics.ack_latency.observe(now - outcome.message.arrived)
                self.forwarding.wake.set()
                if any(outcome.reoffered for outcome in outcomes):
                    self._downlink_wake.set()  # stored downlinks with no receipt: again
                for outcome in outcomes:
                    token = outcome.message.token
                    if not outcome.hold and not (token and token[0] == "ble"):
                        self.link.ack(token)

    def _actions_done(self):
        self._downlink_wake.set()
        self.forwarding.wake.set()

    def _api(self, method, path, headers, body):
        return api_response(self.api, self.metrics, (method, path, headers, body))

    async def _pump_downlinks(self):
        while True:
            self._downlink_wake.clear()
            try:
                self._flush_downlinks()
            except Exception as exc:  # retried on the next round
                logs.event(log, logging.ERROR, "downlink_pump_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._downlink_wake.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    def _wake_pump(self, _done):
        self._downlink_wake.set()  # a PUBACK or a BLE write came back: the pump records it

    def _flush_downlinks(self):
        now = self.clock()
        sent = self._confirmed(now)
        if sent:  # before looking for unsent ones: these are not
            with self.store.transaction():
                for d, path in sent:
                    self.downlinks.mark(d.id, path, now)
            for d, path in sent:
                what = "DELIVERED" if d.kind == "ack" else p.ACTIONS.get(d.code, str(d.code))
                self.metrics.downlinks.inc(path, what)
                if d.kind == "ack" and path == "mqtt":
                    self.metrics.acks.inc("DELIVERED")
                logs.event(log, logging.INFO, "downlink_sent", path=path, what=what,
                           device="%08x" % d.device_id, ref=d.ref, counter=d.counter)
        if self.link.connected.is_set():
            self._publish_unsent(now)
        if self.ble is not None:
            for d in self.downlinks.unsent_ble(set(self.ble.status.connected), now):
                if d.id in self._ble_waiting:
                    continue
                task = self._send_ble(d.device_id, d.frame)
                if task is not None:
                    task.add_done_callback(self._wake_pump)
                    self._ble_waiting[d.id] = (d, task)

    def _confirmed(self, now):
        """The stored downlinks whose PUBACK or BLE write came back since the last round, as
        (downlink, path) to mark sent; those the broker did not take wait for a retry."""
        sent = []
        for d_id, (d, future) in list(self._mqtt_waiting.items()):
            if not future.done():
                continue
            del self._mqtt_waiting[d_id]
            reason = future.result()
            if reason == 0:
                sent.append((d, "mqtt"))
                self._mqtt_retry.pop(d_id, None)
            else:
                self._retry_later(d, reason, now)
        for d_id, (d, task) in list(self._ble_waiting.items()):
            if task.done():
                del self._ble_waiting[d_id]
                if not task.cancelled() and task.exception() is None and task.result():
                    sent.append((d, "ble"))
        return sent

    def _publish_unsent(self, now):
        budget, after = _DOWNLINKS_PER_ROUND, 0
        while budget > 0:
            page = self.downlinks.unsent_mqtt(_DOWNLINK_PAGE, after)
            if not page:
                return
            for d in page:
                after = d.id
                retry = self._mqtt_retry.get(d.id)
                if d.id in self._mqtt_waiting or (retry is not None and retry[0] > now):
                    continue
                future = self.link.publish(self.topics.down(d.device_id), d.frame, confirm=True)
                future.add_done_callback(self._wake_pump)
                self._mqtt_waiting[d.id] = (d, future)
                logs.event(log, logging.DEBUG, "downlink_published", device="%08x" % d.device_id,
                           ref=d.ref, counter=d.counter, again=retry is not None)
                budget -= 1

    def _retry_later(self, d, reason, now):
        """The broker answered a stored downlink without taking it for a session: offer it
        again after a backoff, or as soon as its wearable is heard from."""
        _, delay = self._mqtt_retry.get(d.id, (None, DOWNLINK_RETRY_S[0] / 2))
        delay = min(delay * 2, DOWNLINK_RETRY_S[1])
        self._mqtt_retry[d.id] = (now + delay, delay)
        self._mqtt_retry_devices.setdefault(d.device_id, set()).add(d.id)
        name = ("no_subscriber" if reason == NO_SUBSCRIBERS else
                "not_queued" if reason == NOT_QUEUED else "refused")
        self.metrics.downlink_retries.inc(name)
        logs.event(log, logging.WARNING, "downlink_not_taken", device="%08x" % d.device_id,
                   ref=d.ref, counter=d.counter, reason=name, code=reason,
                   retry_in_s=delay)

    def _reachable(self, device_id):
        """An uplink from the device: it is connected, so what waits for it goes out now."""
        for d_id in self._mqtt_retry_devices.pop(device_id, ()):
            if d_id in self._mqtt_retry:
                at, delay = self._mqtt_retry[d_id]
                self._mqtt_retry[d_id] = (0.0, delay)
        self._downlink_wake.set()

    def _send_ble(self, device_id, frame):
        """Downlinks go on every path: MQTT always, BLE too while the wearable is connected.
        Returns the write's task (its result: True once the wearable answered), or None."""
        if self.ble is None or device_id not in self.ble.status.connected:
            return None
        task = asyncio.ensure_future(self.ble.send(device_id, frame))
        self._ble_writes.add(task)
        task.add_done_callback(self._ble_writes.discard)
        return task

    async def _commit(self, batch):
        delay = _STORE_RETRY_S[0]
        while True:
            try:
                outcomes = self.pipeline.write(batch)
                started = time.perf_counter()
                try:
                    if len(batch) < _WRITER_MIN_BATCH:
                        self.conn.commit_or_rollback()
                    else:  # shielded: a COMMIT once handed over always runs to its end
                        await asyncio.shield(asyncio.wrap_future(
                            self.conn.commit_in(self._writer)))
                except sqlite3.Error as exc:
                    raise self.pipeline.commit_failed(batch, exc) from None
                self.metrics.commit_seconds.observe(time.perf_counter() - started)
                self.store_ok = True
                return self.pipeline.committed(outcomes)
            except StoreError as exc:
                self.store_ok = False
                self.metrics.store_errors.inc()
                logs.event(log, logging.ERROR, "store_commit_failed", error=str(exc),
                           retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORE_RETRY_S[1])

    async def _supervise(self):
        while True:
            await asyncio.sleep(self.config.supervision.check_every_s)
            try:
                self.forwarding.wake.set()
                for incident in self.supervisor.check(self.clock()):
                    self.metrics.lost_contact.inc()
                    logs.event(log, logging.WARNING, "lost_contact", incident=incident.id,
                               device="%08x" % incident.device_id)
                self._promote_early_taps()
                if self.retention.due(self.clock()):
                    self.retention.prune(self.clock())
                    self.pipeline.forget()  # history floors moved
            except Exception as exc:  # a supervision fault must not stop ingest
                logs.event(log, logging.ERROR, "supervision_failed", error=repr(exc))

    def _promote_early_taps(self):
        """DOUBLE_TAPs whose alarm has not come within the wait raise incidents of their own."""
        wait_s = self.config.incidents.double_tap_wait_s
        incidents = self.pipeline.incidents
        if not incidents.early_waiting():
            return
        with self.store.transaction():
            raised = incidents.promote_early_taps(self.clock(), wait_s)
        for incident in raised:
            self.metrics.early_taps.inc("raised")
            logs.event(log, logging.WARNING, "double_tap_raised", incident=incident.id,
                       device="%08x" % incident.device_id, ref=incident.counter,
                       waited_s=wait_s)
        if raised:
            self.forwarding.wake.set()

    # -- HTTP pages --
    def _health(self):
        checks = {"mqtt": self.link.connected.is_set(), "store": self.store_ok}
        if self.ble is not None:
            checks["ble_scanner"] = self.ble.status.scanning
        return all(checks.values()), checks

    def _health_page(self):
        healthy, checks = self._health()
        body = json.dumps(dict(checks, status="ok" if healthy else "unavailable")) + "\n"
        return (200 if healthy else 503), "application/json", body

    def _metrics_page(self):
        self._refresh_gauges()
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()

    def _refresh_gauges(self):
        m = self.metrics
        m.queue_depth.set(self.inbound.qsize(), "inbound")
        m.queue_depth.set(getattr(self.link, "unconfirmed", 0), "downlink_unconfirmed")
        counts = {ACTIVE: 0, REVOKED: 0}
        for device in self.registry.devices():
            counts[device.state] = counts.get(device.state, 0) + 1
        counts["lost_contact"] = sum(1 for c in self.store.contacts()
                                     if c.lost_incident is not None)
        for state, n in counts.items():
            m.devices.set(n, state)
        if self.ble is not None:
            s = self.ble.status
            m.ble_connected.set(len(s.connected))
            m.ble_scanning.set(1 if s.scanning else 0)
            for name, value in (("scanner_restarts", s.scanner_restarts),
                                ("scanner_errors", s.scanner_errors),
                                ("connect_failures", s.connect_failures),
                                ("ignored_adverts", s.ignored), ("adverts", s.adverts),
                                ("resolved_adverts", s.resolved),
                                ("unresolved_adverts", s.unresolved),
                                ("legacy_adverts", s.legacy), ("bad_frames", s.bad_frames),
                                ("superseded", s.superseded)):
                m.ble_events.set(value, name)
        pending = self.outbox.pending_counts()
        for transport in self.forwarding.transports:
            m.forward_pending.set(pending.get(transport.name, 0), transport.name)
            if isinstance(transport, Dc09Transport):
                m.show_dc09(transport)
        by_state = self.store.count_incidents_by_state()
        for state in STATES:
            m.incidents.set(by_state.get(state, 0), state)


def make_transports(config, conn, clock=time.time, dc09_state=None):
    """The configured destinations: a webhook and/or a DC-09 receiver (secrets read here).
    dc09_state: the DC-09 state's backend (Dc09State on `conn` when not given)."""
    made = []
    hook = config.forward.webhook
    if hook.url:
        secret = read_secret(hook.secret_file, "forward.webhook.secret_file").encode()
        made.append(WebhookTransport(hook.url, secret, hook.timeout_s, hook.ca_file, clock))
    arc = config.forward.dc09
    if arc.host:
        key = read_secret(arc.key_file, "forward.dc09.key_file") if arc.key_file else None
        try:
            account = Account(arc.account, parse_key(key) if key else None, arc.line,
                              arc.receiver or None)
        except Dc09Error as exc:
            key_name = "forward.dc09.key_file" if "key" in str(exc) else "forward.dc09.account"
            raise ConfigError(key_name, str(exc)) from None
        state = Dc09State(conn) if dc09_state is None else dc09_state
        made.append(Dc09Transport(arc.host, arc.port, account, state, arc.format,
                                  arc.timeout_s, clock, arc.account_scheme,
                                  (arc.backup_host, arc.backup_port) if arc.backup_host else None))
    return made


def main(config):
    """Run the gateway in the foreground until SIGTERM or SIGINT; returns the exit status."""
    logs.setup(config.log.level)

    async def runner():
        gateway = Gateway(config)
        # What start-up made (modules, tables, the registry) lives as long as the process: out
        # of the collector's sight, the full collections that ingest's many short-lived objects
        # set off scan only those, not the whole heap each time.
        gc.freeze()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, gateway.stop)
        await gateway.run()

    try:
        lock = instance_lock.acquire(config.gateway.data_dir)  # one gateway per data_dir
        try:
            asyncio.run(runner())
        finally:
            lock.close()
    except GatewayError as exc:  # logged here, and printed by the CLI (exit status 2)
        logs.event(log, logging.ERROR, "gateway_failed", error=str(exc))
        raise
    return 0
