# `vigil monitor`: the console of a board (a virtual one here), frames decoded and checked.
import json
import signal
import subprocess

from vigil_cli import VIGIL
from vigil_tools.monitor import annotate
from vigil_tools.virtual_board import VirtualBoard


def vector(root, name):
    return next(v for v in json.loads((root / "protocol" / "vectors.json").read_text())
                ["vectors"] if v["name"] == name)


def test_annotate_decodes_checks_and_explains(root):
    sos, ack = vector(root, "alarm_sos"), vector(root, "ack_received")
    key = bytes.fromhex(sos["key"])
    assert annotate("vigil: tx " + sos["frame"], key).endswith("kind=SOS, ref=0 (MAC ok)")
    assert "(MAC ok)" in annotate("vigil: rx " + ack["frame"], key)
    tampered = sos["frame"][:-2] + ("00" if sos["frame"][-2:] != "00" else "01")
    assert "REJECTED bad_mac" in annotate("vigil: raised " + tampered, key)
    assert "no key: MAC not checked" in annotate("vigil: tx " + sos["frame"])
    assert "REJECTED" in annotate("vigil: tx " + ack["frame"], key)  # a downlink sent up
    assert annotate("mqtt: connected to 127.0.0.1:1883", key) is None


def test_annotate_opens_a_v2_frame_only_with_its_key(root):
    duress, ack = vector(root, "v2_alarm_duress"), vector(root, "v2_ack_received")
    key = bytes.fromhex(duress["key"])
    assert "alarm up" in annotate("vigil: raised " + duress["frame"], key)
    assert "kind=DURESS" in annotate("vigil: tx " + duress["frame"], key)
    assert "stage=RECEIVED" in annotate("vigil: rx " + ack["frame"], key)
    # Without the key: the header, and not a word of what the frame is.
    sealed = annotate("vigil: tx " + duress["frame"])
    assert sealed.startswith("    = v2 frame up, device ") and "no key" in sealed
    assert "DURESS" not in sealed and "alarm" not in sealed


def watch(args, wanted, timeout=30):
    """Run `vigil monitor` until every text in `wanted` was printed, then Ctrl-C it."""
    proc = subprocess.Popen([VIGIL, "monitor", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if all(any(w in s for s in seen) for w in wanted):
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + rest, err


def test_monitor_shows_the_console_with_frames_decoded(root, tmp_path):
    sos, ack = vector(root, "alarm_sos"), vector(root, "ack_received")
    tampered = sos["frame"][:-2] + ("00" if sos["frame"][-2:] != "00" else "01")
    key_file = tmp_path / "device.key"
    key_file.write_text(sos["key"] + "\n")
    flash = tmp_path / "flash"
    flash.mkdir()
    # A board whose firmware keeps logging frames, as the wearable's does.
    (flash / "main.py").write_text(
        "import time\nwhile True:\n"
        "    print('vigil: raised %s')\n    print('vigil: rx %s')\n    print('vigil: tx %s')\n"
        "    time.sleep_ms(100)\n" % (sos["frame"], ack["frame"], tampered))
    with VirtualBoard(flash) as board:
        status, out, err = watch(["--port", board.port, "--key-file", key_file],
                                 ["kind=SOS, ref=0 (MAC ok)", "stage=RECEIVED",
                                  "REJECTED bad_mac"])
    assert status == 0, err
    assert "vigil: raised " + sos["frame"] in out
    assert sos["key"] not in out + err


def test_monitor_reset_shows_the_board_starting(tmp_path):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import time\nprint('firmware starting')\n"
                                   "while True:\n    time.sleep_ms(100)\n")
    with VirtualBoard(flash) as board:
        status, out, err = watch(["--port", board.port, "--reset"],
                                 ["soft reboot", "firmware starting"])
        assert board.resets >= 1
    assert status == 0, err
