# The virtual board is a real MicroPython REPL on a serial port: the stock mpremote command
# line works with it as with a board on USB, and it resets like one.
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

from mpremote.transport_serial import SerialTransport

from vigil_cli import VIGIL

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def mpremote(port, *args):
    return subprocess.run([MPREMOTE, "connect", port, *map(str, args)], capture_output=True,
                          text=True, timeout=60)


def test_mpremote_runs_code_and_copies_files(board, tmp_path):
    assert mpremote(board.port, "exec", "print(6 * 7)").stdout.strip() == "42"
    local = tmp_path / "hello.txt"
    local.write_bytes(b"hello board\n" * 100)
    assert mpremote(board.port, "fs", "mkdir", ":/data").returncode == 0
    assert mpremote(board.port, "fs", "cp", local, ":/data/hello.txt").returncode == 0
    assert (board.flash_dir / "data" / "hello.txt").read_bytes() == local.read_bytes()
    listed = mpremote(board.port, "fs", "sha256sum", ":/data/hello.txt").stdout
    assert hashlib.sha256(local.read_bytes()).hexdigest() in listed


def test_mpremote_deploys_a_romfs_image_that_mounts_at_rom_after_a_reset(board, tmp_path):
    query = mpremote(board.port, "romfs", "query").stdout
    assert "ROMFS0 partition has size 262144 bytes" in query and "Not a valid ROMFS" in query
    (tmp_path / "img" / "lib").mkdir(parents=True)
    (tmp_path / "img" / "lib" / "hello.py").write_text("WHO = 'from rom'\n")
    deploy = mpremote(board.port, "romfs", "deploy", tmp_path / "img")
    assert deploy.returncode == 0 and "ROMFS image deployed" in deploy.stdout, deploy.stderr
    assert board.romfs_partition.read_bytes().startswith(b"\xd2\xcd\x31")
    # The partition is kept by the board (a file beside its flash) and mounted at every reset.
    out = mpremote(board.port, "soft-reset", "exec",
                   "import sys, hello; print(hello.WHO, hello.__file__, sys.path)").stdout
    assert out.strip() == ("from rom /rom/lib/hello.mpy "
                           "['', '.frozen', '/rom', '/rom/lib', '/lib']")


def test_resets_run_main_py_only_from_the_friendly_repl(board):
    (board.flash_dir / "boot.py").write_text("print('boot ran')\n")
    (board.flash_dir / "main.py").write_text("print('main ran')\n")
    link = SerialTransport(board.port, timeout=1)
    try:
        link.enter_raw_repl(soft_reset=True)  # mpremote's own soft reset, from the raw REPL
        assert board.resets == 1
        assert link.eval("1 + 1") == 2
        link.exit_raw_repl()
        link.read_until(1, b">>> ", timeout=5)
        link.serial.write(b"\x04")  # Ctrl-D at the friendly prompt
        seen = link.read_until(1, b"main ran", timeout=10)
        assert b"MPY: soft reboot" in seen and b"boot ran" in seen and seen.endswith(b"main ran")
    finally:
        link.close()


def test_ctrl_c_stops_a_running_program(board):
    (board.flash_dir / "main.py").write_text("import time\nwhile True:\n    time.sleep_ms(10)\n")
    board.hard_reset()
    assert mpremote(board.port, "exec", "print('stopped and answering')").stdout.strip() == \
        "stopped and answering"


def test_vigil_board_virtual_serves_until_ctrl_c(tmp_path):
    proc = subprocess.Popen([VIGIL, "board", "virtual", "--flash", tmp_path / "flash"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        port = first.split(" on ", 1)[1].split(" ", 1)[0]
        assert mpremote(port, "fs", "touch", ":/marker").returncode == 0
        assert (tmp_path / "flash" / "marker").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
