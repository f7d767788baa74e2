# One gateway worker on PostgreSQL (service.py is the SQLite gateway): the same pipeline,
# incidents, forwarding loops and downlinks, every device's state in the shared database, so
# any number of workers can share one MQTT 5 group ([mqtt] shared_group). `vigil gateway run`
# starts one (run()) when [store] url names PostgreSQL (gateway/README.md, "Many workers on one
# PostgreSQL"); `python -m vigil_gateway.service_pg --config FILE` too. A worker makes the
# tables of a new database at start.
#
#   link --Message--> inbound queue --batch--> pipeline (devices locked, written, committed)
#                                                         --> acks published --> broker PUBACKs
# Rules:
#   a batch is committed before any of its acks is published and before the broker's PUBACK
#   for any of its messages (persist before ack); a batch the store cannot take is retried
#   until it can (/healthz says unhealthy meanwhile), nothing of it acknowledged;
#   each loop has a connection of its own (ingest, supervision, the downlink pump,
#   forwarding): no transaction of one ever joins another's;
#   supervision: LOST_CONTACT claimed from the database's deadlines (whichever worker comes
#   first raises it, once), early taps promoted under their devices' locks, retention;
#   stored downlinks: the pump of whichever worker claims them (downlink_pump_pg.py);
#   forwarding: forwarding.py's loops on the outbox's claims (outbox_pg.ForwardingOutbox);
#   the responder actions API (actions.py, with [actions] tokens_file) on a connection of its
#   own, its requests in the database (api_requests_pg.py): a retry reaching another worker
#   gets the original answer, an action and the device's frames take turns on its row; a
#   request the database cannot take is 503 unavailable, nothing of it kept (the backend
#   retries it, with the same request_id);
#   DC-09 (forward_dc09.py) sent by one worker per receiving centre at a time, the one holding
#   its lock (dc09_pg.py): its rows claimed and its NULL link tests sent only by that worker,
#   the wearer's zone and account read from the database for each message;
#   BLE is edge-local (a gateway on SQLite): refused here, [ble] enabled names it;
#   the beacon table (beacons_pg.py) read in ingest's batch: a beacon an operator placed is
#   named by the next alarm any worker takes;
#   /metrics: this worker's own counters, and the shared state's gauges (devices by state,
#   lost contact, pending events, incidents by state) read from the database at each scrape,
#   the same in every worker.
import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

import psycopg

from . import config_files, logs, store_url
from .actions import ActionsApi, read_tokens
from .api_requests_pg import PostgresApiRequests
from .beacons_pg import PostgresBeacons
from .config import load as load_config, read_secret
from .dc09_pg import PostgresDc09State
from .device_state_pg import PostgresDeviceState
from .downlink_pump_pg import PostgresDownlinkPump
from .downlinks_pg import Listener, PostgresDownlinks
from .errors import ConfigError, GatewayError, StoreError
from .forward_dc09 import NAME as DC09, Dc09Transport
from .forward_webhook import NAME as WEBHOOK
from .forwarding import Forwarding
from .http_server import serve_all
from .incidents import STATES, Incidents
from .metrics import Metrics
from .mqtt_link import MqttLink
from .outbox_pg import ForwardingOutbox
from .pipeline import REASONS, WINDOW_SIZE, Pipeline
from .registry import ACTIVE, REVOKED
from .registry_pg import PostgresRegistry
from .retention import Retention
from .service import make_transports
from .running import api_response, close_transports, run_until_stopped
from .store_pg import PostgresStore
from .topics import Topics

log = logging.getLogger("vigil_gateway.service")
_STORE_RETRY_S = (0.1, 5.0)


class PostgresGateway:
    def __init__(self, config, url, link_factory=MqttLink, clock=time.time, transports=None):
        self.config = config
        self.url = url
        self.clock = clock
        self.metrics = Metrics(REASONS)
        self.topics = Topics(config.mqtt.prefix)
        if config.ble.enabled:
            raise ConfigError("ble.enabled", "BLE is edge-local: a gateway on SQLite serves "
                              "it, workers on PostgreSQL do not")
        config_files.check(config)  # every file the config names: one line each
        names = (destination_names(config) if transports is None else
                 [t.name for t in transports])
        self.metrics.declare_destinations(names)
        keys_dir = os.path.join(config.gateway.data_dir, "keys")
        sv = config.supervision

        def store():
            return PostgresStore(url, sv.default_interval_s, sv.grace_s, names)

        self.store = store()  # ingest's
        self.store.ensure_schema()  # (a new database: its tables, made by one worker)
        self.registry = PostgresRegistry(self.store, keys_dir)
        self.pipeline = Pipeline(self.registry, self.store, self.topics, self.metrics, clock,
                                 self.store.events, accept_v1=config.protocol.accept_v1,
                                 late_after_s=config.incidents.late_after_s,
                                 reack_interval_s=config.protocol.reack_interval_s,
                                 state=PostgresDeviceState(self.store),
                                 places=PostgresBeacons(self.store))
        self.downlinks = PostgresDownlinks(self.store, self.registry, self.pipeline)
        self.supervision_store = store()
        self.supervision_incidents = Incidents(self.supervision_store,
                                               self.supervision_store.events)
        self.retention = Retention(self.supervision_store,
                                   ForwardingOutbox(self.supervision_store.outbox),
                                   PostgresDownlinks(self.supervision_store, self.registry),
                                   config.store.retain_days, WINDOW_SIZE)
        password = (read_secret(config.mqtt.password_file, "mqtt.password_file")
                    if config.mqtt.password_file else None)
        self.inbound = asyncio.Queue()
        self.link = link_factory(config.mqtt, self.topics, self.inbound.put_nowait, password,
                                 self.metrics)
        self.pump_store = store()
        self.pump = PostgresDownlinkPump(PostgresDownlinks(self.pump_store, self.registry),
                                         self.link, self.topics, Listener(url), self.metrics,
                                         clock)
        self.forward_store = store()
        fw = config.forward
        # DC-09: one sender per receiving centre among the workers (its advisory lock, on the
        # forwarding loops' connection), its sequence numbers in the database
        self.dc09_state = PostgresDc09State(self.forward_store) if fw.dc09.host else None
        if transports is None:
            transports = make_transports(config, None, clock, self.dc09_state)
        self.transports = list(transports)
        senders = {t.name: t.state.try_become_sender for t in self.transports
                   if isinstance(getattr(t, "state", None), PostgresDc09State)}
        # a lease outlives a delivery that times out (forward.webhook.timeout_s; a DC-09
        # message: connect and reply on each path, twice after a NAK's clock correction)
        lease_s = 2 * fw.webhook.timeout_s + 5
        if fw.dc09.host:
            lease_s = max(lease_s, 8 * fw.dc09.timeout_s + 5)
        self.forwarding = Forwarding(
            self.forward_store,
            ForwardingOutbox(self.forward_store.outbox, (fw.backoff_min_s, fw.backoff_max_s),
                             fw.max_event_age_s, lease_s=lease_s, clock=clock,
                             senders=senders),
            PostgresDownlinks(self.forward_store, self.registry), self.transports,
            self.metrics, clock, self.pipeline, self.pump.wake.set)
        self.api = None
        if config.actions.tokens_file:
            self.api_store = store()
            self.api = ActionsApi(self.api_store,
                                  Incidents(self.api_store, self.api_store.events),
                                  PostgresDownlinks(self.api_store, self.registry),
                                  read_tokens(config.actions.tokens_file), clock,
                                  config.actions.tolerance_s, self._actions_done,
                                  requests=PostgresApiRequests(self.api_store))
        self.pages_store = store()  # /metrics' reads of the shared state
        self.store_ok = True
        self.http = None
        self.api_http = None
        self._stop = asyncio.Event()

    async def run(self):
        """Run until stop()."""
        self.http, self.api_http = await serve_all(
            self.config, {"/metrics": self._metrics_page, "/healthz": self._health_page},
            self._api if self.api is not None else None)
        logs.event(log, logging.INFO, "gateway_started", store="postgresql",
                   database=store_url.redacted(self.url),
                   group=self.config.mqtt.shared_group or None)
        tasks = [asyncio.create_task(self.link.run(), name="mqtt"),
                 asyncio.create_task(self._ingest(), name="ingest"),
                 asyncio.create_task(self._supervise(), name="supervision"),
                 asyncio.create_task(self.pump.run(), name="downlinks")]
        # forwarding.py's delivery loops; its age watch is this module's own (below)
        tasks += [asyncio.create_task(self.forwarding.run(t), name="forward-" + t.name)
                  for t in self.transports]
        tasks.append(asyncio.create_task(self._watch_forward_age(), name="forward-age"))
        dc09 = self.config.forward.dc09
        tasks += [asyncio.create_task(self._link_tests(t, dc09.null_interval_s,
                                                       dc09.probe_interval_s), name="dc09-null")
                  for t in self.transports if hasattr(t, "link_test") and dc09.null_interval_s]
        await run_until_stopped(tasks, self._stop, self.link)
        # what this worker claimed and did not finish goes back to the others at once (a
        # worker killed instead leaves it to its leases' end)
        for release in (self.forwarding.outbox.release, self.pump.downlinks.release):
            try:
                release()
            except StoreError as exc:
                logs.event(log, logging.WARNING, "release_failed", error=str(exc))
        await close_transports(self.transports)
        self.http.close()
        if self.api_http is not None:
            self.api_http.close()
        for store in (self.store, self.supervision_store, self.pump_store, self.forward_store):
            store.close()
        if self.api is not None:
            self.api_store.close()
        self.pages_store.close()
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

    def _actions_done(self):
        self.pump.wake.set()  # (the other workers' pumps hear of it by NOTIFY)
        self.forwarding.wake.set()

    def _api(self, method, path, headers, body):
        # a request the database cannot take: nothing of it committed, a 503 to retry
        return api_response(self.api, self.metrics, (method, path, headers, body),
                            (StoreError, psycopg.Error), _first_line)

    async def _ingest(self):
        batch_max = self.config.store.batch_max
        while True:
            batch = [await self.inbound.get()]
            while len(batch) < batch_max and not self.inbound.empty():
                batch.append(self.inbound.get_nowait())
            with logs.batch():
                outcomes = await self._commit(batch)
                now = time.monotonic()
                for outcome in outcomes:  # only now: the batch is committed
                    if outcome.downlink is not None:
                        self.link.publish(*outcome.downlink)
                        self.metrics.acks.inc("RECEIVED")
                        self.metrics.ack_latency.observe(now - outcome.message.arrived)
                self.forwarding.wake.set()
                for outcome in outcomes:
                    if not outcome.hold:
                        self.link.ack(outcome.message.token)

    async def _commit(self, batch):
        # The COMMIT waits on the event loop, not in a thread (measured: gateway/README.md).
        pipeline = self.pipeline
        delay = _STORE_RETRY_S[0]
        while True:
            try:
                outcomes = pipeline.write(batch)
                started = time.perf_counter()
                try:
                    pipeline.state.commit()
                except pipeline.state.errors as exc:
                    raise pipeline.commit_failed(batch, exc) from None
                self.metrics.commit_seconds.observe(time.perf_counter() - started)
                self.store_ok = True
                return pipeline.committed(outcomes)
            except StoreError as exc:
                self.store_ok = False
                self.metrics.store_errors.inc()
                logs.event(log, logging.ERROR, "store_commit_failed", error=str(exc),
                           retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORE_RETRY_S[1])

    async def _supervise(self):
        store = self.supervision_store
        while True:
            await asyncio.sleep(self.config.supervision.check_every_s)
            try:
                now = self.clock()
                raised = store.claim_overdue(now)
                for device_id, incident_id in raised:
                    self.metrics.lost_contact.inc()
                    logs.event(log, logging.WARNING, "lost_contact", incident=incident_id,
                               device="%08x" % device_id)
                wait_s = self.config.incidents.double_tap_wait_s
                with store.transaction():
                    store.lock_early_tap_devices(now - wait_s)
                    promoted = self.supervision_incidents.promote_early_taps(now, wait_s)
                for incident in promoted:
                    self.metrics.early_taps.inc("raised")
                    logs.event(log, logging.WARNING, "double_tap_raised", incident=incident.id,
                               device="%08x" % incident.device_id, ref=incident.counter,
                               waited_s=wait_s)
                if raised or promoted:
                    self.forwarding.wake.set()
                if self.retention.due(now):
                    self.retention.prune(now)
            except Exception as exc:  # a supervision fault must not stop ingest
                logs.event(log, logging.ERROR, "supervision_failed", error=repr(exc))

    async def _watch_forward_age(self):
        # forwarding.Forwarding's age watch, which stops at the first store error: here a
        # database restart is routine, and the watch goes on after it.
        outbox = self.forwarding.outbox
        while True:
            try:
                now = self.clock()
                with self.forward_store.transaction():
                    old = outbox.too_old(now)
                for item in old:
                    self.metrics.forward_alerts.inc(item.destination, "too_old")
                    logs.event(log, logging.ERROR, "forward_overdue",
                               destination=item.destination, incident=item.incident_id,
                               what=item.event, key=item.key,
                               age_s=round(now - item.created_at, 1), attempts=item.attempts,
                               last_error=item.last_error)
                self.metrics.forward_overdue.set(outbox.overdue_count(now))
            except StoreError as exc:
                logs.event(log, logging.ERROR, "forward_age_failed", error=str(exc))
            await asyncio.sleep(1.0)

    async def _link_tests(self, transport, interval_s, probe_s):
        # forwarding.Forwarding's NULL link tests, sent only by the worker that is the
        # receiving centre's one sender now (the others' sequence numbers would interleave
        # with its), and going on after a database restart.
        step = min(interval_s, probe_s or interval_s)
        last = time.monotonic()
        while True:
            await asyncio.sleep(step)
            try:
                if not transport.state.try_become_sender():
                    continue  # another worker tests the centre's link
                down = self.forwarding.link_ok.get(transport.name) is False or \
                    transport.link_up is False
                if down or time.monotonic() - last >= interval_s - step / 2:
                    last = time.monotonic()
                    await self.forwarding.link_test(transport)
            except Exception as exc:  # a database restart: the next round asks again
                logs.event(log, logging.ERROR, "dc09_link_test_failed", error=repr(exc))

    def _health_page(self):
        checks = {"mqtt": self.link.connected.is_set(), "store": self.store_ok}
        healthy = all(checks.values())
        body = json.dumps(dict(checks, status="ok" if healthy else "unavailable")) + "\n"
        return (200 if healthy else 503), "application/json", body

    def _metrics_page(self):
        self.metrics.queue_depth.set(self.inbound.qsize(), "inbound")
        m = self.metrics
        m.queue_depth.set(getattr(self.link, "unconfirmed", 0), "downlink_unconfirmed")
        try:  # the shared state's gauges, the same in every worker (service.py's)
            gauges = self.pages_store.gauges()
        except StoreError as exc:  # (store_errors and /healthz say so from ingest)
            logs.event(log, logging.WARNING, "metrics_store_failed", error=str(exc))
        else:
            for state in (ACTIVE, REVOKED, "lost_contact"):
                m.devices.set(gauges["devices"].get(state, 0), state)
            for transport in self.transports:
                m.forward_pending.set(gauges["pending"].get(transport.name, 0),
                                      transport.name)
            for state in STATES:
                m.incidents.set(gauges["incidents"].get(state, 0), state)
        for transport in self.transports:  # this worker's own DC-09 tallies
            if isinstance(transport, Dc09Transport):
                m.show_dc09(transport)
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def destination_names(config):
    """The configured destinations' names, in make_transports()' order."""
    return ([WEBHOOK] if config.forward.webhook.url else []) + \
        ([DC09] if config.forward.dc09.host else [])


def load(path):
    """The config of a worker and its database URL: [store] url must name PostgreSQL."""
    config = load_config(path)
    url = store_url.parse(config.store.url)
    if url.backend != store_url.POSTGRESQL:
        raise ConfigError(store_url.KEY, "a worker needs a postgresql:// URL")
    return config, url.url


def main(argv=None):
    """Run one worker in the foreground until SIGTERM or SIGINT; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m vigil_gateway.service_pg")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    try:
        config, url = load(args.config)
        run(config, url)
    except GatewayError as exc:  # one line, no traceback (and never the URL)
        print("vigil: %s" % exc, file=sys.stderr)
        return 2
    return 0


def run(config, url):
    """Run one worker on the database `url` in the foreground until SIGTERM or SIGINT
    (`vigil gateway run` with [store] url naming PostgreSQL); returns the exit status. A
    GatewayError (one line, never the URL's password) is logged and raised."""
    logs.setup(config.log.level)

    async def runner():
        gateway = PostgresGateway(config, url)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, gateway.stop)
        await gateway.run()

    try:
        asyncio.run(runner())
    except GatewayError as exc:
        logs.event(log, logging.ERROR, "gateway_failed", error=str(exc))
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
