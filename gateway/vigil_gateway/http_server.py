# A small HTTP/1.1 server on asyncio for GET endpoints (/metrics, /healthz): stdlib only.
# One request per connection; anything but a GET to a known path gets a plain error status.
import asyncio
import logging

from . import logs

log = logging.getLogger("vigil_gateway.http")
_MAX_HEAD = 8192
_READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
            503: "Service Unavailable"}


async def serve(host, port, routes):
    """Serve `routes` ({path: handler() -> (status, content_type, body_text)}); returns the
    asyncio Server (its sockets tell the port when `port` is 0)."""

    async def handle(reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
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
