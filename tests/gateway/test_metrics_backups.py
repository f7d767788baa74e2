# The scheduled backups on /metrics, and the alert on them: a running gateway reads its backup
# folder ([backup] dir; the default, beside data_dir, here) at each scrape and exports
# vigil_gateway_backups (complete backups) and vigil_gateway_backup_newest_timestamp_seconds
# (the newest one's time, from its folder's name; 0 with none, the folder missing or not a
# folder). What `vigil gateway backup --rotate` (the timer's command) makes shows at the next
# scrape; a partial folder or one without a manifest does not count. VigilBackupMissing, in the
# shipped rules, is run through `promtool test rules`: it fires for a gateway whose newest
# backup is over 27 h old for 15 minutes, and for one that never had a backup, and not for one
# whose daily backups go on.
import calendar
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway_harness import key_for, wait_for
from vigil_gateway import backup

RULES = Path(__file__).resolve().parents[2] / "gateway" / "deploy" / "prometheus-alerts.yml"
PROMTOOL = shutil.which("promtool") or shutil.which("promtool", path=os.path.dirname(
    sys.executable))
NEWEST = "vigil_gateway_backup_newest_timestamp_seconds"


def _backups(gw):
    """(vigil_gateway_backups, vigil_gateway_backup_newest_timestamp_seconds) as scraped."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.http_port, timeout=5) as r:
        text = r.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("vigil_gateway_backups", NEWEST):
            assert family.type == "gauge", family.name
            [sample] = family.samples
            values[family.name] = sample.value
    return values["vigil_gateway_backups"], values[NEWEST]


def _up(gw):
    try:
        return gw.get("/metrics")[0] == 200
    except OSError:
        return False


def test_the_backup_folder_is_read_at_each_scrape(gateway_factory):
    gw = gateway_factory(1)  # no broker: /metrics answers all the same
    gw.add_device(0x0000000A, key_for(0x0000000A))
    folder = gw.dir / "backups"
    gw.start(wait=False)
    wait_for(lambda: _up(gw), 20, "/metrics")
    assert _backups(gw) == (0, 0)  # no folder yet: no backup
    before = int(time.time())
    out = gw.cli("backup", "--rotate").stdout
    after = time.time()
    [name] = os.listdir(folder)
    assert name in out
    count, newest = _backups(gw)
    assert count == 1
    assert newest == calendar.timegm(time.strptime(name, "%Y%m%dT%H%M%SZ"))
    assert before <= newest <= after
    # neither a run killed midway nor a folder without a manifest is a backup
    (folder / (backup.PARTIAL + "20991231T000000Z")).mkdir()
    (folder / "20991231T000001Z").mkdir()
    assert _backups(gw) == (1, newest)
    gw.cli("backup", "--rotate")
    count, second = _backups(gw)
    assert count == 2 and second >= newest
    manifest = json.loads((folder / name / backup.MANIFEST).read_text())
    assert manifest["devices"] == 1
    # the folder gone, or a file in its place: none, and the scrape still answers
    shutil.rmtree(folder)
    assert _backups(gw) == (0, 0)
    folder.write_text("not a folder\n")
    assert _backups(gw) == (0, 0)
    assert gw.proc.poll() is None


def _alert(instance):
    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r["alert"] == "VigilBackupMissing")
    return {"exp_labels": {"severity": rule["labels"]["severity"], "instance": instance,
                           "job": "vigil-gateway"},
            "exp_annotations": {
                "summary": rule["annotations"]["summary"].replace("{{ $labels.instance }}",
                                                                  instance),
                "description": rule["annotations"]["description"]}}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (make setup fetches it "
                                             "from Debian's prometheus package)")
def test_the_alert_fires_when_the_daily_backups_stop(tmp_path):
    hour = 3600
    series = 'vigil_gateway_backup_newest_timestamp_seconds{instance="%s",job="vigil-gateway"}'
    # one sample a minute from time 0 (promtool's time() starts there), 40 hours of them
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            # a backup at 1 h, then none: over 27 h old from 28 h on
            {"series": series % "stopped", "values": "%dx2400" % hour},
            # a backup at 1 h and one at 25 h: 5 h old at 30 h
            {"series": series % "daily", "values": "%dx1439 %dx960" % (hour, 25 * hour)},
            # never one: 0, over 27 h "old" from 27 h on
            {"series": series % "never", "values": "0x2400"},
        ],
        "alert_rule_test": [
            {"eval_time": "26h", "alertname": "VigilBackupMissing", "exp_alerts": []},
            # stopped has been over 27 h old for 5 minutes only: not yet (for: 15m)
            {"eval_time": "28h5m", "alertname": "VigilBackupMissing",
             "exp_alerts": [_alert("never")]},
            {"eval_time": "30h", "alertname": "VigilBackupMissing",
             "exp_alerts": [_alert("stopped"), _alert("never")]},
        ],
    }]}
    path = tmp_path / "backup-alert-test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
