"""`vigil frame`: inspect and build frames."""
import json

import vigil_protocol as p

from . import ToolError


def parse_hex(text, what):
    try:
        return bytes.fromhex(text.replace(":", "").replace(" ", ""))
    except ValueError:
        raise ToolError("%s is not hexadecimal" % what) from None


def describe(data, key, direction=None):
    """A report on one frame: its header, and either its fields or why it is rejected."""
    report = {"length": len(data)}
    try:
        header = p.peek(data)
    except p.RemoteProtocolError as exc:
        return dict(report, valid=False, error=exc.reason, detail=str(exc))
    report.update(type=header.name, direction=header.direction, device_id=header.device_id,
                  device_hex="%08x" % header.device_id, counter=header.counter)
    if key is None:
        return dict(report, valid=None, detail="no key given: MAC not checked")
    try:
        frame = p.decode(data, key, direction or header.direction)
    except p.RemoteProtocolError as exc:
        return dict(report, valid=False, error=exc.reason, detail=str(exc))
    return dict(report, valid=True, fields=frame.fields())


def decode_command(args):
    data = parse_hex(args.frame, "the frame")
    key = parse_hex(args.key, "the key") if args.key else None
    if key is not None and len(key) != p.KEY_LEN:
        raise ToolError("a device key is %d bytes (%d hex digits)" % (p.KEY_LEN, 2 * p.KEY_LEN))
    report = describe(data, key, args.direction)
    if args.json:
        print(json.dumps(report))
    else:
        for name, value in report.items():
            print("%-10s %s" % (name, value))
    return 0 if report.get("valid") is not False else 1
