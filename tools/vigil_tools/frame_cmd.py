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
    """A report on one frame: its clear header, and with the key either its fields or why it
    is rejected. A v2 frame shows its type and direction only once the key has opened it
    (without --direction, the direction whose keys verify it)."""
    report = {"length": len(data)}
    try:
        header = p.peek(data)
    except p.RemoteProtocolError as exc:
        return dict(report, valid=False, error=exc.reason, detail=str(exc))
    report["version"] = header.version
    if header.version == 1:
        report.update(type=header.name, direction=header.direction)
    report.update(device_id=header.device_id, device_hex="%08x" % header.device_id,
                  counter=header.counter)
    if key is None:
        hidden = "" if header.version == 1 else "; v2 hides the type and body"
        return dict(report, valid=None, detail="no key given: MAC not checked" + hidden)
    try:
        frame = _decode(data, key, direction or header.direction)
    except p.RemoteProtocolError as exc:
        return dict(report, valid=False, error=exc.reason, detail=str(exc))
    return dict(report, type=frame.NAME, direction=frame.DIRECTION, valid=True,
                fields=frame.fields())


def _decode(data, key, direction):
    if direction is not None:
        return p.decode(data, key, direction)
    try:  # v2 without --direction: the direction is the one whose keys verify the frame
        return p.decode(data, key, p.UP)
    except p.WrongDirection:
        return p.decode(data, key, p.DOWN)


def register(sub):
    frame = sub.add_parser("frame", help="inspect protocol frames")
    frame_sub = frame.add_subparsers(dest="frame_command", required=True, metavar="ACTION")
    decode = frame_sub.add_parser("decode", help="decode a frame, check its MAC, say why it "
                                                 "would be rejected")
    decode.add_argument("frame", help="the frame in hex")
    keys = decode.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the device key in hex (64 digits)")
    keys.add_argument("--key-file", help="a file holding the device key in hex")
    decode.add_argument("--direction", choices=["up", "down"],
                        help="decode as received in this direction (default: the frame's own)")
    decode.add_argument("--json", action="store_true", help="print one JSON object")
    decode.set_defaults(func=decode_command)


def read_key_file(path):
    """The key in hex: the whole file, or the "key" of a device record (`vigil keygen`)."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        raise ToolError("cannot read the key file: %s" % exc.strerror) from None
    if text.startswith("{"):
        try:
            return str(json.loads(text)["key"])
        except (ValueError, KeyError, TypeError):
            raise ToolError("the key file is JSON but not a device record") from None
    return text


def decode_command(args):
    if args.key_file:
        args.key = read_key_file(args.key_file)
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
