# Server-sent events: every browser with the console open gets a short message when an
# incident changes ("incident <id>") and fetches what it shows again. A browser that
# reconnects (EventSource does so by itself) reloads the queue, so it misses nothing.
import asyncio

from aiohttp import web

KEEPALIVE_S = 15
QUEUE_MAX = 100


class Hub:
    def __init__(self):
        self._clients = set()

    def publish(self, kind, incident_id):
        message = "event: %s\ndata: %d\n\n" % (kind, incident_id)
        for queue in list(self._clients):
            if queue.full():  # a stalled browser: it reloads everything when it catches up
                queue.get_nowait()
            queue.put_nowait(message)

    async def stream(self, request):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue = asyncio.Queue(QUEUE_MAX)
        self._clients.add(queue)
        try:
            await response.write(b"retry: 1000\nevent: hello\ndata: 0\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    message = ": keepalive\n\n"
                await response.write(message.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(queue)
        return response

    @property
    def clients(self):
        return len(self._clients)
