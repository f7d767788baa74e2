"""Vigil's edge gateway: MQTT ingest, verification, durable store, staged acks, incidents and
supervision. `vigil gateway run --config gateway.toml` starts it; see gateway/README.md."""
from .errors import ConfigError, GatewayError, RegistryError, StoreError  # noqa: F401
