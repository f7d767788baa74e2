# The webhook destination: one signed HTTPS POST per outbox row (httpx, TLS verified, timeouts).
#
# Rules:
#   the body is webhook.incident_payload() of the row's snapshot, signed with the destination's
#   secret (Vigil-Signature) and sent with its Idempotency-Key; the moment of sending is taken
#   to the millisecond, so the signature's t is the body's sent_at in whole seconds;
#   2xx: delivered; anything else (status, timeout, refused connection, TLS failure): a failed
#   attempt whose reason names what to check, retried by the outbox;
#   https only, except to a loopback address (a backend on the same machine);
#   the URL's query string and the secret never reach a log line.
import ipaddress
import math
import ssl
import time
import urllib.parse

import httpx

from . import webhook
from .errors import ConfigError
from .location import from_record, webhook_location

NAME = "webhook"


class Result:
    __slots__ = ("ok", "error")

    def __init__(self, ok, error=None):
        self.ok = ok
        self.error = error


def check_url(url, key="forward.webhook.url"):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(key, "must be an https:// URL (got %r)" % url)
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(key, "plain http is allowed to a loopback address only; use https")
    return url


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url):
    parts = urllib.parse.urlsplit(url)
    return "%s://%s%s" % (parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path)


class WebhookTransport:
    name = NAME

    def __init__(self, url, secret, timeout_s=10.0, ca_file="", clock=time.time):
        self.url = check_url(url)
        self.secret = secret
        self.clock = clock
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.client = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(timeout_s),
                                        follow_redirects=False)

    def body(self, item, now):
        s = item.snapshot
        location = webhook_location(from_record(s.get("location")), now, webhook._iso)
        payload = webhook.incident_payload(s["event"], s["incident"], s["device_id"], s["wearer"],
                                           s["audit"], location, sent_at=now,
                                           late=s.get("late"), key=item.key)
        return webhook.encode_body(payload)

    async def deliver(self, item):
        # to the millisecond, as sent_at is written: the signature's t is its whole seconds
        now = math.floor(self.clock() * 1000) / 1000
        body = self.body(item, now)
        headers = {"Content-Type": "application/json",
                   webhook.SIGNATURE_HEADER: webhook.sign(self.secret, body, now),
                   webhook.IDEMPOTENCY_HEADER: item.key,
                   "User-Agent": "vigil-gateway"}
        try:
            reply = await self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Result(False, "timeout waiting for %s" % safe_url(self.url))
        except httpx.HTTPError as exc:
            return Result(False, "cannot reach %s: %s" % (safe_url(self.url),
                                                          type(exc).__name__))
        if 200 <= reply.status_code < 300:
            return Result(True)
        return Result(False, "%s answered HTTP %d" % (safe_url(self.url), reply.status_code))

    async def close(self):
        await self.client.aclose()
