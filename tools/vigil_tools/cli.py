"""The `vigil` command: one entry point for technicians, gateway operators and developers.

Each feature module adds its own subcommands through a `register(subparsers)` function listed
in COMMANDS; a command's handler takes the parsed arguments and returns the exit status.
"""
import argparse
import importlib
import os
import sys

from . import ToolError

# Modules whose register(subparsers) adds subcommands, in the order `vigil --help` lists them.
COMMANDS = (
    "vigil_tools.frame_cmd",
    "vigil_tools.gateway_cmd",
    "vigil_tools.bench",
    "vigil_tools.demo",
    "vigil_tools.technician_cmd",
    "vigil_tools.ble_air_cmd",
    "vigil_responder.console.cli",
)


def build_parser():
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit: a reader gone by then is a closed pipe too
        return status
    except ToolError as exc:
        print("vigil: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vigil ... | head`: the reader has all it wanted
        # Python would print a traceback flushing stdout at exit: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
