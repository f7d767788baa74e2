# The real gateway forwarding to a real ARC receiver (pysiaalarm's) over SIA DC-09 with AES:
# an event the receiver cannot take raises the age alert and waits; once the receiver is up it
# is delivered, the wearable gets DELIVERED, and NULL link tests keep the link gauge up.
import os
import queue
import sys
import time

import pytest

import vigil_protocol as p

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import (  # noqa: E402
    Device, GatewayProcess, key_for, wait_for, write_secret)
from sia_receiver import start_receiver  # noqa: E402
from vigil_tools.broker import free_port  # noqa: E402

DEV = 0x00C0FFEE
KEY = key_for(DEV)
AES_KEY = "0123456789ABCDEF0123456789ABCDEF"


def test_arc_down_then_up(tmp_path, mosquitto):
    port = free_port()
    # the key file as ARCs issue keys: hex digits (here those of pysiaalarm's key string)
    write_secret(tmp_path / "arc.key", AES_KEY.encode().hex() + "\n")
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, mqtt={"prefix": "fwd-dc09"},
                        forward={"backoff_min_s": 0.05, "backoff_max_s": 0.3,
                                 "max_event_age_s": 0.5},
                        **{"forward.dc09": {"host": "127.0.0.1", "port": port,
                                            "account": "1234AB",
                                            "key_file": str(tmp_path / "arc.key"),
                                            "null_interval_s": 0.2}})
    gw.add_device(DEV, KEY)
    gw.cli("wearer", "set", "%08x" % DEV, "--name", "W", "--zone", "12")
    gw.start()
    device = Device(mosquitto.port, DEV, KEY, prefix="fwd-dc09", client_id="fwd-dc09")
    receiver = None
    try:
        sos = device.next_counter()
        device.publish(p.encode(p.Alarm(DEV, sos, p.SOS, location=(515007000, -1246000, 9)),
                                device.key))
        device.wait_acked([sos])
        wait_for(lambda: gw.metrics().get(
            'vigil_gateway_forward_alerts_total{destination="dc09",reason="too_old"}', 0) == 1,
            what="the age alert")
        assert gw.metrics()["vigil_gateway_forward_overdue"] == 1
        assert any(e["event"] == "forward_overdue" for e in gw.log_events())
        assert "PENDING" in gw.cli("outbox").stdout   # still queued
        events = queue.Queue()
        receiver = start_receiver(port, {"1234AB": AES_KEY}, events)
        got = events.get(timeout=20)
        while got.code == "RP":  # a NULL link test may come first
            got = events.get(timeout=20)
        assert (got.code, got.account) == ("PA", "1234AB")
        assert got.message.startswith("012")                       # the wearer's zone
        assert "Y51N30.042" in got.x_data and "X000W07.476" in got.x_data
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = device.downlinks.get(timeout=10)
            if isinstance(frame, p.Ack) and frame.stage == p.DELIVERED:
                assert frame.ref == sos
                break
        else:
            pytest.fail("no DELIVERED downlink")
        wait_for(lambda: gw.metrics().get("vigil_gateway_dc09_link_up") == 1,
                 what="NULL link tests answered")
        back = [e for e in gw.log_events() if e["event"] == "forward_link_back"]
        assert back and back[0]["destination"] == "dc09"   # the queue went at once
        wait_for(lambda: gw.metrics()["vigil_gateway_forward_overdue"] == 0,
                 what="nothing overdue")
        assert AES_KEY not in gw.log() and AES_KEY.encode().hex() not in gw.log().lower()
    finally:
        device.close()
        gw.stop()
        if receiver is not None:
            receiver.stop()


def test_primary_receiver_dead_the_backup_gets_it(tmp_path, mosquitto):
    """[forward.dc09] backup_host/backup_port: with nothing on the primary, the alarm reaches
    the secondary receiver; each path's state is on /metrics and the dead one is an alert."""
    backup_port = free_port()
    write_secret(tmp_path / "arc.key", AES_KEY.encode().hex() + "\n")
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, mqtt={"prefix": "fwd-dc09b"},
                        forward={"backoff_min_s": 0.05, "backoff_max_s": 0.3},
                        **{"forward.dc09": {"host": "127.0.0.1", "port": free_port(),
                                            "backup_host": "127.0.0.1",
                                            "backup_port": backup_port,
                                            "account": "1234AB",
                                            "key_file": str(tmp_path / "arc.key"),
                                            "null_interval_s": 0.2}})
    gw.add_device(DEV, KEY)
    gw.cli("wearer", "set", "%08x" % DEV, "--name", "W", "--zone", "12")
    events = queue.Queue()
    backup = start_receiver(backup_port, {"1234AB": AES_KEY}, events)
    gw.start()
    device = Device(mosquitto.port, DEV, KEY, prefix="fwd-dc09b", client_id="fwd-dc09b")
    try:
        sos = device.next_counter()
        device.publish(p.encode(p.Alarm(DEV, sos, p.SOS), device.key))
        got = events.get(timeout=20)
        while got.code == "RP":  # a NULL link test may come first
            got = events.get(timeout=20)
        assert (got.code, got.account) == ("PA", "1234AB")
        wait_for(lambda: gw.metrics().get('vigil_gateway_dc09_path_up{path="secondary"}') == 1
                 and gw.metrics().get('vigil_gateway_dc09_path_up{path="primary"}') == 0,
                 what="each path's state")
        assert gw.metrics()["vigil_gateway_dc09_link_up"] == 1
        assert any(e["event"] == "dc09_path_down" and e["path"] == "primary"
                   for e in gw.log_events())
    finally:
        device.close()
        gw.stop()
        backup.stop()
