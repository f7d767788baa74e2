# A stored downlink (a responder action, a DELIVERED ack) must reach a wearable whose downlink
# window has moved past the counter it was first signed with. The wearable here
# (window_wearable.py) judges every downlink with the firmware's own replay window
# (firmware/vigil_fw/seen.py, SeenDownlinks, on CPython over a flash folder) and answers every
# stored downlink that verifies - new or a repeat - with a receipt, as the firmware's
# app.on_downlink does; the gateway is the real `vigil gateway run` on a real Mosquitto.
#   * normal running: the action's copy is lost with the broker's memory, the wearable comes
#     back and takes 40 fresh acks before the action is offered again: the action's counter is
#     then below the wearable's window, and only a fresh signature gets it through;
#   * restore: a backup holding two unconfirmed actions, the box lost (broker memory and
#     gateway disk), `vigil gateway restore`: the restored gateway's acks jump past everything
#     the wearable has seen, and the two actions reach it all the same, in their order;
#   * the real firmware (`vigil sim`, MicroPython unix port) after a restore: an action it had
#     taken after the backup comes again under a fresh counter and changes nothing (alarms.py:
#     a repeated action is a no-op), the dispatch made after the restore is felt.
import shutil
import sqlite3
import time

import pytest

import vigil_protocol as p
from gateway_harness import key_for, wait_for, write_secret
from vigil_gateway import backup as backup_module
from vigil_gateway.downlinks import REOFFER_S
from vigil_responder import ActionsClient
from window_wearable import SeenDownlinks, WindowWearable

DEV = 0x00E0E0E0
KEY = key_for(DEV)
TOKEN = "downlink-window-token-0123456789"


def _stored_rows(gw):
    """The gateway's stored downlinks as its database holds them (read-only)."""
    conn = sqlite3.connect("file:%s?mode=ro" % (gw.dir / "data" / "gateway.db"), uri=True)
    try:
        return conn.execute("SELECT id, counter, kind, code, frame, mqtt_sent_at, confirmed_at "
                            "FROM downlinks ORDER BY id").fetchall()
    finally:
        conn.close()


def _power_cut(broker, gw=None):
    """The broker dies and its saved state with it: what it held for sessions is gone. With
    `gw` (running): until that gateway has connected again (and subscribed: a new session)."""
    connects = gw.metrics()["vigil_gateway_mqtt_connects_total"] if gw else 0
    broker.proc.kill()
    broker.proc.wait()
    for saved in broker.dir.glob("mosquitto.db*"):
        saved.unlink()
    broker.start()
    if gw is not None:
        wait_for(lambda: gw.metrics()["vigil_gateway_mqtt_connects_total"] > connects and
                 gw.get("/healthz")[0] == 200, 15, "the gateway back on the broker")


def _sent(gw, what):
    return gw.metrics().get('vigil_gateway_downlinks_total{path="mqtt",what="%s"}' % what, 0)


@pytest.fixture
def site(mosquitto_factory, gateway_factory, tmp_path):
    broker = mosquitto_factory()
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(broker.port, actions={"tokens_file": str(tmp_path / "tokens")})
    gw.add_device(DEV, KEY)
    gw.start()
    api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN)
    return broker, gw, api


def _sos(gw, wearable):
    frame = wearable.alarm2()
    counter = wearable.counter
    wearable.publish(frame)
    wearable.wait_acked([counter])
    wait_for(lambda: any(i["counter"] == counter for i in gw.incidents()), what="the incident")
    return counter, next(i["id"] for i in gw.incidents() if i["counter"] == counter)


def _wait_actions(wearable, n, what, timeout=15):
    """Until the wearable has taken n actions; else what its window refused meanwhile."""
    try:
        wait_for(lambda: len(wearable.actions_taken()) >= n, timeout, what)
    except AssertionError as exc:
        raise AssertionError("%s; the wearable's window refused %s" % (exc, wearable.refused)
                             ) from None


def _act(api, incident, action):
    status, body = api.act(incident, action)
    assert status == 200 and body["effect"] == "applied", body


def test_an_action_stranded_below_the_wearables_window_is_signed_afresh_and_taken(
        site, tmp_path):
    broker, gw, api = site
    flash = tmp_path / "unit-flash"
    wearable = WindowWearable(broker.port, DEV, KEY, flash)
    try:
        alarm, incident = _sos(gw, wearable)
    finally:
        wearable.close()  # away; its persistent session stays at the broker
    counter_before = wearable.counter

    _act(api, incident, "acknowledge")
    wait_for(lambda: _sent(gw, "ACKNOWLEDGED") == 1, 15, "the broker to take the action")
    handed_at = time.monotonic()
    [(row_id, old_counter, _, _, old_frame, _, _)] = [r for r in _stored_rows(gw)
                                                      if r[2] == "action"]
    _power_cut(broker, gw)  # the action, queued for the wearable's session, is lost

    # The wearable comes back with plenty to say: 40 check-ins, 40 fresh acks, all before the
    # action may be offered again (its wait, REOFFER_S[0], runs from the broker's PUBACK).
    wearable = WindowWearable(broker.port, DEV, KEY, flash)
    try:
        wearable.counter = counter_before
        first = wearable.counter + 1
        for _ in range(40):
            wearable.publish(wearable.checkin2())
        wearable.wait_acked(range(first, first + 40))
        assert time.monotonic() - handed_at < REOFFER_S[0], \
            "too slow to show the case: the action was offered again amid the check-ins"
        assert wearable.actions_taken() == []
        # The firmware's window now refuses the action's first signature outright.
        assert wearable.seen.window.top >= old_counter + SeenDownlinks.SIZE
        with pytest.raises(p.StaleCounter):
            frame = p.decode(old_frame, wearable.key, p.DOWN)
            wearable.seen.check(frame.counter, frame.tag)

        # Its wait over, the next check-in has the gateway offer the action again.
        time.sleep(max(0.0, REOFFER_S[0] + 0.5 - (time.monotonic() - handed_at)))
        wearable.publish(wearable.checkin2())
        _wait_actions(wearable, 1, "the wearable to take the ACKNOWLEDGED action")
        [taken] = wearable.actions_taken()
        assert (taken.ref, taken.action) == (alarm, p.ACKNOWLEDGED)
        assert taken.counter > old_counter + SeenDownlinks.SIZE  # a fresh signature
        assert wearable.refused == []  # the stale bytes were never sent again
        # Its receipt names the new counter, and confirms the stored row.
        wait_for(lambda: [r for r in _stored_rows(gw) if r[0] == row_id][0][6] is not None,
                 10, "the receipt to confirm the action")
        [row] = [r for r in _stored_rows(gw) if r[0] == row_id]
        assert row[1] == taken.counter
        events = [e for e in gw.log_events() if e["event"] == "downlink_signed_again"]
        assert [(e["old_counter"], e["counter"]) for e in events] == [
            (old_counter, taken.counter)]
        # Every counter the gateway signed the device's downlinks with, once each.
        counters = [f.counter for f in wearable.taken]
        assert len(counters) == len(set(counters))
    finally:
        wearable.close()


def test_unconfirmed_actions_in_a_backup_reach_the_wearable_after_restore(
        site, tmp_path):
    broker, gw, api = site
    flash = tmp_path / "unit-flash"
    wearable = WindowWearable(broker.port, DEV, KEY, flash)
    try:
        alarm, incident = _sos(gw, wearable)
    finally:
        wearable.close()
    counter_before = wearable.counter
    _act(api, incident, "acknowledge")
    _act(api, incident, "help_dispatched")
    wait_for(lambda: _sent(gw, "ACKNOWLEDGED") == 1 and _sent(gw, "HELP_DISPATCHED") == 1, 15,
             "the broker to take both actions")
    handed_at = time.monotonic()
    backup = tmp_path / "backup"
    gw.cli("backup", str(backup))  # both sent (the broker took them), neither confirmed
    old = {r[3]: r[1] for r in _stored_rows(gw) if r[2] == "action"}

    # The box is lost: the gateway's disk, and the broker's memory with the queued actions.
    gw.kill()
    shutil.rmtree(gw.dir / "data")
    _power_cut(broker)
    out = gw.cli("restore", str(backup)).stdout
    assert "2 stored downlinks the wearables may not have signed again" in out, out
    # Signed again at the restore, above the moved counters, and to go out at once.
    again = [r for r in _stored_rows(gw) if r[2] == "action"]
    assert [r[3] for r in again] == [p.ACKNOWLEDGED, p.HELP_DISPATCHED]
    assert all(r[1] > backup_module.DOWNLINK_MARGIN + max(old.values()) for r in again)
    assert all(r[5] is None for r in again)
    gw.start()

    wearable = WindowWearable(broker.port, DEV, KEY, flash)
    try:
        wearable.counter = counter_before
        # (past the wait after which an unconfirmed one is offered again, had it kept its
        # first signature)
        time.sleep(max(0.0, REOFFER_S[0] + 0.5 - (time.monotonic() - handed_at)))
        wearable.publish(wearable.checkin2())
        wearable.wait_acked([wearable.counter])
        _wait_actions(wearable, 2, "both actions at the wearable")
        taken = wearable.actions_taken()
        assert [(f.ref, f.action) for f in taken] == [(alarm, p.ACKNOWLEDGED),
                                                     (alarm, p.HELP_DISPATCHED)]
        assert all(f.counter > max(old.values()) + SeenDownlinks.SIZE for f in taken)
        assert taken[0].counter < taken[1].counter  # signed again in the order they were made
        wait_for(lambda: all(r[6] is not None for r in _stored_rows(gw) if r[2] == "action"),
                 10, "their receipts to confirm both")
        assert wearable.refused == []
        counters = [f.counter for f in wearable.taken]
        assert len(counters) == len(set(counters))
    finally:
        wearable.close()


# -- the real firmware (`vigil sim`: the wearable's core on the MicroPython unix port) --------

def _sim(record, broker, state, script):
    from vigil_cli import vigil

    path = state.parent / "script.txt"
    path.write_text(script)
    proc = vigil("sim", "--device-file", record, "--script", path, "--mqtt-port", broker.port,
                 "--state-dir", state, "--quick", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _rx(out, key):
    """The downlinks the firmware took (each verified NEW one is logged once)."""
    frames = [p.decode(bytes.fromhex(line.split()[-1]), key, p.DOWN)
              for line in out.splitlines() if line.startswith("vigil: rx ")]
    return [(f.counter, f.code_name) for f in frames if f.code_name != "RECEIVED"]


def _felt(out):
    return [line.split()[-1] for line in out.splitlines() if line.startswith("vigil: feedback ")]


def test_the_firmware_takes_a_restored_action_it_had_already_as_a_no_op(
        mosquitto_factory, gateway_factory, tmp_path):
    import json

    from vigil_cli import vigil

    broker = mosquitto_factory()
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(broker.port, actions={"tokens_file": str(tmp_path / "tokens")})
    record = tmp_path / "unit.json"
    assert vigil("keygen", "--out", record).returncode == 0
    gw.cli("device", "import", str(record))
    key = p.DeviceKey(bytes.fromhex(json.loads(record.read_text())["key"]))
    gw.start()
    api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN)
    state = tmp_path / "unit-flash"
    assert "sim: every alarm acknowledged" in _sim(record, broker, state,
                                                   "sos\nwait-acked 20000\n")
    [incident] = gw.incidents()
    _act(api, incident["id"], "acknowledge")
    wait_for(lambda: _sent(gw, "ACKNOWLEDGED") == 1, 15, "the broker to take the action")
    backup = tmp_path / "backup"
    gw.cli("backup", str(backup))  # the action in it: sent, not confirmed

    # After the backup the gateway goes on: the wearable takes the action and the wearer feels
    # it (whatever its receipt did there, the backup never learns of it).
    second = _sim(record, broker, state, "wait 4000\n")
    assert [code for _, code in _rx(second, key)] == ["ACKNOWLEDGED"], second
    assert _felt(second) == ["acknowledged"], second
    confirmed = 'vigil_gateway_downlink_receipts_total{outcome="confirmed"}'

    # The box is lost; the backup is restored, and a responder dispatches help.
    gw.kill()
    shutil.rmtree(gw.dir / "data")
    _power_cut(broker)
    gw.cli("restore", str(backup))
    gw.start()
    _act(api, incident["id"], "help_dispatched")
    third = _sim(record, broker, state, "wait 6000\n")
    got = _rx(third, key)
    # The action signed again is taken as new (its old counter would be stale now), and
    # changes nothing: the wearer feels the dispatch, and the acknowledgement not again.
    assert [code for _, code in got] == ["ACKNOWLEDGED", "HELP_DISPATCHED"], third
    assert all(counter > backup_module.DOWNLINK_MARGIN for counter, _ in got)
    assert _felt(third) == ["help_dispatched"], third
    assert "rx rejected" not in third, third
    wait_for(lambda: gw.metrics().get(confirmed) == 2, 10, "both receipts")
