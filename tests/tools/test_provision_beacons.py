# The beacons setting `vigil provision` writes into the wearable's config (firmware/README.md,
# Config and Location): absent unless a scan length is given, written in full, checked with the
# firmware's own rules before the board is touched; the unit then starts with it on the virtual
# board (whose build has no BLE radio, so it says its scans are off and runs on).
import json

from vigil_cli import vigil
from vigil_tools.device_config import firmware_config_class


def provision(board, device_file, *extra):
    return vigil("provision", "--port", board.port, "--device-file", device_file,
                 "--mqtt-host", "127.0.0.1", "--no-register", *extra)


def on_board(board):
    return json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())


def firmware_reads(data):
    """What the firmware's own config check (firmware/vigil_fw/config.py, here on CPython)
    makes of the file: Config.beacons, (scan ms, at every check-in) or None."""
    config_class, _error = firmware_config_class()
    return config_class(data).beacons


def test_a_unit_gets_beacon_scans_only_when_given_and_the_firmware_reads_them_so(
        board, device_file):
    proc = provision(board, device_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "beacons" not in on_board(board)
    assert firmware_reads(on_board(board)) is None

    proc = provision(board, device_file, "--beacons-scan-ms", 1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_board(board)["beacons"] == {"scan_ms": 1200, "at_checkin": False}
    assert firmware_reads(on_board(board)) == (1200, False)
    assert "is up with its config" in proc.stdout  # the unit booted with it

    for ms in (300, 5000):  # the firmware's bounds are allowed
        proc = provision(board, device_file, "--beacons-scan-ms", ms, "--beacons-at-checkin")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert on_board(board)["beacons"] == {"scan_ms": ms, "at_checkin": True}
        assert firmware_reads(on_board(board)) == (ms, True)
        assert "is up with its config" in proc.stdout

    # Provisioned again without the flags, the unit stops scanning.
    proc = provision(board, device_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "beacons" not in on_board(board)


def test_beacon_settings_the_wearable_would_refuse_are_refused_before_the_board_is_touched(
        board, device_file):
    for extra, words in (
            (("--beacons-scan-ms", 299), "beacons.scan_ms must be from 300 to 5000"),
            (("--beacons-scan-ms", 5001, "--beacons-at-checkin"),
             "beacons.scan_ms must be from 300 to 5000"),
            (("--beacons-scan-ms", 0), "beacons.scan_ms must be from 300 to 5000"),
            (("--beacons-at-checkin",), "--beacons-at-checkin needs --beacons-scan-ms")):
        proc = provision(board, device_file, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not any(board.flash_dir.iterdir())
