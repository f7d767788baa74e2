"""`vigil monitor`: a wearable's console over USB serial, with its frames decoded.

The firmware logs every frame it handles as `vigil: raised <hex>`, `vigil: tx <hex>` (uplinks)
and `vigil: rx <hex>` (verified downlinks). With the device's key each such line is followed
by what the frame says and whether its MAC holds; without it, by its header only. The monitor
only listens: it never interrupts the firmware (unless --reset asks for a restart).
"""
import os
import re
import sys
import time

import serial

from . import ToolError
from .frame_cmd import describe

FRAME_LINE = re.compile(r"vigil: (tx|rx|raised) ([0-9a-fA-F]+)\s*$")
_DIRECTION = {"tx": "up", "raised": "up", "rx": "down"}


def annotate(line, key=None):
    """The decoded summary of a console line that carries a frame, or None."""
    match = FRAME_LINE.search(line)
    if not match or len(match.group(2)) % 2:
        return None
    direction = _DIRECTION[match.group(1)]
    report = describe(bytes.fromhex(match.group(2)), key, direction)
    if "device_id" not in report:
        return "    ! not a frame: %s" % report.get("detail", report.get("error"))
    # Without the key a v2 frame shows only its header: the type travels sealed.
    head = "%s %s, device %s, counter %d" % (report.get("type") or "v2 frame", direction,
                                              report["device_hex"], report["counter"])
    if report["valid"] is None:
        return "    = %s (no key: MAC not checked)" % head
    if report["valid"] is False:
        return "    ! %s: REJECTED %s (%s)" % (head, report["error"], report["detail"])
    fields = ", ".join("%s=%s" % (k, v) for k, v in report["fields"].items()
                       if k not in ("device_id", "counter"))
    return "    = %s: %s (MAC ok)" % (head, fields)


def print_line(line, key, out):
    print(line, file=out)
    note = annotate(line, key)
    if note:
        print(note, file=out)
    out.flush()


def open_port(port):
    if "://" not in port and not os.path.exists(port):
        raise ToolError("no such port: %s (is the board plugged in?)" % port)
    try:
        return serial.serial_for_url(port, baudrate=115200, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise ToolError("cannot open %s: %s (is another program using it?)" % (port, exc)) from None


def monitor(port, key=None, duration_s=None, reset=False, out=sys.stdout):
    link = open_port(port)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    pending = b""
    try:
        if reset:
            link.write(b"\r\x03\x03")   # stop what runs...
            time.sleep(0.2)
            link.write(b"\x02\x04")     # ...friendly REPL, soft reset: main.py starts again
        while deadline is None or time.monotonic() < deadline:
            try:
                chunk = link.read(link.in_waiting or 1)
            except (serial.SerialException, OSError):
                raise ToolError("lost the board on %s (unplugged or reset?)" % port) from None
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                print_line(raw.decode(errors="replace").rstrip("\r"), key, out)
    except KeyboardInterrupt:
        pass
    finally:
        if pending:
            print_line(pending.decode(errors="replace").rstrip("\r"), key, out)
        link.close()
    return 0
