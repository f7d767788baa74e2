# `vigil responder ...` (also `python -m vigil_responder ...`):
#   run --config responder.toml         serve the console until SIGTERM / Ctrl-C
#   user add NAME --config ... [--password-file F]   make an account, or set its password
#   user list --config ...
#   demo                                the console on a live Vigil on loopback (demo.py)
import argparse
import asyncio
import getpass
import logging
import signal
import ssl
import sys

from . import auth
from .config import ConfigError, load
from .store import Store


def register(subparsers):
    parser = subparsers.add_parser("responder", help="the responder console",
                                   description="The responder console: a live queue and "
                                   "the procedure for each kind of alarm, in the browser.")
    sub = parser.add_subparsers(dest="responder_command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="serve the console")
    run.add_argument("--config", required=True)
    run.set_defaults(func=_run)
    user = sub.add_parser("user", help="responder accounts")
    users = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")
    add = users.add_parser("add", help="make an account, or set its password")
    add.add_argument("name")
    add.add_argument("--config", required=True)
    add.add_argument("--password-file", help="first line is the password (else prompted, "
                     "or read from standard input)")
    add.set_defaults(func=_user_add)
    listing = users.add_parser("list", help="the accounts")
    listing.add_argument("--config", required=True)
    listing.set_defaults(func=_user_list)
    demo = sub.add_parser("demo", help="the console on a live Vigil on loopback, to try it in "
                          "a browser (a simulated wearable takes commands from stdin)")
    demo.set_defaults(func=_demo)


def _demo(args):
    from .demo import run

    return run(args)


def _config(args):
    try:
        return load(args.config)
    except ConfigError as exc:
        print("vigil responder: %s" % exc, file=sys.stderr)
        raise SystemExit(2)


def _user_add(args):
    config = _config(args)
    if args.password_file:
        with open(args.password_file) as f:
            password = f.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password for %s: " % args.name)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("vigil responder: a password needs 8 characters or more", file=sys.stderr)
        return 2
    Store(config.data_dir).put_user(args.name, auth.hash_password(password))
    print("account %s ready" % args.name)
    return 0


def _user_list(args):
    for name in Store(_config(args).data_dir).users():
        print(name)
    return 0


def _run(args):
    config = _config(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return asyncio.run(_serve(config))


async def _serve(config):
    from aiohttp import web

    from .web import Console, make_app

    console = Console(Store(config.data_dir), config)
    runner = web.AppRunner(make_app(console), access_log=None, shutdown_timeout=2)
    await runner.setup()
    context = None
    if config.cert_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(config.cert_file, config.key_file)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print("vigil responder: console at %s://%s:%d/ (webhook %s)" % (
        "https" if context else "http", config.host, port, config.webhook_path), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vigil_responder")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(["responder"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)
