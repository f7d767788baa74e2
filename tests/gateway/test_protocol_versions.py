# Migration from protocol v1 to v2 at the gateway: v1 units keep working until re-flashed, a
# unit's first v2 frame moves its downlinks to v2 for good, and v1 can be switched off.
import json
import sqlite3

import pytest

import vigil_protocol as p
from gateway_harness import key_for
from test_pipeline import DEV, KEY, TOPIC, Site
from vigil_gateway.db import open_database
from vigil_gateway.downlinks import ACTION, Downlinks
from vigil_gateway.errors import RegistryError
from vigil_gateway.pipeline import Message, Pipeline
from vigil_gateway.registry import Registry, provisioning_record
from vigil_gateway.topics import Topics

OLD = 0x000001D1  # a unit still on v1 firmware
OLD_KEY = key_for(OLD)
OLD_TOPIC = "vigil/up/000001d1"


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    site.registry.add(OLD, OLD_KEY, protocol=1)
    return site


def version_of(frame):
    return 2 if frame[0] == 0x20 else frame[0] >> 4


def send_old(site, *frames):
    return site.pipeline.process([Message(OLD_TOPIC, f) for f in frames])


def action_frame(site, device_id):
    downlinks = Downlinks(site.conn, site.registry, site.pipeline)
    site.store.begin()
    made = downlinks.make(device_id, 1, ACTION, p.PROMPT_DOUBLE_TAP, site.clock())
    site.conn.commit_or_rollback()
    return made.frame


def test_a_v1_unit_is_answered_in_v1_and_its_actions_stay_v1(site):
    alarm = p.encode(p.Alarm(OLD, 1, p.SOS), OLD_KEY)
    [outcome] = send_old(site, alarm)
    assert outcome.result == "new" and version_of(outcome.downlink[1]) == 1
    assert p.decode(outcome.downlink[1], OLD_KEY, p.DOWN).ref == 1
    assert site.registry.get(OLD).protocol == 1
    assert version_of(action_frame(site, OLD)) == 1


def test_the_first_v2_frame_moves_a_unit_to_v2_for_good(site):
    # Re-flashed: its outbox may still hold a v1 alarm, resent as it was sealed.
    legacy = p.encode(p.Alarm(OLD, 5, p.DURESS), OLD_KEY)
    checkin = p.encode(p.CheckIn(OLD, 9, battery=80, interval=60), OLD_KEY, 2)
    outcomes = send_old(site, checkin, legacy)
    assert [o.result for o in outcomes] == ["new", "new"]
    # Each ack in its uplink's version: the legacy frame's sender may read v1 only.
    assert [version_of(o.downlink[1]) for o in outcomes] == [2, 1]
    assert site.registry.get(OLD).protocol == 2
    assert version_of(action_frame(site, OLD)) == 2
    # A v1 frame later (a retransmission of the legacy alarm) does not bring it back down.
    assert send_old(site, legacy)[0].result == "retransmission"
    site.restart()
    assert site.registry.get(OLD).protocol == 2


def test_new_devices_are_v2_and_their_acks_are_sealed(site):
    assert site.registry.get(DEV).protocol == 2
    [outcome] = site.send(p.encode(p.Alarm(DEV, 1, p.DURESS), KEY, 2))
    assert outcome.result == "new" and version_of(outcome.downlink[1]) == 2
    assert len(outcome.downlink[1]) == 22  # an ack, a size shared with every action
    assert version_of(action_frame(site, DEV)) == 2


def test_v1_switched_off_rejects_v1_frames_with_a_reason_and_a_count(site):
    site.pipeline = Pipeline(site.registry, site.store, Topics("vigil"), site.metrics,
                             site.clock, accept_v1=False)
    results = [o.reason or o.result for o in send_old(
        site, p.encode(p.Alarm(OLD, 1, p.SOS), OLD_KEY),
        p.encode(p.Alarm(OLD, 2, p.SOS), OLD_KEY, 2))]
    assert results == ["v1_disabled", "new"]
    assert site.metrics.rejections.get("v1_disabled") == 1
    assert site.store.frame_count() == 1


def test_a_database_from_before_v2_gets_the_protocol_column(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "gateway.db"))
    conn.execute("CREATE TABLE devices (device_id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
                 "key_version INTEGER NOT NULL, mqtt_password_hash TEXT, interval_s INTEGER, "
                 "label TEXT NOT NULL DEFAULT '', added_at REAL NOT NULL, "
                 "updated_at REAL NOT NULL)")
    conn.execute("INSERT INTO devices VALUES (66, 'active', 1, NULL, 60, 'van', 1.0, 1.0)")
    conn.commit()
    conn.close()
    registry = Registry(open_database(str(tmp_path)), str(tmp_path / "keys"))
    device = registry.get(66)
    assert (device.label, device.protocol) == ("van", 1)


def test_provisioning_records_say_their_protocol(tmp_path):
    registry = Registry(open_database(str(tmp_path)), str(tmp_path / "keys"))
    record = json.loads(provisioning_record(0x42, key_for(0x42), "pw"))
    assert record["protocol"] == 2
    assert registry.import_record(record).protocol == 2
    older = dict(record, device_id="00000043")
    del older["protocol"]
    assert registry.import_record(older).protocol == 1
    with pytest.raises(RegistryError, match="protocol"):
        registry.import_record(dict(record, device_id="00000044", protocol=3))
