# The wifi_scan setting `vigil provision` writes into the wearable's config (firmware/README.md,
# Config and Location): absent unless --wifi-scan-every is given, checked with the firmware's
# own rules before the board is touched; the unit then starts with it on the virtual board.
from test_provision_beacons import on_board, provision
from vigil_tools.device_config import firmware_config_class


def test_a_unit_gets_wifi_scans_only_when_given_and_the_firmware_reads_them_so(
        board, device_file):
    proc = provision(board, device_file, "--wifi-ssid", "site-net", "--wifi-scan-every", 3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_board(board)["wifi_scan"] == {"every": 3}
    config_class, _error = firmware_config_class()
    assert config_class(on_board(board)).wifi_scan == 3
    assert "is up with its config" in proc.stdout  # the unit booted with it

    proc = provision(board, device_file, "--wifi-ssid", "site-net")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wifi_scan" not in on_board(board)


def test_wifi_scan_settings_the_wearable_would_refuse_are_refused_before_the_board_is_touched(
        board, device_file):
    for extra, words in (
            (("--wifi-ssid", "site-net", "--wifi-scan-every", 0),
             "wifi_scan.every must be from 1 to 1000"),
            (("--wifi-scan-every", 2), "--wifi-scan-every needs --wifi-ssid")):
        proc = provision(board, device_file, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not any(board.flash_dir.iterdir())
