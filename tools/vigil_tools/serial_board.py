"""A MicroPython board on a serial port, driven through mpremote's raw REPL.

    with SerialBoard(port) as board:          # opens the port, interrupts what runs, raw REPL
        board.hashes(["main.py"])             # {"main.py": "<sha256 hex>" or None}
        board.write_file("lib/x.mpy", data)   # lands whole or not at all (temp file + rename)
        board.write_romfs(image)              # the firmware image into the ROMFS partition
        lines = board.reset_and_watch(until)  # soft reset, read the console

Every failure becomes a ToolError that says what the technician can do. Nothing written to the
board (keys, passwords) is ever part of a message: board-side errors are reported by their last
line only, which MicroPython makes from the exception, never from the code sent.
"""
import ast
import binascii
import contextlib
import io
import os
import time

import serial
import serial.tools.list_ports
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from . import ToolError

# USB vendor ids of the serial bridges and chips wearables are flashed through.
KNOWN_USB_VENDORS = {0x303A: "Espressif", 0x10C4: "Silicon Labs CP210x", 0x1A86: "WCH CH34x",
                     0x0403: "FTDI", 0x2E8A: "Raspberry Pi"}
CHUNK = 512
ROMFS_CHUNK = 2048  # raw bytes per write into the ROMFS partition (base64 on the wire)


def find_port():
    """The one USB serial port a board is on; ToolError when there is none or several."""
    ports = [p for p in serial.tools.list_ports.comports() if p.vid is not None]
    known = [p for p in ports if p.vid in KNOWN_USB_VENDORS]
    candidates = known or ports
    if not candidates:
        raise ToolError("no board found on USB serial: plug it in (a data cable, not a charging "
                        "one) or name the port with --port")
    if len(candidates) > 1:
        raise ToolError("several serial ports could be the board (%s): choose one with --port"
                        % ", ".join("%s (%s)" % (p.device, p.description) for p in candidates))
    return candidates[0].device


def _last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no detail"


class SerialBoard:
    READ_TIMEOUT_S = 1      # one serial read; keeps a silent board from blocking us forever
    ANSWER_TIMEOUT_S = 4    # to get a raw REPL prompt (tried twice)

    def __init__(self, port, answer_timeout_s=None):
        self.port = port
        self.answer_timeout_s = answer_timeout_s or self.ANSWER_TIMEOUT_S
        self.transport = None

    # -- connection --------------------------------------------------------------------------

    def open(self):
        if "://" not in self.port and not os.path.exists(self.port):
            raise ToolError("no such port: %s (is the board plugged in? list ports with "
                            "`python -m serial.tools.list_ports`)" % self.port)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.transport = SerialTransport(self.port, timeout=self.READ_TIMEOUT_S)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise ToolError("cannot open %s: %s (is another program using it?)"
                            % (self.port, exc)) from None
        self._enter_raw()
        return self

    def _enter_raw(self):
        for attempt in range(2):
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it read
                    self.transport.enter_raw_repl(soft_reset=False,
                                                  timeout_overall=self.answer_timeout_s)
                return
            except (TransportError, serial.SerialException, OSError):
                pass
            # A run killed mid-command can leave the REPL waiting for the end of a paste:
            # end it (Ctrl-D), then interrupt whatever that started (Ctrl-C), and ask again.
            try:
                self.transport.serial.write(b"\x04\x03\x03")
                time.sleep(0.2)
            except (serial.SerialException, OSError):
                break
        raise ToolError("the board on %s does not answer (no MicroPython prompt within %d s): "
                        "check it is powered, press its reset button and try again"
                        % (self.port, 2 * self.answer_timeout_s))

    def close(self):
        if self.transport is None:
            return
        try:
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
            self.transport.close()
        except (TransportError, serial.SerialException, OSError):
            pass
        self.transport = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    # -- running code ------------------------------------------------------------------------

    def exec(self, code, doing):
        """Run `code` in the raw REPL; its stdout. `doing` names the step for messages."""
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return self.transport.exec(code).decode(errors="replace")
        except TransportExecError as exc:
            raise ToolError("the board failed while %s: %s"
                            % (doing, _last_line(exc.error_output))) from None
        except (TransportError, serial.SerialException, OSError):
            raise ToolError("lost the board on %s while %s (reset or unplugged?): run the same "
                            "command again to finish" % (self.port, doing)) from None

    # -- files -------------------------------------------------------------------------------

    def hashes(self, paths):
        """{path: sha256 hex of the file on the board, or None when it is missing}."""
        code = (
            "import hashlib, binascii\n"
            "def _h(p):\n"
            " try:\n  f = open(p, 'rb')\n except OSError:\n  return None\n"
            " d = hashlib.sha256(); b = bytearray(%d)\n"
            " while True:\n  n = f.readinto(b)\n  if not n:\n   break\n"
            "  d.update(memoryview(b)[:n])\n"
            " f.close()\n return binascii.hexlify(d.digest()).decode()\n"
            "for _p in %r:\n print(repr((_p, _h(_p))))\n" % (CHUNK, list(paths)))
        out = self.exec(code, "reading file hashes")
        result = {}
        for line in out.splitlines():
            if line.strip():
                path, digest = ast.literal_eval(line)
                result[path] = digest
        return result

    def listdir(self, path):
        """Names of the plain files in `path` on the board ([] when it does not exist)."""
        code = ("import os\ntry:\n print(repr([e[0] for e in os.ilistdir(%r) "
                "if e[1] & 0x8000]))\nexcept OSError:\n print('[]')\n" % path)
        return ast.literal_eval(self.exec(code, "listing %s" % path).strip())

    def makedirs(self, path):
        code = ("import os\n_p = ''\nfor _part in %r.strip('/').split('/'):\n"
                " _p += '/' + _part\n try:\n  os.mkdir(_p)\n except OSError:\n  pass\n" % path)
        self.exec(code, "making folder %s" % path)

    def write_file(self, path, data, progress=None):
        """Write `data` to `path` whole or not at all: into path.part, then renamed over path,
        so an interrupted copy never leaves a torn file under the real name."""
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            self.makedirs(parent)
        part = path + ".part"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.transport.fs_writefile(part, data, chunk_size=CHUNK,
                                            progress_callback=progress)
        except TransportExecError as exc:
            raise ToolError("the board could not store %s: %s"
                            % (path, _last_line(exc.error_output))) from None
        except (TransportError, serial.SerialException, OSError):
            raise ToolError("lost the board on %s while copying %s (reset or unplugged?): run "
                            "the same command again to finish" % (self.port, path)) from None
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\n"
                  "os.rename(%r, %r)\n" % (path, part, path), "renaming %s" % path)

    def provisioned_as(self, config_path):
        """(device id, counter_floor) from the board's config file: the id as 8 hex digits, or
        None when there is no file or it is not readable as a config; the floor 0 when absent.
        Only these two cross the wire back, never a secret."""
        code = ("import json\ntry:\n with open(%r) as f:\n  _c = json.load(f)\n"
                " _d, _v = _c['device_id'], _c.get('counter_floor', 0)\n"
                " print(_d if isinstance(_d, str) else '', _v if isinstance(_v, int) else 0)\n"
                "except Exception:\n print('', 0)\n" % config_path)
        device, floor = self.exec(code, "reading the board's device id").rsplit(" ", 1)
        return device.strip() or None, int(floor)

    def remove_tree(self, path):
        """Delete `path` and everything under it on the board (nothing if it is missing)."""
        code = ("import os\n"
                "def _rm(p):\n"
                " try:\n  entries = list(os.ilistdir(p))\n except OSError:\n  return\n"
                " for e in entries:\n"
                "  q = p + '/' + e[0]\n"
                "  if e[1] & 0x4000:\n   _rm(q)\n   os.rmdir(q)\n  else:\n   os.remove(q)\n"
                "_rm(%r)\n" % path.rstrip("/"))
        self.exec(code, "clearing %s" % path)

    def remove(self, path):
        self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\n" % path,
                  "removing %s" % path)

    # -- ROMFS partition (MicroPython >= 1.25: vfs.rom_ioctl) --------------------------------

    def romfs_size(self):
        """Bytes in the board's first ROMFS partition, or None when it has none."""
        code = ("import vfs\n"
                "_n = vfs.rom_ioctl(1) if hasattr(vfs, 'rom_ioctl') else 0\n"
                "_d = vfs.rom_ioctl(2, 0) if _n > 0 else -1\n"
                "print(len(_d) if not isinstance(_d, int) else 0)\n")
        size = int(self.exec(code, "looking for a ROMFS partition").strip() or 0)
        return size or None

    def romfs_hash(self, length):
        """sha256 hex of the partition's first `length` bytes (what an image there hashes to)."""
        code = ("import vfs, hashlib, binascii\n"
                "print(binascii.hexlify(hashlib.sha256(memoryview(vfs.rom_ioctl(2, 0))[:%d])"
                ".digest()).decode())\n" % length)
        return self.exec(code, "reading the ROMFS partition's hash").strip()

    def write_romfs(self, image, progress=None):
        """Erase the partition and write `image`. Its first block goes last: MicroPython mounts
        a partition only when it starts with the ROMFS header, so a write cut short leaves
        a partition the board ignores, never half an image it would run."""
        min_write = int(self.exec(
            "import vfs\ntry:\n vfs.umount('/rom')\nexcept OSError:\n pass\n"
            "_r = vfs.rom_ioctl(3, 0, %d)\nif _r < 0:\n raise OSError(-_r)\nprint(_r)\n"
            % len(image), "erasing the ROMFS partition").strip() or 1)
        # Writes come in whole units of the flash's smallest write; the zeros padding the
        # tail lie beyond the image's length (its header holds it) and are never read.
        image += bytes(-len(image) % max(min_write, 1))
        self.exec("from binascii import a2b_base64\nimport vfs\n", "preparing to write")
        offsets = list(range(0, len(image), ROMFS_CHUNK))
        written = 0
        for offset in offsets[1:] + offsets[:1]:
            chunk = image[offset:offset + ROMFS_CHUNK]
            self.exec("_r = vfs.rom_ioctl(4, 0, %d, a2b_base64(%r))\nif _r < 0:\n"
                      " raise OSError(-_r)\n" % (offset, binascii.b2a_base64(chunk).strip()),
                      "writing the ROMFS partition")
            written += len(chunk)
            if progress is not None:
                progress(written, len(image))
        self.exec("vfs.rom_ioctl(5, 0)\n", "finishing the ROMFS partition")

    # -- reset and console -------------------------------------------------------------------

    def reset_and_watch(self, verdict, timeout_s):
        """Soft-reset into the friendly REPL (so main.py runs) and read the console until
        verdict(line) returns something other than None; returns (that value, lines seen).
        On timeout returns (None, lines)."""
        serial_port = self.transport.serial
        try:
            self.transport.exit_raw_repl()
            self._drain(0.2)
            serial_port.write(b"\x04")  # Ctrl-D at the friendly prompt: soft reset
            return self._watch(verdict, timeout_s)
        except (serial.SerialException, OSError):
            raise ToolError("lost the board on %s while it restarted: run the same command "
                            "again" % self.port) from None

    def _drain(self, quiet_s):
        serial_port = self.transport.serial
        end = time.monotonic() + quiet_s
        while time.monotonic() < end:
            if serial_port.in_waiting:
                serial_port.read(serial_port.in_waiting)
            else:
                time.sleep(0.02)

    def _watch(self, verdict, timeout_s):
        serial_port = self.transport.serial
        lines, pending = [], b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            chunk = serial_port.read(serial_port.in_waiting or 1)
            if not chunk:
                continue
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode(errors="replace").strip("\r")
                lines.append(line)
                found = verdict(line)
                if found is not None:
                    return found, lines
        return None, lines
