# A small HTTP/1.1 server on asyncio: GET endpoints (/metrics, /healthz) and, when given, the
# responder actions API under /v1/ (actions.py). Stdlib only. One request per connection;
# anything else gets a plain error status. A body is read only with a Content-Length of at
# most _MAX_BODY bytes.
import asyncio
import logging

from . import logs

log = logging.getLogger("vigil_gateway.http")
_MAX_HEAD = 8192
_READ_TIMEOUT_S = 5.0
_MAX_BODY = 16384
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
            401: "Unauthorized", 409: "Conflict", 411: "Length Required",
            413: "Payload Too Large", 503: "Service Unavailable"}


async def serve(host, port, routes, api=None):
    """Serve `routes` ({path: handler() -> (status, content_type, body_text)}) and, under /v1/,
    `api(method, path, headers, body_bytes) -> (status, content_type, body_text)`; returns the
    asyncio Server (its sockets tell the port when `port` is 0)."""

    async def handle(reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            if api is not None and head.split(b" ", 2)[1:2] and \
                    head.split(b" ", 2)[1].startswith(b"/v1/"):
                status, ctype, body = await _api(head, reader, api)
            else:
                status, ctype, body = _route(head, routes)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            writer.close()
            return
        except Exception:  # a handler bug must not take the gateway down
            log.exception("http_handler_failed")
            status, ctype, body = 503, "text/plain", "internal error\n"
        data = body.encode()
        writer.write(("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n" % (status, _REASONS.get(status, ""), ctype,
                                                     len(data))).encode() + data)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
    logs.event(log, logging.INFO, "http_listening", host=host,
               port=server.sockets[0].getsockname()[1])
    return server


def _headers(head):
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers


async def _api(head, reader, api):
    try:
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
    except (UnicodeDecodeError, ValueError):
        return 400, "text/plain", "bad request\n"
    headers = _headers(head)
    body = b""
    if method in ("POST", "PUT", "PATCH"):
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 411, "application/json", '{"error": "malformed", "message": ' \
                '"Content-Length is required"}\n'
        if not 0 <= length <= _MAX_BODY:
            return 413, "application/json", '{"error": "malformed", "message": ' \
                '"body too large"}\n'
        body = await asyncio.wait_for(reader.readexactly(length), _READ_TIMEOUT_S)
    return api(method, target, headers, body)


def _route(head, routes):
    try:
        method, target, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
    except (UnicodeDecodeError, ValueError):
        return 400, "text/plain", "bad request\n"
    handler = routes.get(target.split("?", 1)[0])
    if handler is None:
        return 404, "text/plain", "not found\n"
    if method != "GET":
        return 405, "text/plain", "GET only\n"
    return handler()
