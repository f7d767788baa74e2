# The webhook destination on its own: https with the certificate verified, signatures checked
# by the reference backend, clear failures (refused, wrong CA, non-2xx), and the config rules.
import asyncio
import os
import sys

import pytest

from vigil_gateway import ConfigError, config
from vigil_gateway.forward_webhook import WebhookTransport, check_url
from vigil_gateway.outbox import Item
from vigil_responder import ResponderBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tls_ca import make_ca  # noqa: E402

SECRET = b"secret-for-the-transport-test"


def item(event="raised", kind="SOS"):
    snapshot = {"event": event, "device_id": 0xC0FFEE,
                "incident": {"id": 3, "kind": kind, "state": "open", "counter": 9,
                             "opened_at": 1.8e9, "updated_at": 1.8e9},
                "wearer": {"name": "W", "contacts": [], "notes": None}, "zone": 1,
                "location": {"lat": 1.5, "lon": 2.5, "accuracy_m": 4, "at": 1.8e9},
                "audit": [{"at": 1.8e9, "event": "raised", "detail": "raised"}]}
    return Item(1, "webhook", 3, 0xC0FFEE, "00c0ffee-9-" + event, event, snapshot, 0, 0, 0,
                None, None, None)


def deliver(transport, it):
    async def go():
        try:
            return await transport.deliver(it)
        finally:
            await transport.close()
    return asyncio.run(go())


@pytest.fixture
def tls_backend(tmp_path):
    files = make_ca(tmp_path / "ca")
    backend = ResponderBackend(SECRET, tls=files).start()
    yield backend, files
    backend.stop()


def test_https_with_the_right_ca_is_delivered_and_verified(tls_backend):
    backend, files = tls_backend
    assert backend.url.startswith("https://")
    result = deliver(WebhookTransport(backend.url, SECRET, 5, files["cafile"]), item())
    assert result.ok, result.error
    assert backend.events[0]["idempotency_key"] == "00c0ffee-9-raised"
    assert backend.events[0]["location"]["at"].endswith("Z")


def test_https_with_an_unknown_ca_is_refused(tls_backend):
    backend, _ = tls_backend
    result = deliver(WebhookTransport(backend.url, SECRET, 5), item())
    assert not result.ok and "cannot reach" in result.error
    assert backend.events == []


def test_same_key_twice_is_one_event_at_the_backend():
    backend = ResponderBackend(SECRET).start()
    try:
        for _ in range(2):
            assert deliver(WebhookTransport(backend.url, SECRET), item()).ok
        assert len(backend.events) == 1 and backend.duplicates == 1
    finally:
        backend.stop()


def test_non_2xx_and_refused_connections_are_failures():
    backend = ResponderBackend(SECRET, fail=True).start()
    try:
        result = deliver(WebhookTransport(backend.url, SECRET), item())
        assert not result.ok and "HTTP 503" in result.error
    finally:
        backend.stop()
    result = deliver(WebhookTransport(backend.url, SECRET, 2), item())
    assert not result.ok and "cannot reach" in result.error


def test_url_rules():
    assert check_url("https://responder.example/hook")
    assert check_url("http://127.0.0.1:8080/hook")
    with pytest.raises(ConfigError, match="loopback address only"):
        check_url("http://responder.example/hook")
    with pytest.raises(ConfigError, match="https"):
        check_url("ftp://x/y")


def test_forwarding_settings_name_the_key(tmp_path):
    base = str(tmp_path)
    with pytest.raises(ConfigError, match="forward.webhook.secret_file"):
        config.load_dict({"forward": {"webhook": {"url": "https://a.example/h"}}}, base)
    with pytest.raises(ConfigError, match="forward.dc09.port"):
        config.load_dict({"forward": {"dc09": {"host": "127.0.0.1"}}}, base)
    with pytest.raises(ConfigError, match="forward.dc09.account"):
        config.load_dict({"forward": {"dc09": {"host": "127.0.0.1", "port": 9}}}, base)
    with pytest.raises(ConfigError, match="forward.dc09.format"):
        config.load_dict({"forward": {"dc09": {"format": "CID"}}}, base)
    with pytest.raises(ConfigError, match="forward.backoff_min_s"):
        config.load_dict({"forward": {"backoff_min_s": 10, "backoff_max_s": 1}}, base)
    c = config.load_dict({"forward": {"max_event_age_s": 30}}, base)
    assert c.forward.max_event_age_s == 30 and c.forward.webhook.url == ""
