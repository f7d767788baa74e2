# Prometheus metrics in the text exposition format (version 0.0.4), kept in memory.
# Small on purpose: counters and gauges with labels, and one kind of histogram.
import math

# Seconds; the RECEIVED-ack latency goal is 10 ms, so the buckets are fine around it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                   2.5, 10.0)


def _labels(names, values):
    if not names:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (n, str(v).replace("\\", "\\\\").replace('"', '\\"')
                                          .replace("\n", "\\n")) for n, v in zip(names, values))


class _Metric:
    TYPE = ""

    def __init__(self, name, help_text, labels=()):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self.values = {}

    def header(self):
        return ["# HELP %s %s" % (self.name, self.help), "# TYPE %s %s" % (self.name, self.TYPE)]


class Counter(_Metric):
    TYPE = "counter"

    def inc(self, *labels, amount=1):
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels):
        return self.values.get(labels, 0)

    def render(self):
        return self.header() + ["%s%s %s" % (self.name, _labels(self.label_names, k), _num(v))
                                for k, v in sorted(self.values.items())]


class Gauge(Counter):
    TYPE = "gauge"

    def set(self, value, *labels):
        self.values[labels] = value


class Histogram(_Metric):
    TYPE = "histogram"

    def __init__(self, name, help_text, buckets=LATENCY_BUCKETS):
        _Metric.__init__(self, name, help_text)
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

    def render(self):
        lines = self.header()
        running = 0
        for bound, n in zip(self.buckets + (math.inf,), self.counts):
            running += n
            le = "+Inf" if bound == math.inf else repr(bound)
            lines.append('%s_bucket{le="%s"} %d' % (self.name, le, running))
        lines.append("%s_sum %s" % (self.name, _num(self.sum)))
        lines.append("%s_count %d" % (self.name, self.count))
        return lines


def _num(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)


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
        self.batches = Counter("vigil_gateway_commits_total", "Store transactions committed")
        self.ble_connected = Gauge("vigil_gateway_ble_connected",
                                   "Wearables connected over BLE")
        self.ble_scanning = Gauge("vigil_gateway_ble_scanning", "1 while the BLE scanner runs")
        self.ble_events = Gauge("vigil_gateway_ble_events",
                                "BLE link events since start (scanner_restarts, scanner_errors, "
                                "connect_failures, ignored_adverts, adverts)", ["event"])

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

    def all(self):
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self):
        lines = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
