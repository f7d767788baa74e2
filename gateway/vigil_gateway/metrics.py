# Prometheus metrics, exported with prometheus_client (text format 0.0.4, from its own
# exposition code), kept in memory by the gateway.
#
# Rules:
#   every series an operator alerts on exists from the start: a metric without labels starts
#   at 0 (mqtt_connected 0 before the first connection), a labelled one has each of its known
#   label sets at 0 (Metrics.__init__, declare_destinations), so a rate or an absence alert has
#   its zero;
#   counters are counters (only inc, exported as <name>_total), gauges are set;
#   the values live in plain dicts, incremented on the ingest path at the cost of a dict update:
#   prometheus_client's own metric objects take a lock and a label lookup per inc, several
#   times per alarm; its collector interface turns the dicts into metric families at scrape
#   time, beside its process and platform collectors and vigil_gateway_build_info.
import math
import platform
import sys

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.platform_collector import PlatformCollector

# Seconds; the RECEIVED-ack latency goal is 10 ms, so the buckets are fine around it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                   2.5, 10.0)
# Seconds; a COMMIT with its fsync takes from tens of microseconds (SQLite, small) to tens of
# milliseconds (PostgreSQL under load): a 1-2-5 series, fine enough to interpolate quantiles.
COMMIT_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                  0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class _Metric:
    TYPE = ""

    def __init__(self, name, help_text, labels=()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self.values = {}
        if not self.label_names:
            self.values[()] = 0


class Counter(_Metric):
    TYPE = "counter"

    def __init__(self, name, help_text, labels=()):
        if not name.endswith("_total"):
            raise ValueError("a counter's name ends in _total: %s" % name)
        _Metric.__init__(self, name, help_text, labels)

    def inc(self, *labels, amount=1):
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels):
        return self.values.get(labels, 0)

    def family(self):
        family = CounterMetricFamily(self.name, self.help, labels=self.label_names)
        for labels, value in sorted(self.values.items()):
            family.add_metric([str(v) for v in labels], value)
        return family


class Gauge(_Metric):
    TYPE = "gauge"

    def set(self, value, *labels):
        self.values[labels] = value

    def inc(self, *labels, amount=1):
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels):
        return self.values.get(labels, 0)

    def family(self):
        family = GaugeMetricFamily(self.name, self.help, labels=self.label_names)
        for labels, value in sorted(self.values.items()):
            family.add_metric([str(v) for v in labels], value)
        return family


class Histogram(_Metric):
    TYPE = "histogram"

    def __init__(self, name, help_text, buckets=LATENCY_BUCKETS):
        _Metric.__init__(self, name, help_text, ("le",))
        self.values = {}
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def family(self):
        cumulative, running = [], 0
        for bound, n in zip(self.buckets + (math.inf,), self.counts):
            running += n
            cumulative.append(("+Inf" if bound == math.inf else repr(bound), running))
        return HistogramMetricFamily(self.name, self.help, buckets=cumulative,
                                     sum_value=self.sum)


def build_version():
    try:
        from importlib.metadata import version

        return version("vigil")
    except Exception:  # not installed as a distribution (run from a source tree)
        return "unknown"


class _Collector:
    """prometheus_client's view of a Metrics: its families at scrape time."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        for metric in self.metrics.all():
            yield metric.family()
        info = GaugeMetricFamily("vigil_gateway_build_info",
                                 "The gateway's version and Python (value 1)",
                                 labels=["version", "python"])
        info.add_metric([self.metrics.version, platform.python_version()], 1)
        yield info
        if self.metrics.backups is not None:  # read now: a stopped timer shows at once
            count, newest = self.metrics.backups()
            yield GaugeMetricFamily("vigil_gateway_backup_newest_timestamp_seconds",
                                    "Unix time of the newest complete scheduled backup in "
                                    "[backup] dir (0: none, or the folder is missing or "
                                    "unreadable)", value=newest)
            yield GaugeMetricFamily("vigil_gateway_backups",
                                    "Complete scheduled backups in [backup] dir", value=count)


class Metrics:
    """Every metric the gateway exports, by attribute."""

    def __init__(self, rejection_reasons=()):
        self.frames = Counter("vigil_gateway_frames_total",
                              "Uplink messages by result (new, retransmission, rejected, status)",
                              ["result"])
        self.rejections = Counter("vigil_gateway_rejections_total",
                                  "Rejected uplink messages by reason", ["reason"])
        for reason in rejection_reasons:
            self.rejections.inc(reason, amount=0)
        self.acks = Counter("vigil_gateway_acks_total", "Signed downlink acks sent, by stage",
                            ["stage"])
        self.ack_latency = Histogram("vigil_gateway_ack_latency_seconds",
                                     "From an uplink's arrival to its RECEIVED ack leaving")
        self.queue_depth = Gauge("vigil_gateway_queue_depth",
                                 "Messages waiting: inbound (received, not yet on disk), downlink_unconfirmed "
                                 "(acks sent, not yet confirmed by the broker)", ["queue"])
        self.devices = Gauge("vigil_gateway_devices",
                             "Registered devices by state (active, revoked, lost_contact)",
                             ["state"])
        self.incidents = Gauge("vigil_gateway_incidents", "Incidents by state", ["state"])
        self.mqtt_connected = Gauge("vigil_gateway_mqtt_connected",
                                    "1 while connected and subscribed to the broker")
        self.mqtt_connects = Counter("vigil_gateway_mqtt_connects_total",
                                     "Successful broker connections (the first and reconnects)")
        self.store_errors = Counter("vigil_gateway_store_errors_total",
                                    "Batches the store failed to commit (retried)")
        self.lost_contact = Counter("vigil_gateway_lost_contact_total",
                                    "LOST_CONTACT incidents raised by supervision")
        self.late_frames = Counter("vigil_gateway_late_frames_total",
                                   "Frames below the replay window, never seen, accepted")
        self.late_alarms = Counter("vigil_gateway_late_alarms_total",
                                   "Alarms delivered marked late, by what showed it (age: it "
                                   "waited on the wearable; order: a later frame came first; "
                                   "silence: it came while contact was lost)", ["basis"])
        for basis in ("age", "order", "silence"):
            self.late_alarms.inc(basis, amount=0)
        self.reacks_suppressed = Counter("vigil_gateway_reacks_suppressed_total",
                                         "Retransmissions not acknowledged again: one re-ack "
                                         "per counter per protocol.reack_interval_s")
        self.receipts = Counter("vigil_gateway_downlink_receipts_total",
                                "Stored downlinks and the wearables' receipts: confirmed (a "
                                "receipt named it), repeat (a receipt for one already "
                                "confirmed), offered_again (sent again: no receipt came)",
                                ["outcome"])
        for outcome in ("confirmed", "repeat", "offered_again"):
            self.receipts.inc(outcome, amount=0)
        self.batches = Counter("vigil_gateway_commits_total", "Store transactions committed")
        self.commit_seconds = Histogram("vigil_gateway_commit_seconds",
                                        "A batch's COMMIT, from its start to the database's "
                                        "answer", buckets=COMMIT_BUCKETS)
        self.ble_connected = Gauge("vigil_gateway_ble_connected",
                                   "Wearables connected over BLE")
        self.ble_scanning = Gauge("vigil_gateway_ble_scanning", "1 while the BLE scanner runs")
        self.ble_events = Gauge("vigil_gateway_ble_events",
                                "BLE link events since start (scanner_restarts, scanner_errors, "
                                "connect_failures, ignored_adverts, adverts, resolved_adverts, "
                                "unresolved_adverts, legacy_adverts, bad_frames, superseded)",
                                ["event"])

        self.forward_attempts = Counter("vigil_gateway_forward_attempts_total",
                                        "Attempts to deliver an incident event, by destination "
                                        "and result (delivered, failed)",
                                        ["destination", "result"])
        self.forward_pending = Gauge("vigil_gateway_forward_pending",
                                     "Incident events waiting in the outbox, by destination",
                                     ["destination"])
        self.forward_overdue = Gauge("vigil_gateway_forward_overdue",
                                     "Undelivered incident events older than "
                                     "forward.max_event_age_s (operator alert)")
        self.forward_alerts = Counter("vigil_gateway_forward_alerts_total",
                                      "Operator alerts from forwarding, by destination and "
                                      "reason (too_old, refused)", ["destination", "reason"])
        self.dc09_link = Gauge("vigil_gateway_dc09_link_up",
                               "1 while the alarm receiving centre answers (last exchange or "
                               "NULL link test)")
        self.dc09_clock_corrections = Counter("vigil_gateway_dc09_clock_corrections_total",
                                              "NAKs whose receiver time corrected our clock")
        self.dc09_refused = Counter("vigil_gateway_dc09_refused_replies_total",
                                    "DC-09 replies that did not deliver, by reason (ack_sequence, "
                                    "ack_account, ack_line, ack_receiver, plain_ack, "
                                    "ack_undecryptable, wrong_key, nak, unknown_account, duh, "
                                    "corrupt, unreadable, clock, ...)", ["reason"])
        self.dc09_duress_taps = Counter("vigil_gateway_dc09_duress_taps_total",
                                        "Double taps on a duress incident forwarded to the ARC "
                                        "(as duress; the gateway never prompts on duress)")
        self.dc09_derived = Gauge("vigil_gateway_dc09_derived_identities",
                                  "Wearables reported to the ARC under their own device account "
                                  "because they have no wearer profile (account_scheme site)")
        self.dc09_path_up = Gauge("vigil_gateway_dc09_path_up",
                                  "1 while that path to the ARC answers (primary, secondary: "
                                  "each its own NULL link tests)", ["path"])
        self.downlinks = Counter("vigil_gateway_downlinks_total",
                                 "DELIVERED acks and responder actions sent (MQTT: the broker's "
                                 "PUBACK; BLE: the wearable's write response), by path and what",
                                 ["path", "what"])
        self.early_taps = Counter("vigil_gateway_early_double_taps_total",
                                  "DOUBLE_TAPs that came before the alarm they answer: kept "
                                  "for it, or raised as an incident when it did not come",
                                  ["outcome"])
        self.downlink_retries = Counter("vigil_gateway_downlink_retries_total",
                                        "Stored downlinks the broker did not take, offered "
                                        "again later, by reason", ["reason"])
        self.api_requests = Counter("vigil_gateway_api_requests_total",
                                    "Responder actions API requests by result (applied, "
                                    "no_effect, unauthorized, malformed, replayed, refused, "
                                    "not_found, ...)", ["result"])

        # The label sets known from the start (destinations: declare_destinations).
        for result in ("new", "retransmission", "rejected", "status"):
            self.frames.inc(result, amount=0)
        for stage in ("RECEIVED", "DELIVERED"):
            self.acks.inc(stage, amount=0)
        for queue in ("inbound", "downlink_unconfirmed"):
            self.queue_depth.set(0, queue)
        for state in ("active", "revoked", "lost_contact"):
            self.devices.set(0, state)
        for path in ("mqtt", "ble"):
            for what in ("DELIVERED", "ACKNOWLEDGED", "PROMPT_DOUBLE_TAP", "HELP_DISPATCHED",
                         "RESOLVED"):
                self.downlinks.inc(path, what, amount=0)
        for outcome in ("kept", "raised"):
            self.early_taps.inc(outcome, amount=0)
        for reason in ("no_subscriber", "not_queued", "refused"):
            self.downlink_retries.inc(reason, amount=0)
        for result in ("applied", "no_effect", "retried", "shown", "unauthorized", "malformed",
                       "replayed", "refused", "not_found", "method_not_allowed"):
            self.api_requests.inc(result, amount=0)
        self.version = build_version()
        self.backups = None  # watch_backups()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def declare_destinations(self, names):
        """The forwarding destinations' series, from the start (names: "webhook", "dc09")."""
        for name in names:
            for result in ("delivered", "failed"):
                self.forward_attempts.inc(name, result, amount=0)
            for reason in ("too_old", "refused"):
                self.forward_alerts.inc(name, reason, amount=0)
            self.forward_pending.set(0, name)
        if "dc09" in names:  # down until the receiving centre first answers
            self.dc09_link.set(0)
        else:  # no receiving centre: no DC-09 path to alert on
            self.dc09_link.values.pop((), None)

    def show_dc09(self, transport):
        """A DC-09 transport's own tallies, as a scrape shows them (the gateway's and a
        worker's alike): its link and paths, and its counts as counters."""
        if transport.link_up is not None:
            self.dc09_link.set(1 if transport.link_up else 0)
        self.dc09_clock_corrections.values[()] = transport.clock_corrections
        for reason, n in transport.counts.items():
            self.dc09_refused.values[(reason,)] = n
        self.dc09_duress_taps.values[()] = transport.duress_taps
        self.dc09_derived.set(len(transport.derived))
        for path in transport.paths:
            if path.link_up is not None:
                self.dc09_path_up.set(1 if path.link_up else 0, path.name)

    def watch_backups(self, newest):
        """Export the scheduled backups at each scrape: newest() gives (how many complete
        ones, the unix time of the newest or 0), as backup.newest(folder) does."""
        self.backups = newest

    def all(self):
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self):
        return generate_latest(self.registry).decode()
