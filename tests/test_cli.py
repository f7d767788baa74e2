# The `vigil` command through its real entry point (the installed console script).
import json
import re
import subprocess

from vigil_cli import vigil


def vectors(root):
    return json.loads((root / "protocol" / "vectors.json").read_text())["vectors"]


def test_frame_decode_agrees_with_every_golden_vector(root):
    # Every vector through the report the command prints; one of each version and outcome
    # through the real entry point as well (a process per vector would take a minute).
    from vigil_tools.frame_cmd import describe

    through_cli = {}
    for v in vectors(root):
        report = describe(bytes.fromhex(v["frame"]), bytes.fromhex(v["key"]), v["direction"])
        if v["valid"]:
            assert (report["valid"], report["fields"]) == (True, v["fields"]), v["name"]
        else:
            assert (report["valid"], report["error"]) == (False, v["error"]), v["name"]
        through_cli.setdefault((v["version"], v.get("error", v["type"])), v)
    assert len(through_cli) >= 20
    for v in through_cli.values():
        proc = vigil("frame", "decode", v["frame"], "--key", v["key"], "--direction",
                     v["direction"], "--json")
        report = json.loads(proc.stdout)
        if v["valid"]:
            assert (proc.returncode, report["fields"]) == (0, v["fields"]), v["name"]
        else:
            assert (proc.returncode, report["error"]) == (1, v["error"]), v["name"]


def test_frame_decode_reads_the_key_from_a_file_and_never_prints_it(root, tmp_path):
    v = next(v for v in vectors(root) if v["name"] == "alarm_duress")
    key_file = tmp_path / "device.key"
    key_file.write_text(v["key"] + "\n")
    proc = vigil("frame", "decode", v["frame"], "--key-file", str(key_file))
    assert proc.returncode == 0
    assert "DURESS" in proc.stdout
    assert v["key"] not in proc.stdout + proc.stderr


def test_frame_decode_without_key_shows_the_header_only(root):
    v = next(v for v in vectors(root) if v["name"] == "checkin_plain")
    report = json.loads(vigil("frame", "decode", v["frame"], "--json").stdout)
    assert report["type"] == "checkin" and report["valid"] is None


def test_frame_decode_bad_input_is_a_clear_error():
    proc = vigil("frame", "decode", "zz", "--key", "00" * 32)
    assert proc.returncode == 2 and "not hexadecimal" in proc.stderr
    proc = vigil("frame", "decode", "00" * 20, "--key", "00" * 8)
    assert proc.returncode == 2 and "32 bytes" in proc.stderr
    proc = vigil("frame", "decode", "00", "--key-file", "/nonexistent/key")
    assert proc.returncode == 2 and "cannot read the key file" in proc.stderr


def test_demo_runs_both_procedures_end_to_end_on_the_console():
    proc = vigil("demo", stdin=subprocess.DEVNULL)  # not a terminal: it ends after the script
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    opening = out[:out.index("Procedure 1")]  # the console comes first, to watch the rest
    assert re.search(r"console at http://127\.0\.0\.1:\d+/", opening)
    assert re.search(r"sign in as demo, password \S{8,}", opening)
    duress = out[out.index("Procedure 1"):out.index("Procedure 2")]
    assert "incident #1 (DURESS) in the alarms queue" in duress
    assert "the page: DURESS: do NOT contact the wearer" in duress
    controls = re.search(r"controls on the page: (.*); none", duress).group(1).split(", ")
    assert controls == ["police", "inform_contacts", "resolve"]
    assert "| Escalation contacts: Sam Example (site supervisor), +44 20 7946 0000." in duress
    assert "refuses a prompt crafted by hand (not sent)" in duress
    assert "refuses a prompt on duress too, asked directly: HTTP 409" in duress
    assert "robin: resolved: genuine alarm" in duress
    assert "plays" not in duress  # no pattern at all on the wearable
    assert "patterns played during the duress alarm (counter 1): none at all" in duress
    sos = out[out.index("Procedure 2"):]
    assert "incident #2 (SOS) tops the alarms queue" in sos
    assert "verifies a signed action PROMPT_DOUBLE_TAP" in sos
    assert "plays the 'prompt' pattern" in sos
    assert re.search(r"console +prompt sent .* by robin; .*played on the wearable", sos)
    assert "incident #2 is now 'needs_help'" in sos
    assert re.search(r"\d+ webhook events stored, \d+ duplicates ignored, 0 refused", sos)
    assert "both procedures went as they must" in out
    assert "stays up" not in out


def test_bench_protocol_prints_figures_and_a_key_value_line():
    proc = vigil("bench", "protocol", "--seconds", "0.05")
    assert proc.returncode == 0, proc.stderr
    last = dict(pair.split("=") for pair in proc.stdout.strip().splitlines()[-1].split())
    for key in ("encode_per_s", "decode_per_s", "baseline_hmac_per_s", "encode_ratio",
                "mpy_encode_heap_bytes", "mpy_decode_heap_bytes"):
        assert float(last[key]) > 0, key


def test_frame_decode_v2_without_key_shows_version_device_and_counter_only(root):
    for name in ("v2_alarm_duress", "v2_checkin_plain", "v2_ack_received"):
        v = next(v for v in vectors(root) if v["name"] == name)
        proc = vigil("frame", "decode", v["frame"], "--json")
        report = json.loads(proc.stdout)
        assert proc.returncode == 0
        assert set(report) == {"length", "version", "device_id", "device_hex", "counter",
                               "valid", "detail"}
        assert (report["version"], report["counter"], report["valid"]) == (
            2, v["fields"]["counter"], None)
        assert "DURESS" not in proc.stdout and "alarm" not in proc.stdout


def test_frame_decode_v2_with_key_finds_the_direction_and_explains_rejections(root):
    ack = next(v for v in vectors(root) if v["name"] == "v2_ack_delivered")
    report = json.loads(vigil("frame", "decode", ack["frame"], "--key", ack["key"],
                              "--json").stdout)
    assert (report["type"], report["direction"], report["fields"]) == ("ack", "down",
                                                                       ack["fields"])
    duress = next(v for v in vectors(root) if v["name"] == "v2_alarm_duress")
    proc = vigil("frame", "decode", duress["frame"], "--key", duress["key"])
    assert proc.returncode == 0 and "DURESS" in proc.stdout and "version    2" in proc.stdout
    assert duress["key"] not in proc.stdout + proc.stderr
    proc = vigil("frame", "decode", duress["frame"], "--key", duress["key"], "--direction",
                 "down", "--json")
    report = json.loads(proc.stdout)
    assert (proc.returncode, report["error"]) == (1, "wrong_direction")
    assert "type" not in report
    tampered = duress["frame"][:-2] + ("00" if duress["frame"][-2:] != "00" else "01")
    report = json.loads(vigil("frame", "decode", tampered, "--key", duress["key"],
                              "--json").stdout)
    assert (report["valid"], report["error"]) == (False, "bad_mac")
