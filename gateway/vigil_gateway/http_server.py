# The gateway's HTTP listeners, on aiohttp's low-level server: GET endpoints (/metrics,
# /healthz) and, when given, the responder actions API under /v2/ (and /v1/, deprecated;
# actions.py), over TLS when given an SSL context.
#
# Rules:
#   a body is read only with a Content-Length of at most _MAX_BODY bytes (411 without one, 413
#   above it, both JSON as the API's own errors); the API's answers are its own;
#   a handler's fault is a 503 and a log line, never a crash;
#   aiohttp writes no access log: the API logs each request itself (api_request);
#   with [actions] host set, the API has a listener of its own (actions.host:actions.port),
#   over TLS with actions.cert_file/key_file (required for any address but loopback), and the
#   local listener ([http]) keeps /metrics and /healthz only; without it the API is served on
#   the local listener, under /v2/ (and /v1/).
import asyncio
import ipaddress
import logging
import os
import ssl as ssl_module

from aiohttp import web

from . import logs
from .config import secret_problem
from .errors import ConfigError

log = logging.getLogger("vigil_gateway.http")
_READ_TIMEOUT_S = 5.0
_MAX_BODY = 16384
_MAX_HEAD = 8190  # aiohttp's own limit per request line and header field
API_PREFIXES = ("/v2/", "/v1/")  # actions.py; /v1/ deprecated


async def serve(host, port, routes, api=None, ssl=None):
    """Serve `routes` ({path: handler() -> (status, content_type, body_text)}) and, under /v2/
    and /v1/,
    `api(method, path, headers, body_bytes) -> (status, content_type, body_text)`; returns the
    asyncio Server (its sockets tell the port when `port` is 0)."""

    async def handle(request):
        try:
            if api is not None and request.path.startswith(API_PREFIXES):
                status, ctype, body = await _api(request, api)
            else:
                status, ctype, body = _route(request, routes)
        except (asyncio.TimeoutError, ConnectionError):
            raise
        except Exception:  # a handler bug must not take the gateway down
            log.exception("http_handler_failed")
            status, ctype, body = 503, "text/plain", "internal error\n"
        return web.Response(status=status, body=body.encode(),
                            headers={"Content-Type": ctype, "Connection": "close"})

    server = web.Server(handle, access_log=None, max_line_size=_MAX_HEAD,
                        max_field_size=_MAX_HEAD)
    listening = await asyncio.get_running_loop().create_server(server, host, port, ssl=ssl)
    logs.event(log, logging.INFO, "http_listening", host=host,
               port=listening.sockets[0].getsockname()[1], tls=ssl is not None,
               api=api is not None, pages=sorted(routes))
    return listening


async def _api(request, api):
    headers = {name.lower(): value for name, value in request.headers.items()}
    body = b""
    if request.method in ("POST", "PUT", "PATCH"):
        length = request.content_length
        if length is None:
            return 411, "application/json", '{"error": "malformed", "message": ' \
                '"Content-Length is required"}\n'
        if not 0 <= length <= _MAX_BODY:
            return 413, "application/json", '{"error": "malformed", "message": ' \
                '"body too large"}\n'
        try:
            body = await asyncio.wait_for(request.content.readexactly(length),
                                          _READ_TIMEOUT_S) if length else b""
        except asyncio.IncompleteReadError:
            return 400, "application/json", '{"error": "malformed", "message": ' \
                '"body shorter than its Content-Length"}\n'
    return api(request.method, request.path_qs, headers, body)


def _route(request, routes):
    handler = routes.get(request.path)
    if handler is None:
        return 404, "text/plain", "not found\n"
    if request.method != "GET":
        return 405, "text/plain", "GET only\n"
    return handler()


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_tls(actions):
    """The SSL context of the API's own listener, or None (loopback without TLS). Raises
    ConfigError naming the setting."""
    if not actions.cert_file:
        if not is_loopback(actions.host):
            raise ConfigError("actions.cert_file", "the actions API on %s is reachable from "
                              "the network: give it TLS (cert_file and key_file)" % actions.host)
        return None
    for key, path in (("actions.cert_file", actions.cert_file),
                      ("actions.key_file", actions.key_file)):
        if not os.path.isfile(path):
            raise ConfigError(key, "no such file: %s" % path)
    problem = secret_problem(actions.key_file)  # a private key is a secret like the others
    if problem:
        raise ConfigError("actions.key_file", problem)
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(actions.cert_file, actions.key_file)
    except (OSError, ssl_module.SSLError) as exc:
        raise ConfigError("actions.cert_file", "cannot use %s and %s as the API's certificate "
                          "and key: %s" % (actions.cert_file, actions.key_file,
                                           getattr(exc, "reason", None) or exc)) from None
    return context


async def serve_all(config, pages, api):
    """The local listener ([http]: pages, and the API unless it has its own) and the API's own
    listener when [actions] host is set, else None. Raises ConfigError naming the setting."""
    own = api is not None and bool(config.actions.host)
    context = api_tls(config.actions) if own else None
    try:
        local = await serve(config.http.host, config.http.port, pages, None if own else api)
    except OSError as exc:
        raise ConfigError("http.port", "cannot listen on %s:%d: %s" % (
            config.http.host, config.http.port, exc.strerror)) from None
    if not own:
        return local, None
    try:
        return local, await serve(config.actions.host, config.actions.port, {}, api, context)
    except OSError as exc:
        local.close()
        raise ConfigError("actions.port", "cannot listen on %s:%d: %s" % (
            config.actions.host, config.actions.port, exc.strerror)) from None
