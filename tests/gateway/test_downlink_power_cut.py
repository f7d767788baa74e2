# A power cut of the box that runs both the gateway and Mosquitto, with a DELIVERED ack and
# responder actions queued at the broker for a wearable that is away: the broker's memory is
# gone, the gateway had them all marked sent (the broker's PUBACK). The real firmware (`vigil
# sim`, the MicroPython unix port) comes back, checks in, and gets every one of them exactly
# once - offered again because no receipt came for them (SPEC section 3, receipts).
import json
import time

import pytest

import vigil_protocol as p
from gateway_harness import wait_for, write_secret
from vigil_cli import vigil
from vigil_gateway.downlinks import REOFFER_S
from vigil_responder import ActionsClient, ResponderBackend

SECRET = b"power-cut-secret-0123456789abcdef"
TOKEN = "power-cut-token-0123456789abcdef"


@pytest.fixture
def backend():
    b = ResponderBackend(SECRET, fail=True).start()  # down at first: no DELIVERED yet
    yield b
    b.stop()


def sim(record, broker, state, script):
    path = state.parent / "script.txt"
    path.write_text(script)
    proc = vigil("sim", "--device-file", record, "--script", path, "--mqtt-port", broker.port,
                 "--state-dir", state, "--quick", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def taken(out, key):
    """The downlinks the wearable took (each verified NEW one is logged once)."""
    frames = [p.decode(bytes.fromhex(line.split()[-1]), key, p.DOWN)
              for line in out.splitlines() if line.startswith("vigil: rx ")]
    return [(f.counter, f.NAME, f.code_name) for f in frames]


def test_a_power_cut_of_broker_and_gateway_loses_no_downlink(
        mosquitto_factory, gateway_factory, backend, tmp_path):
    broker = mosquitto_factory()
    write_secret(tmp_path / "secret", SECRET)
    write_secret(tmp_path / "tokens", "responder %s\n" % TOKEN)
    gw = gateway_factory(broker.port, forward={"backoff_min_s": 0.05, "backoff_max_s": 0.5},
                         **{"forward.webhook": {"url": backend.url,
                                                "secret_file": str(tmp_path / "secret")},
                            "actions": {"tokens_file": str(tmp_path / "tokens")}})
    record = tmp_path / "unit.json"
    assert vigil("keygen", "--out", record).returncode == 0
    gw.cli("device", "import", str(record))
    key = p.DeviceKey(bytes.fromhex(json.loads(record.read_text())["key"]))
    gw.start()
    state = tmp_path / "unit-flash"

    # The wearer's SOS reaches the gateway; then the wearable is away (its session stays).
    first = sim(record, broker, state, "sos\nwait-acked 20000\n")
    assert "sim: every alarm acknowledged" in first, first
    [incident] = gw.incidents()
    backend.fail = False  # the responder backend takes the alarm: DELIVERED for the wearer
    api = ActionsClient("http://127.0.0.1:%d" % gw.http_port, TOKEN)
    for action in ("acknowledge", "prompt_double_tap"):
        status, body = api.act(incident["id"], action)
        assert status == 200 and body["effect"] == "applied", body
    sent = 'vigil_gateway_downlinks_total{path="mqtt",what="%s"}'
    wait_for(lambda: all(gw.metrics().get(sent % what) == 1 for what in
                         ("DELIVERED", "ACKNOWLEDGED", "PROMPT_DOUBLE_TAP")), 20,
             "the broker to take all three for the wearable's session")
    handed_at = time.monotonic()

    # The power cut: gateway and broker die together, and what the broker held in memory
    # (the wearable's queued session) with them.
    gw.kill()
    broker.proc.kill()
    broker.proc.wait()
    for saved in broker.dir.glob("mosquitto.db*"):
        saved.unlink()
    broker.start()
    gw.start()
    time.sleep(max(0.0, REOFFER_S[0] - (time.monotonic() - handed_at)))

    # The wearable comes back and checks in: what it never confirmed is offered again.
    second = sim(record, broker, state, "wait 8000\n")
    got = taken(second, key)
    stored = [(c, n, code) for c, n, code in got if code != "RECEIVED"]
    assert sorted(code for _, _, code in stored) == [
        "ACKNOWLEDGED", "DELIVERED", "PROMPT_DOUBLE_TAP"], second
    assert len(set(stored)) == len(stored)  # each exactly once
    assert not [x for x in taken(first, key) if x[2] != "RECEIVED"]  # none before the cut
    # And the wearer felt the responder's answer and the prompt to tap twice, once each (a
    # DELIVERED after them shows nothing more: the alarm is past it).
    felt = [line.split()[-1] for line in second.splitlines()
            if line.startswith("vigil: feedback ")]
    assert felt.count("prompt") == 1 and felt.count("acknowledged") <= 1, second
    assert felt[-1] == "prompt"
    metrics = gw.metrics()
    assert metrics['vigil_gateway_downlink_receipts_total{outcome="offered_again"}'] >= 3
    wait_for(lambda: gw.metrics().get(
        'vigil_gateway_downlink_receipts_total{outcome="confirmed"}') == 3, 10,
        "the gateway to hold the wearable's three receipts")
