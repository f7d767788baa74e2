"""The `vigil` command: one entry point for technicians, gateway operators and developers."""
import argparse
import sys

from . import ToolError


def _frame_decode(args):
    from .frame_cmd import decode_command
    return decode_command(args)


def _bench_protocol(args):
    from .bench import protocol_command
    return protocol_command(args)


def _demo(args):
    from .demo import run
    return run(args)


def build_parser():
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    decode.set_defaults(func=_frame_decode)

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    proto = bench_sub.add_parser("protocol", help="codec speed (CPython) and heap (MicroPython)")
    proto.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    proto.set_defaults(func=_bench_protocol)

    demo = sub.add_parser("demo", help="Vigil end to end on its embedded defaults")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "key_file", None):
        try:
            with open(args.key_file) as f:
                args.key = f.read().strip()
        except OSError as exc:
            print("vigil: cannot read the key file: %s" % exc.strerror, file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except ToolError as exc:
        print("vigil: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
