# The gateway's responder actions API (gateway/openapi.json), from the console's event loop:
# its /v2/ (sent_at in RFC 3339, UTC with "Z"; /v1/, with unix seconds, is deprecated).
# A request that got no answer (timeout, connection lost) is sent again with the same bytes
# and request_id: the gateway answers a retry with its first answer and applies nothing twice.
import asyncio
import json
import logging
import ssl
import time
import uuid

import aiohttp

log = logging.getLogger("vigil.responder")

TRIES = 3
API = "/v2"


def rfc3339(t):
    """Unix seconds as the actions API's /v2/ takes them: "2026-12-01T15:48:27.250Z"."""
    millis = int(round(t * 1000))
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)),
                         millis % 1000)


class Answer:
    """What the gateway said: ok (200), the status, and its JSON body or error message."""

    def __init__(self, status, body):
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.ok = status == 200

    @property
    def message(self):
        if self.ok:
            return "effect %s" % self.body.get("effect", "?")
        return "%s: %s" % (self.body.get("error", "status %s" % self.status),
                           self.body.get("message", ""))


class GatewayClient:
    def __init__(self, url, token, ca_file=None, timeout_s=10):
        self.url = url.rstrip("/")
        self._headers = {"Authorization": "Bearer " + token,
                         "Content-Type": "application/json"}
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = None

    async def close(self):
        if self._session is not None:
            await self._session.close()

    async def act(self, incident_id, action, note=""):
        payload = {"action": action, "request_id": uuid.uuid4().hex,
                   "sent_at": rfc3339(time.time())}
        if note:
            payload["note"] = note[:500]
        body = json.dumps(payload).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        path = "%s%s/incidents/%d/actions" % (self.url, API, incident_id)
        for attempt in range(1, TRIES + 1):
            try:
                async with self._session.post(path, data=body, headers=self._headers,
                                              ssl=self._ssl) as reply:
                    text = await reply.read()
                    try:
                        parsed = json.loads(text or b"null")
                    except ValueError:
                        parsed = None
                    return Answer(reply.status, parsed)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("gateway unreachable (try %d of %d): %s", attempt, TRIES,
                            type(exc).__name__)
                if attempt < TRIES:
                    await asyncio.sleep(0.5 * attempt)
        return Answer(0, {"error": "unreachable",
                          "message": "no answer from the gateway; nothing was done"})
