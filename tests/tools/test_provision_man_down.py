# The man_down settings `vigil provision` writes into the wearable's config (firmware/README.md,
# Config): on with the firmware's defaults unless told otherwise, checked with the firmware's
# own rules before the board is touched.
import json

from vigil_cli import vigil


def provision(board, device_file, *extra):
    return vigil("provision", "--port", board.port, "--device-file", device_file,
                 "--mqtt-host", "127.0.0.1", "--no-register", *extra)


def on_board(board):
    return json.loads((board.flash_dir / "vigil" / "vigil.json").read_text())


def test_a_unit_is_provisioned_with_man_down_on_and_the_settings_given(board, device_file):
    proc = provision(board, device_file, "--no-motion-s", 300, "--cancel-s", 45)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert on_board(board)["man_down"] == {"fall": True, "no_motion_s": 300, "cancel_s": 45}
    again = provision(board, device_file, "--no-fall", "--no-motion-s", 0)
    assert again.returncode == 0, again.stdout + again.stderr
    assert on_board(board)["man_down"] == {"fall": False, "no_motion_s": 0, "cancel_s": 30}
    off = provision(board, device_file, "--no-man-down")
    assert off.returncode == 0, off.stdout + off.stderr
    assert "man_down" not in on_board(board)


def test_settings_the_wearable_would_refuse_are_refused_before_the_board_is_touched(
        board, device_file):
    for extra, words in ((("--no-motion-s", 10), "man_down.no_motion_s must be 0 (off) or "
                                                 "from 30 to 1800"),
                         (("--cancel-s", 600), "man_down.cancel_s must be from 10 to 120")):
        proc = provision(board, device_file, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr
        assert not any(board.flash_dir.iterdir())
