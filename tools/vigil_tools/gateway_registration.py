"""Register a provisioned wearable with the gateway: its key in the registry, and its broker
password (as a hash) for `vigil gateway broker-config`.

Uses the gateway's own registry (vigil_gateway.registry through service.open_state) so the
rules stay the gateway's. Re-running is safe: a device already registered with the same key is
left alone; one registered with another key is refused before anything else happens.
"""
import contextlib
import io

import vigil_protocol as p

from . import ToolError
from .device_record import device_hex

ALREADY = "already registered"
ADDED = "registered"

_PROBE = b"vigil provisioning: same key?"


@contextlib.contextmanager
def _state(config_path):
    """(registry, store) of the gateway, with its errors as ToolErrors."""
    from vigil_gateway import GatewayError, config, service

    try:
        cfg = config.load(config_path)
        conn, registry, store = service.open_state(cfg)
    except GatewayError as exc:
        raise ToolError("gateway config: %s" % exc) from None
    try:
        yield registry, store
    except GatewayError as exc:
        raise ToolError("gateway registry: %s" % exc) from None
    finally:
        conn.close()


@contextlib.contextmanager
def _registry(config_path):
    with _state(config_path) as (registry, _store):
        yield registry


def _same_key(registry, device, key):
    # Compare through MACs: the registry never hands out key bytes.
    return registry.key(device).tag(p.UP, _PROBE) == p.DeviceKey(key).tag(p.UP, _PROBE)


def check(config_path, record):
    """ADDED-to-be (None) or ALREADY; ToolError when the registry holds this id otherwise."""
    with _registry(config_path) as registry:
        device = registry.get(record.device_id)
        if device is None:
            return None
        name = device_hex(record.device_id)
        if device.state != "active":
            raise ToolError("device %s is %s in the gateway registry: give this wearable a new "
                            "device record (`vigil keygen`)" % (name, device.state))
        if not _same_key(registry, device, record.key):
            raise ToolError("device %s is already registered with another key: use its own "
                            "device record, or `vigil gateway device rotate-key`" % name)
        if not device.mqtt_password_hash:
            raise ToolError("device %s is registered without a broker password: set one with "
                            "`vigil gateway device rotate-key`" % name)
        return ALREADY


# Counters a unit may have used beyond the highest one the gateway has stored (frames still at
# the broker, or sent but lost): a unit that starts over is set this far past it.
COUNTER_MARGIN = 4096


def counter_floor(config_path, record):
    """Where a unit with no counters on its flash must start for this device id: past every
    counter the gateway has stored for it (it refuses older ones as replays), or 0 when the
    gateway has none."""
    with _state(config_path) as (_registry_, store):
        highest = store.recent_tags(record.device_id, 1)
    return highest[0][0] + 1 + COUNTER_MARGIN if highest else 0


def register(config_path, record, interval_s=None, counter_floor=None):
    """Add the device (key and broker password) unless it is already there; returns
    ADDED or ALREADY. counter_floor: where the unit's counters start, when provisioning
    started it over (None: not known)."""
    if check(config_path, record) == ALREADY:
        return ALREADY
    with _registry(config_path) as registry:
        registry.add(record.device_id, record.key, record.mqtt_password, interval_s,
                     record.label, counter_floor=counter_floor)
    return ADDED


def write_broker_files(config_path, out_dir):
    """Rewrite Mosquitto's password and ACL files from the registry (the gateway's command)."""
    from .cli import main as vigil_main

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        status = vigil_main(["gateway", "broker-config", "--config", str(config_path),
                             "--out", str(out_dir)])
    if status != 0:
        raise ToolError("writing the broker files failed: %s" % quiet.getvalue().strip())
