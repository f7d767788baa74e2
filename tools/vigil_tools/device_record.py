"""A device's identity and secrets, as one private JSON file (the "device record").

    {"device_id": "1a2b3c4d", "key": "<64 hex>", "mqtt_username": "1a2b3c4d",
     "mqtt_password": "...", "mqtt_client_id": "vigil-1a2b3c4d", "protocol": 2}

It is the gateway's provisioning record (`vigil gateway device import` reads it as is):
`vigil keygen` writes it, `vigil provision` puts it on the wearable and registers it, and
`vigil monitor` / `vigil sim` take the key from it. The file is created mode 0600 and never
overwritten; no error message ever repeats the key or the password.
"""
import json
import os
import secrets
from collections import namedtuple

import vigil_protocol as p

from . import ToolError

DeviceRecord = namedtuple("DeviceRecord", "device_id key mqtt_password label")


def device_hex(device_id):
    return "%08x" % device_id


def new_record(device_id=None, label=""):
    """Fresh secrets: a random non-zero device id unless one is given, a 256-bit key and a
    broker password."""
    while device_id is None:
        device_id = secrets.randbits(32) or None
    return DeviceRecord(device_id, secrets.token_bytes(p.KEY_LEN), secrets.token_urlsafe(24),
                        label)


def parse_device_id(text):
    digits = text.lower()
    digits = digits[2:] if digits.startswith("0x") else digits
    try:
        value = int(digits, 16)
    except ValueError:
        value = 0
    if len(digits) > 8 or not 1 <= value <= 0xFFFFFFFF:
        raise ToolError("a device id is 1 to 8 hex digits, not all zero (got %r)" % text)
    return value


def to_json(record):
    device = device_hex(record.device_id)
    # "protocol": the frames the unit seals once flashed with this release's firmware.
    data = {"device_id": device, "key": record.key.hex(), "mqtt_username": device,
            "mqtt_password": record.mqtt_password, "mqtt_client_id": "vigil-" + device,
            "protocol": 2}
    if record.label:
        data["label"] = record.label
    return json.dumps(data, indent=2) + "\n"


def save(path, record):
    """Create `path` readable by its owner only; refuse to replace an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ToolError("%s exists: not overwriting a device record (its key may be in use)"
                        % path) from None
    except OSError as exc:
        raise ToolError("cannot create %s: %s" % (path, exc.strerror)) from None
    with os.fdopen(fd, "w") as f:
        f.write(to_json(record))
        f.flush()
        os.fsync(f.fileno())


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ToolError("cannot read the device record %s: %s" % (path, exc.strerror)) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ToolError("%s is not a device record (not JSON); make one with `vigil keygen`"
                        % path) from None
    if not isinstance(data, dict) or "device_id" not in data or "key" not in data:
        raise ToolError("%s is not a device record (it needs device_id and key)" % path)
    device_id = parse_device_id(str(data["device_id"]))
    try:
        key = bytes.fromhex(str(data["key"]))
    except ValueError:
        key = b""
    if len(key) != p.KEY_LEN:
        raise ToolError("%s: the key must be %d hex digits" % (path, 2 * p.KEY_LEN))
    password = data.get("mqtt_password")
    if password is not None and (not isinstance(password, str) or not password):
        raise ToolError("%s: mqtt_password must be a non-empty string" % path)
    return DeviceRecord(device_id, key, password, str(data.get("label", "")))


def load_key(path):
    """The key from a device record, or from a file holding only the key in hex."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as exc:
        raise ToolError("cannot read the key file %s: %s" % (path, exc.strerror)) from None
    if text.startswith("{"):
        return load(path).key
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != p.KEY_LEN:
        raise ToolError("%s holds no device key (%d hex digits, or a device record)"
                        % (path, 2 * p.KEY_LEN))
    return key
