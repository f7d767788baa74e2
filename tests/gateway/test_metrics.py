# /metrics as Prometheus reads it: parsed with prometheus_client's own parser, every series an
# operator alerts on is there from the start (counters at 0, mqtt_connected 0 before the first
# connection), counters are counters, process and build info are exported; and the sample alert
# rules (gateway/deploy/prometheus-alerts.yml) name only series the gateway exports.
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway_harness import key_for, wait_for, write_secret
from vigil_gateway.pipeline import REASONS
from vigil_tools.broker import free_port

RULES = Path(__file__).resolve().parents[2] / "gateway" / "deploy" / "prometheus-alerts.yml"
# What the sample rules must cover (the alerts an operator of an alarm system needs).
NEEDED = {"VigilGatewayDown", "VigilGatewayBrokerDisconnected", "VigilEventUndelivered",
          "VigilLostContact", "VigilDc09PathDown"}


def _scrape(gw):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.http_port, timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families, family, sample, **labels):
    for s in families[family].samples:
        if s.name == sample and s.labels == labels:
            return s.value
    raise AssertionError("no %s%s" % (sample, labels))


@pytest.fixture
def gateway_with_destinations(gateway_factory, tmp_path):
    """A gateway with a webhook and a DC-09 receiver configured (neither answers), its broker
    not started yet."""
    write_secret(tmp_path / "hook.secret", "webhook-secret\n")
    port = free_port()
    gw = gateway_factory(port, forward={"max_event_age_s": 30.0},
                         **{"forward.webhook": {"url": "https://127.0.0.1:9/hook",
                                                "secret_file": str(tmp_path / "hook.secret")},
                            "forward.dc09": {"host": "127.0.0.1", "port": free_port(),
                                             "account": "1234"}})
    gw.add_device(0x0000000A, key_for(0x0000000A))
    return gw, port


def test_every_series_exists_from_the_start(gateway_with_destinations, mosquitto_factory):
    gw, port = gateway_with_destinations
    gw.start(wait=False)  # no broker yet: /metrics answers all the same
    wait_for(lambda: _up(gw), 20, "/metrics")
    families = _scrape(gw)
    assert _value(families, "vigil_gateway_mqtt_connected", "vigil_gateway_mqtt_connected") == 0
    counters = [f for f in families.values() if f.type == "counter"]
    assert len(counters) > 10
    for family in counters:  # counters are counters: samples named <name>_total
        assert all(s.name == family.name + "_total" for s in family.samples), family.name
    for reason in REASONS:
        assert _value(families, "vigil_gateway_rejections", "vigil_gateway_rejections_total",
                      reason=reason) == 0
    for result in ("new", "retransmission", "rejected", "status"):
        assert _value(families, "vigil_gateway_frames", "vigil_gateway_frames_total",
                      result=result) == 0
    for destination in ("webhook", "dc09"):
        for result in ("delivered", "failed"):
            assert families["vigil_gateway_forward_attempts"].type == "counter"
            _value(families, "vigil_gateway_forward_attempts",
                   "vigil_gateway_forward_attempts_total", destination=destination,
                   result=result)
        for reason in ("too_old", "refused"):
            _value(families, "vigil_gateway_forward_alerts", "vigil_gateway_forward_alerts_total",
                   destination=destination, reason=reason)
    assert _value(families, "vigil_gateway_forward_overdue", "vigil_gateway_forward_overdue") == 0
    assert _value(families, "vigil_gateway_devices", "vigil_gateway_devices",
                  state="lost_contact") == 0
    assert _value(families, "vigil_gateway_devices", "vigil_gateway_devices", state="active") == 1
    assert _value(families, "vigil_gateway_dc09_link_up", "vigil_gateway_dc09_link_up") == 0
    assert _value(families, "vigil_gateway_store_errors", "vigil_gateway_store_errors_total") == 0
    assert families["vigil_gateway_ack_latency_seconds"].type == "histogram"
    assert families["vigil_gateway_mqtt_connected"].type == "gauge"
    # Process and build info.
    assert _value(families, "process_start_time_seconds", "process_start_time_seconds") > 0
    assert _value(families, "process_resident_memory_bytes", "process_resident_memory_bytes") > 0
    info = families["vigil_gateway_build_info"].samples[0]
    assert info.value == 1 and info.labels["version"] and info.labels["python"]
    assert "python_info" in families
    # The broker comes up: connected, one connection counted.
    mosquitto_factory(port=port)
    wait_for(lambda: gw.get("/healthz")[0] == 200, 20, "the gateway to connect")
    families = _scrape(gw)
    assert _value(families, "vigil_gateway_mqtt_connected", "vigil_gateway_mqtt_connected") == 1
    assert _value(families, "vigil_gateway_mqtt_connects",
                  "vigil_gateway_mqtt_connects_total") == 1


def _up(gw):
    try:
        return gw.get("/metrics")[0] == 200
    except OSError:
        return False


def _rules():
    with open(RULES) as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


def test_the_alert_rules_name_only_series_the_gateway_exports(gateway_with_destinations):
    gw, _ = gateway_with_destinations
    gw.start(wait=False)
    wait_for(lambda: _up(gw), 20, "/metrics")
    samples = {s.name for f in _scrape(gw).values() for s in f.samples}
    rules = _rules()
    assert NEEDED <= {r["alert"] for r in rules}
    for rule in rules:
        names = set(re.findall(r"\b(vigil_gateway_[a-z0-9_]+)", rule["expr"]))
        assert names or rule["expr"].startswith("up{"), rule["alert"]
        assert names <= samples, (rule["alert"], names - samples)
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


# make setup puts promtool in .venv/bin where the system has none (the Makefile's promtool).
PROMTOOL = shutil.which("promtool") or shutil.which("promtool", path=os.path.dirname(
    sys.executable))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make setup fetches it "
                                             "from Debian's prometheus package)")
def test_promtool_accepts_the_alert_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: %d rules found" % len(_rules()) in result.stdout
