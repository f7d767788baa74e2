"""Vigil's edge gateway (MQTT and BLE ingest, durable store, forwarding): arriving with its issue."""
