"""A virtual wearable on a serial port: the MicroPython unix port behind a pseudo-terminal.

    with VirtualBoard(flash_dir) as board:
        print(board.port)          # e.g. /dev/pts/7: give it to mpremote, pyserial, `vigil ...`

The port behaves like a board's USB serial console: a real MicroPython REPL (friendly, raw and
raw-paste modes come from MicroPython itself), whose "/" is the folder `flash_dir`. A soft reset
(Ctrl-D) restarts the MicroPython process, prints "MPY: soft reboot" like a board, runs boot.py
and, unless the reset came from the raw REPL, main.py. `machine` and `network` are inert
stand-ins (see virtual_board_device.py), so a provisioned firmware really starts and talks MQTT
through the host's network. Like the boards Vigil targets it has a ROMFS partition (the file
`<flash_dir>.romfs`, mapped into the port as flash is; see romfs.py): `vfs.rom_ioctl` writes
it (as `mpremote romfs deploy` and `vigil flash` do) and every reset mounts its image at /rom.

How it is wired, and why:
  * the port is the slave side of pty A; the bridge keeps that slave open itself, so the master
    never reads EIO while no client has the port open (as a USB device stays put);
  * MicroPython runs on its own raw pty B. A Ctrl-C that arrives while it runs code becomes a
    SIGINT (its KeyboardInterrupt, as a board's UART IRQ gives); at a prompt it stays a byte
    for the REPL. The bridge decides from the process's signal disposition, because the unix
    port puts SIGINT back to "terminate" whenever it waits at a prompt;
  * output nobody reads is dropped once the port's buffer is full, as a board's would be.
"""
import errno
import os
import pathlib
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import tty

from . import ToolError, romfs
from .micropython import executable

DEVICE_SCRIPT = pathlib.Path(__file__).with_name("virtual_board_device.py")
SOFT_REBOOT = b"MPY: soft reboot\r\n"
ROMFS_KIB = 256  # the ROMFS partition of the boards Vigil targets (0: none)
_CTRL_A, _CTRL_B, _CTRL_C = 0x01, 0x02, 0x03


def _new_session():
    # Runs in the child: its own session, so a Ctrl-C typed at the technician's terminal
    # reaches the bridge only; and no CPython KeyboardInterrupt (the unix port is a CPython
    # extension) before MicroPython installs its own SIGINT handler.
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _catches_sigint(pid):
    """True while MicroPython runs code (its SIGINT handler is installed); at its prompt the
    disposition is back to the default, which would end the process."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


class VirtualBoard:
    RESTART_PAUSE_S = 0.05  # a board in a crash loop must not spin the host

    def __init__(self, flash_dir, heapsize="2m", romfs_kib=ROMFS_KIB):
        self.flash_dir = pathlib.Path(flash_dir).resolve()
        self.heapsize = heapsize
        # The ROMFS partition: a host file beside the flash folder, kept across resets and
        # runs as flash is. romfs_kib=0: a board built without one.
        self.romfs_kib = romfs_kib
        self.romfs_partition = self.flash_dir.with_name(self.flash_dir.name + ".romfs")
        self.port = None
        self.resets = 0
        self._raw = False            # which REPL the last reset left (decides main.py)
        self._running = False
        self._frozen = False
        self._child = None
        self._child_fd = None
        self._starting = False       # host bytes wait until MicroPython can take a Ctrl-C
        self._to_child = b""
        self._thread = None
        self._lock = threading.Lock()
        self._private = self._ready_marker = None
        self._master = self._slave = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self):
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_romfs()
        self._private = tempfile.mkdtemp(prefix="vigil-board-")
        self._ready_marker = os.path.join(self._private, "ready")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._running = True
        self._spawn()
        self._thread = threading.Thread(target=self._relay, name="virtual-board", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        self._kill_child()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what a technician (or a test) can do to the hardware --------------------------------

    def hard_reset(self):
        """Press the reset button: the process restarts in the friendly REPL (main.py runs)."""
        with self._lock:
            self._raw = False
            self._frozen = False
            self._to_child = b""  # what was sent to the hung board is gone with it
            self._kill_child()

    def freeze(self):
        """The board hangs: it stops answering on the port until hard_reset()."""
        with self._lock:
            self._frozen = True
            if self._child is not None:
                self._child.send_signal(signal.SIGSTOP)

    # -- internals ---------------------------------------------------------------------------

    def _prepare_romfs(self):
        size = self.romfs_kib * 1024
        if not size:
            return
        part = self.romfs_partition
        if not part.exists() or part.stat().st_size != size:
            part.write_bytes(b"\xff" * size)  # erased flash

    def _spawn(self):
        master, slave = os.openpty()
        tty.setraw(slave)
        if os.path.exists(self._ready_marker):
            os.unlink(self._ready_marker)
        env = dict(os.environ, VIGIL_BOARD_FLASH=str(self.flash_dir),
                   VIGIL_BOARD_READY=self._ready_marker,
                   VIGIL_BOARD_MODE="raw" if self._raw else "friendly",
                   VIGIL_ROMFS_MOUNT=str(romfs.MOUNT_FILE))
        env.pop("MICROPYPATH", None)
        env.pop(romfs.ENV, None)
        # With a partition, the port runs in-process behind the mapping of the partition file
        # (writable: a ROMFS deploy writes through it), as a board's flash is mapped.
        launcher = (romfs.command(self.romfs_partition, writable=True) if self.romfs_kib
                    else [executable()])
        try:
            self._child = subprocess.Popen(
                launcher + ["-X", "heapsize=%s" % self.heapsize, "-i", str(DEVICE_SCRIPT)],
                stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                preexec_fn=_new_session)
        finally:
            os.close(slave)  # only the child holds it: its exit shows up as EIO on master
        os.set_blocking(master, False)
        self._child_fd = master
        self._starting = True
        if self._raw:
            # A reset from the raw REPL comes back to the raw REPL, as on a board.
            self._to_child = b"\x01" + self._to_child

    def _kill_child(self):
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait()
        if self._child_fd is not None:
            os.close(self._child_fd)
            self._child_fd = None

    def _to_port(self, data):
        try:
            os.write(self._master, data)
        except BlockingIOError:
            pass  # nobody is reading the port: the board's output is lost, as on real USB

    def _from_port(self, data):
        for byte in data:
            if byte == _CTRL_A:
                self._raw = True
            elif byte == _CTRL_B:
                self._raw = False
        self._to_child += data

    def _relay(self):
        while self._running:
            with self._lock:
                child_fd = self._child_fd if not self._frozen else None
            fds = [self._master] + ([child_fd] if child_fd is not None else [])
            try:
                readable, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                readable = []
            with self._lock:
                if self._master in readable:
                    try:
                        self._from_port(os.read(self._master, 4096))
                    except OSError:
                        pass
                if self._frozen:
                    continue
                if self._child_fd is None:
                    self._restart()
                    continue
                if self._child_fd in readable:
                    try:
                        data = os.read(self._child_fd, 4096)
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        data = b""
                    if data:
                        self._to_port(data)
                    else:
                        self._restart()  # the process ended: that was a (soft) reset
                        continue
                self._feed_child()

    def _feed_child(self):
        if not self._to_child:
            return
        if self._starting:
            # A Ctrl-C sent before the board has started would be lost, or would break the
            # start-up itself: hold input until the start-up script says it is ready.
            if not os.path.exists(self._ready_marker):
                return
            self._starting = False
        while self._to_child:
            if self._to_child[0] == _CTRL_C and _catches_sigint(self._child.pid):
                # Running code: Ctrl-C interrupts it, as a board's UART IRQ does.
                self._child.send_signal(signal.SIGINT)
                self._to_child = self._to_child[1:]
                continue
            # Up to the next Ctrl-C (a REPL waiting for input reads that one as a byte).
            end = self._to_child.find(b"\x03", 1)
            chunk = self._to_child if end < 0 else self._to_child[:end]
            try:
                written = os.write(self._child_fd, chunk)
            except BlockingIOError:
                return
            self._to_child = self._to_child[written:]
            if written < len(chunk):
                return

    def _restart(self):
        self._kill_child()
        if not self._running:
            return
        self.resets += 1
        time.sleep(self.RESTART_PAUSE_S)
        self._to_port(SOFT_REBOOT)
        self._spawn()


def run_forever(flash_dir, romfs_kib=ROMFS_KIB, out=lambda text: print(text, flush=True)):
    """`vigil board virtual`: serve a virtual board until Ctrl-C."""
    try:
        board = VirtualBoard(flash_dir, romfs_kib=romfs_kib).start()
    except OSError as exc:
        raise ToolError("cannot start the virtual board: %s" % exc.strerror) from None
    out("virtual board on %s (flash: %s); Ctrl-C to stop" % (board.port, board.flash_dir))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0
