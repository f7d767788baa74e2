# The gnss setting `vigil provision` writes into the wearable's config (firmware/README.md,
# Config): absent unless a GNSS module's pins are given, checked with the firmware's own rules
# before the board is touched; the unit then starts with it on the virtual board (whose UART
# stand-in never speaks).
import json

from vigil_cli import vigil


def provision(board, device_file, *extra):
    return vigil("provision", "--port", board.port, "--device-file", device_file,
                 "--mqtt-host", "127.0.0.1", "--no-register", *extra)


def on_board(board):
    return json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())


def test_a_unit_gets_gnss_only_when_its_module_is_given_and_starts_with_it(board, device_file):
    proc = provision(board, device_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gnss" not in on_board(board)
    proc = provision(board, device_file, "--gnss-rx", 12, "--gnss-tx", 13)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_board(board)["gnss"] == {"uart": 1, "rx": 12, "tx": 13, "baud": 9600}
    assert "is up with its config" in proc.stdout
    proc = provision(board, device_file, "--gnss-rx", 47, "--gnss-tx", 48, "--gnss-uart", 2,
                     "--gnss-baud", 38400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_board(board)["gnss"] == {"uart": 2, "rx": 47, "tx": 48, "baud": 38400}


def test_gnss_settings_the_wearable_would_refuse_are_refused_before_the_board_is_touched(
        board, device_file):
    for extra, words in (
            (("--gnss-rx", 12), "a GNSS module needs both --gnss-rx and --gnss-tx"),
            (("--gnss-rx", 12, "--gnss-tx", 4), "gnss.tx must be a free GPIO"),
            (("--gnss-rx", 12, "--gnss-tx", 13, "--gnss-uart", 0), "gnss.uart must be 1 or 2"),
            (("--gnss-rx", 12, "--gnss-tx", 13, "--gnss-baud", 1000),
             "gnss.baud must be one of 4800, 9600")):
        proc = provision(board, device_file, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr
        assert not any(board.flash_dir.iterdir())
