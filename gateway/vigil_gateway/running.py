"""Running a gateway's tasks until it stops, the same for every store.

The gateway (service.py, SQLite) and a PostgreSQL worker (service_pg.py) each start their
tasks, MQTT link first, then run_until_stopped() waits for stop() or for the first task to end
(a task that ends has failed: it is logged), lets the link finish what it is publishing, and
cancels the rest, waiting until they have ended so nothing uses a store being closed. Both
answer the actions API's requests through api_response().
"""
import asyncio
import json
import logging

from . import logs

log = logging.getLogger("vigil_gateway.service")  # task_failed stays the service's line

LINK_STOP_S = 5  # for the MQTT link to finish its publishes in flight before it is cancelled


async def run_until_stopped(tasks, stop_event, link):
    """Run `tasks` (tasks[0]: `link`'s run()) until `stop_event` is set or one of them ends."""
    stop = asyncio.create_task(stop_event.wait())
    done, _ = await asyncio.wait(tasks + [stop], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stop and task.exception() is not None:
            logs.event(log, logging.ERROR, "task_failed", task=task.get_name(),
                       error=repr(task.exception()))
    link.stop()
    try:
        await asyncio.wait_for(tasks[0], LINK_STOP_S)
    except (asyncio.TimeoutError, Exception):
        pass
    for task in tasks[1:] + [stop]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)


def api_response(api, metrics, request, unavailable=(), describe=str):
    """(status, content type, body) for one request (method, path, headers, body) to the
    actions API, counted and logged. An exception of `unavailable` (the store could not take
    it, nothing of it committed) is a 503 for the backend to retry; `describe` words it for
    the log."""
    from .actions import Reply

    method, path = request[0], request[1]
    try:
        reply = api.handle(*request)
    except unavailable as exc:
        reply = Reply(503, {"error": "unavailable", "message": "the database cannot take "
                            "requests now; retry with the same request_id"}, "unavailable")
        logs.event(log, logging.ERROR, "api_store_failed", error=describe(exc))
    metrics.api_requests.inc(reply.result)
    level = logging.INFO if reply.status < 400 else logging.WARNING
    logs.event(log, level, "api_request", method=method, path=path.split("?", 1)[0][:100],
               status=reply.status, result=reply.result, message=reply.body.get("message"))
    body = dict(reply.body)
    body.pop("downlink_queued", None)
    return reply.status, "application/json", json.dumps(body, sort_keys=True) + "\n"


async def close_transports(transports):
    """Close every forwarding transport; one that fails to close does not stop the others."""
    for transport in transports:
        try:
            await transport.close()
        except Exception:
            pass
