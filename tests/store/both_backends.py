# One gateway on either backend, for tests written once and run on both: service.Gateway on
# SQLite and service_pg.PostgresGateway on PostgreSQL, each built from a config on disk as
# `vigil gateway run` builds it, and never run (no broker, no event loop between calls). A test
# calls what the running gateway's loops call - the ingest's commit of a batch, a supervision
# check, a forwarding round, the actions API's handler - and the operators' commands as `vigil
# gateway ...` runs them (the CLI's own code, in this process, on a connection of its own), and
# reads what is stored through the stores' own reads (those the CLI lists with).
#
# Time: the gateway's clock is the test's (Clock). What PostgreSQL compares itself - a
# supervision deadline, an outbox row's next attempt - is the database's clock: wait_until()
# moves the gateway's clock and, on PostgreSQL, lets that much real time pass too; later()
# moves the gateway's alone.
import asyncio
import contextlib
import io
import os
import sqlite3
import time

import psycopg

import vigil_protocol as p
from vigil_gateway import config as gateway_config
from vigil_gateway import store_url
from vigil_gateway.dc09_pg import PostgresDc09State
from vigil_gateway.downlinks_pg import PostgresDownlinks
from vigil_gateway.forward_dc09 import Dc09State
from vigil_gateway.forward_webhook import Result
from vigil_gateway.pipeline import Message
from vigil_gateway.service import Gateway
from vigil_gateway.service_pg import PostgresGateway
from vigil_gateway.topics import Topics
from vigil_tools.cli import main as vigil

SQLITE = store_url.SQLITE
POSTGRESQL = store_url.POSTGRESQL
BACKENDS = (SQLITE, POSTGRESQL)
TOPICS = Topics("vigil")
BACKEND_NAME = "arc-one"
TOKEN = "token-one-0123456789abcdef"
GRACE_S = 1  # supervision.grace_s (the least the config takes)
BACKOFF_S = 0.5  # forward.backoff_min_s and max_s: a failed event waits that (no jitter)
INGEST_S = 5.0


def key_for(device_id, version=1):
    return bytes((device_id * 11 + version * 7 + i) & 0xFF for i in range(32))


def signed(frame, key=None, version=2):
    """A Message carrying `frame` as its wearable sends it: sealed (v2), on its uplink topic."""
    key = key_for(frame.device_id) if key is None else key
    return Message(TOPICS.up(frame.device_id), p.encode(frame, p.DeviceKey(key), version))


def alarm(device_id, counter, kind=p.SOS, **fields):
    return signed(p.Alarm(device_id, counter, kind, **fields))


def checkin(device_id, counter, interval=0):
    return signed(p.CheckIn(device_id, counter, interval=interval))


def ack_of(outcome, key=None):
    """The RECEIVED ack an outcome sends back, verified as the wearable verifies it."""
    key = key_for(outcome.device_id) if key is None else key
    return p.decode(outcome.downlink[1], p.DeviceKey(key), p.DOWN)


class Clock:
    def __init__(self):
        self.now = time.time()  # (the actions API compares a request's sent_at with it)

    def __call__(self):
        return self.now


class Link:
    """The MQTT link, never connected (service.py's link_factory): what is published stays
    here."""

    def __init__(self, settings, topics, on_message, password, metrics):
        self.connected = asyncio.Event()
        self.published = []

    def publish(self, topic, payload, confirm=False):
        """confirm: the broker's answer to come (a future), here at once: taken (reason 0)."""
        self.published.append((topic, payload))
        if confirm:
            future = asyncio.get_running_loop().create_future()
            future.set_result(0)
            return future
        return None

    def ack(self, token):
        pass

    def stop(self):
        pass


class Destination:
    """A responder backend in the webhook's place: takes every event, except those the test
    says to refuse once (by idempotency key). seen: (incident id, event) of each attempt."""

    name = "webhook"

    def __init__(self):
        self.seen = []
        self.refuse_once = set()

    async def deliver(self, item):
        self.seen.append((item.incident_id, item.event))
        if item.key in self.refuse_once:
            self.refuse_once.discard(item.key)
            return Result(False, "503 from the test's backend")
        return Result(True)


class Site:
    """A gateway on `backend` (SQLITE, or POSTGRESQL on the database `url`) in `folder`."""

    def __init__(self, backend, folder, url=None):
        self.backend = backend
        self.folder = folder
        self.url = url
        self.clock = Clock()
        self.destination = Destination()
        tokens = folder / "tokens"
        tokens.write_text("%s %s\n" % (BACKEND_NAME, TOKEN))
        tokens.chmod(0o600)
        self.config_path = folder / "gateway.toml"
        self.config_path.write_text(
            '[gateway]\ndata_dir = "data"\n[store]\nurl = "%s"\n[mqtt]\nport = 1\n'
            '[supervision]\ngrace_s = %d\n[forward]\nbackoff_min_s = %s\nbackoff_max_s = %s\n'
            '[actions]\ntokens_file = "tokens"\n'
            % (url or "sqlite:", GRACE_S, BACKOFF_S, BACKOFF_S))
        self.gateway = None
        self.start()

    @property
    def postgresql(self):
        return self.backend == POSTGRESQL

    def start(self):
        """The gateway, built as `vigil gateway run` builds it (a fresh process's, when one ran
        before: stop() it first)."""
        config = gateway_config.load(str(self.config_path))
        links = [self.destination]
        if self.postgresql:
            self.gateway = PostgresGateway(config, self.url, Link, self.clock, links)
            g = self.gateway
            self.store = g.store  # ingest's connection
            self.stored_downlinks = PostgresDownlinks(g.pages_store, g.registry)
        else:
            self.gateway = Gateway(config, Link, self.clock, transports=links)
            self.store = self.gateway.store
            self.stored_downlinks = self.gateway.downlinks
        self.gateway.forwarding.outbox.rng = lambda: 1.0  # a retry's jitter: none
        return self.gateway

    def stop(self):
        g = self.gateway
        if self.postgresql:
            for store in (g.store, g.supervision_store, g.pump_store, g.forward_store,
                          g.api_store, g.pages_store):
                store.close()
        else:
            g.conn.close()
            g._writer.shutdown()

    # -- what the gateway's loops do --
    def ingest(self, *messages):
        """One batch through the ingest loop's commit (retried as the service retries it):
        its outcomes, committed. A batch the store still refuses after INGEST_S fails the
        test (the service would retry it for ever)."""
        return asyncio.run(asyncio.wait_for(self.gateway._commit(list(messages)), INGEST_S))

    def fail_next_commit(self):
        """The next ingest COMMIT fails (rolled back, as a full disk or a lost connection
        leaves it); the one after goes through."""
        if self.postgresql:
            conn = self.store.conn

            def commit():
                del conn.commit
                conn.rollback()
                raise psycopg.OperationalError("server closed the connection (the test's)")
            conn.commit = commit
            return
        conn = self.gateway.conn

        def commit_or_rollback():
            del conn.commit_or_rollback
            conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error (the test's)")
        conn.commit_or_rollback = commit_or_rollback

    def pump(self):
        """The stored-downlink pump's work until it rests: what it published, [(topic,
        frame)], each one the broker took recorded as sent."""
        link = self.gateway.link
        link.connected.set()
        before = len(link.published)

        async def rounds():
            if self.postgresql:
                await self.gateway.pump.round()
            else:  # a round publishes, the next one records the PUBACKs
                for _ in range(2):
                    self.gateway._flush_downlinks()
                    await asyncio.sleep(0)
        asyncio.run(rounds())
        return link.published[before:]

    def promote_early_taps(self):
        """The supervision loop's promotion of DOUBLE_TAPs whose alarm has not come."""
        if not self.postgresql:
            return self.gateway._promote_early_taps()
        g, now = self.gateway, self.clock()
        wait_s = g.config.incidents.double_tap_wait_s
        with g.supervision_store.transaction():  # (service_pg's _supervise)
            g.supervision_store.lock_early_tap_devices(now - wait_s)
            g.supervision_incidents.promote_early_taps(now, wait_s)

    def prune(self):
        """The supervision loop's retention round ([store] retain_days)."""
        self.gateway.retention.prune(self.clock())
        if not self.postgresql:
            self.gateway.pipeline.forget()  # (service.py: history floors moved)

    def dc09_state(self):
        """The DC-09 transport's state, on the connection each service gives it (make_transports
        on SQLite's; the forwarding loops' on PostgreSQL)."""
        if self.postgresql:
            return PostgresDc09State(self.gateway.forward_store)
        return Dc09State(self.gateway.conn)

    def supervise(self):
        """One supervision check: [(device_id, incident_id)] of the LOST_CONTACTs raised."""
        now = self.clock()
        if self.postgresql:  # service_pg: claimed from the database's deadlines
            return self.gateway.supervision_store.claim_overdue(now)
        return [(i.device_id, i.id) for i in self.gateway.supervisor.check(now)]

    def forward(self):
        """One forwarding round to the destination: how many events it delivered."""
        return asyncio.run(self.gateway.forwarding.round(self.destination))

    def api(self, method, path, body=b""):
        """One request to the actions API, as the backend BACKEND_NAME makes it: its Reply."""
        return self.gateway.api.handle(method, path, {
            "authorization": "Bearer " + TOKEN, "content-type": "application/json"}, body)

    def later(self, seconds):
        """`seconds` pass for the gateway's clock only (what it compares itself)."""
        self.clock.now += seconds

    def mark(self):
        """Now, for wait_until()."""
        return self.clock.now, time.monotonic()

    def wait_until(self, mark, seconds):
        """Until `seconds` after `mark`, for the gateway and, on PostgreSQL, for the database's
        clock too (real time: what is slow here makes it later, never earlier)."""
        self.clock.now = mark[0] + seconds
        if self.postgresql:
            time.sleep(max(0.0, mark[1] + seconds - time.monotonic()))

    def vigil(self, *args):
        """`vigil gateway ARGS --config ...` in this process: (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = vigil(["gateway"] + [str(a) for a in args] +
                           ["--config", str(self.config_path)])
        return status, out.getvalue(), err.getvalue()

    def add_device(self, device_id, key=None, *options):
        """`vigil gateway device add` with a key file (written here)."""
        path = self.folder / ("%08x.key" % device_id)
        path.write_text((key_for(device_id) if key is None else key).hex() + "\n")
        status, _, err = self.vigil("device", "add", "%08x" % device_id, "--key-file", path,
                                    *options)
        assert status == 0, err
        os.unlink(path)

    # -- what is stored, through the stores' reads --
    def incidents(self, device_id=None):
        if self.postgresql:
            return self.store.committed_incidents(device_id)
        return self.store.incidents(device_id)

    def audit(self, incident_id, details=False):
        """The incident's audit trail: its events (with their details, if asked)."""
        read = self.store.committed_audit if self.postgresql else self.store.audit
        return [(a.event, a.detail) if details else a.event for a in read(incident_id)]

    def frame_count(self, device_id):
        return self.store.frame_count(device_id)

    def downlink_counter(self, device_id):
        """The device's last downlink counter, as stored."""
        return self.store.downlink_counter(device_id)

    def outbox(self):
        """Every event queued for forwarding (outbox.Item, snapshot decoded), oldest first."""
        if self.postgresql:
            return self.store.committed_outbox()
        return self.gateway.outbox.items()

    def downlinks(self, device_id):
        """The stored downlinks (DELIVERED acks, responder actions) of the device, oldest
        first, as downlinks.Downlink."""
        return self.stored_downlinks.all(device_id)

    def rejections(self):
        """{reason: count} of the frames the gateway rejected (its /metrics counter)."""
        return {labels[0]: n for labels, n in self.gateway.metrics.rejections.values.items()
                if n}

    def lost_contact(self, device_id):
        """The open LOST_CONTACT incident the device's contact names, or None."""
        for contact in self.store.contacts():
            if contact.device_id == device_id:
                return contact.lost_incident
        return None
