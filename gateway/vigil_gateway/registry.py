# The device registry: which wearables this gateway serves, their state and their keys.
#
# Rules:
#   a device id is a u32 other than 0, written as 8 lowercase hex digits (as in MQTT topics);
#   a device's frame key lives in its own file, <keys_dir>/<dev>.v<version>.key, mode 0600 in a
#   0700 folder, owned by the gateway's user; a key file others can read is refused, not used;
#   the database holds no key, only the key's version, and only a salted hash of the device's
#   broker password (what `vigil gateway broker-config` writes for Mosquitto);
#   revoke keeps the device (its frames and incidents stay) but rejects its frames from then on;
#   rotate-key writes the new key file, then switches the version, then removes the old file;
#   `protocol` is the frame version the gateway seals the device's downlinks in: a new device
#     is 2; a device from a record of older tools is 1 until a v2 frame of its verifies
#     (raise_protocol), and it never goes back down;
#   `counter_floor` is where the unit's counters start, when that is known (a new key, or
#     provisioning that started the unit over): every counter from it up that the gateway
#     has not stored is an authentic frame, however late it comes; NULL when not known (a
#     key in service elsewhere), and the pipeline falls back to the first frame it accepts.
import json
import os
import secrets
import time
from collections import namedtuple
from contextlib import contextmanager, nullcontext

import vigil_protocol as p

from .broker_config import mosquitto_hash
from .errors import RegistryError

ACTIVE = "active"
REVOKED = "revoked"

Device = namedtuple("Device", "device_id state key_version mqtt_password_hash interval_s "
                              "label added_at protocol counter_floor")
_COLUMNS = ("device_id, state, key_version, mqtt_password_hash, interval_s, label, added_at, "
            "protocol, counter_floor")
PROTOCOLS = (1, 2)



def device_hex(device_id):
    return "%08x" % device_id


def parse_device_id(text):
    """'00c0ffee' or '0x00c0ffee' (or an int) -> 0x00c0ffee; RegistryError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        digits = str(text).lower()
        digits = digits[2:] if digits.startswith("0x") else digits
        if not digits or len(digits) > 8 or any(c not in "0123456789abcdef" for c in digits):
            raise RegistryError("a device id is up to 8 hex digits, like 00c0ffee (got %r)"
                                % (text,))
        value = int(digits, 16)
    if not 1 <= value <= 0xFFFFFFFF:
        raise RegistryError("a device id is from 00000001 to ffffffff")
    return value


def parse_key_hex(text, where):
    try:
        key = bytes.fromhex(text.strip())
    except (ValueError, AttributeError):
        raise RegistryError("%s: the key is not hexadecimal" % where) from None
    if len(key) != p.KEY_LEN:
        raise RegistryError("%s: a device key is %d bytes (%d hex digits)"
                            % (where, p.KEY_LEN, 2 * p.KEY_LEN))
    return key


def write_private_file(path, text):
    """Write `text` to a new file only this user can read, atomically (temp file + rename)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_counter(value, what):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or
                              not 0 <= value <= 0xFFFFFFFF):
        raise RegistryError("%s is a whole number from 0 to 4294967295" % what)


class Registry:
    def __init__(self, conn, keys_dir, clock=time.time):
        self.conn = conn
        self.keys_dir = keys_dir
        self.clock = clock
        self._keys = {}  # (device_id, key_version) -> DeviceKey

    # -- reading --
    def get(self, device_id):
        row = self.conn.execute("SELECT %s FROM devices WHERE device_id = ?" % _COLUMNS,
                                (device_id,)).fetchone()
        return Device(*row) if row else None

    def devices(self):
        rows = self.conn.execute("SELECT %s FROM devices ORDER BY device_id" % _COLUMNS)
        return [Device(*row) for row in rows]

    def key(self, device):
        """The device's current DeviceKey, read once per key version from its private file."""
        cache_key = (device.device_id, device.key_version)
        key = self._keys.get(cache_key)
        if key is None:
            key = p.DeviceKey(self._read_key(device.device_id, device.key_version))
            self._keys = {k: v for k, v in self._keys.items() if k[0] != device.device_id}
            self._keys[cache_key] = key
        return key

    def key_path(self, device_id, version):
        return os.path.join(self.keys_dir, "%s.v%d.key" % (device_hex(device_id), version))

    def _read_key(self, device_id, version):
        path = self.key_path(device_id, version)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise RegistryError("cannot read the key file of %s: %s"
                                % (device_hex(device_id), exc.strerror)) from None
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            if st.st_mode & 0o077 or st.st_uid != os.geteuid():
                raise RegistryError("refusing the key file %s: it must belong to this user and "
                                    "be readable by nobody else (chmod 600)" % path)
            return parse_key_hex(f.read(), path)

    # -- changing --
    @contextmanager
    def batch(self):
        """`with registry.batch():` the devices added inside go in whole or not at all (one
        transaction; a crash midway leaves none of them). Key files written for a batch that
        went back stay, unused (0600)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _ensure_keys_dir(self):
        os.makedirs(self.keys_dir, mode=0o700, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)

    def add(self, device_id, key, mqtt_password=None, interval_s=None, label="", protocol=2,
            counter_floor=None, downlinks_after=None):
        """Register a device with its 32-byte frame key. RegistryError if it exists.
        `downlinks_after`: a device moving in from another home, whose last downlink counter
        there was at most this: this gateway's downlinks to it start above it."""
        if protocol not in PROTOCOLS:
            raise RegistryError("protocol is 1 or 2, not %r" % (protocol,))
        _check_counter(counter_floor, "a counter floor")
        _check_counter(downlinks_after, "--downlinks-after")
        if self.get(device_id) is not None:
            raise RegistryError("device %s is already registered (use rotate-key to change its "
                                "key)" % device_hex(device_id))
        p.DeviceKey(key)  # checks the length
        self._check_interval(interval_s)
        self._ensure_keys_dir()
        write_private_file(self.key_path(device_id, 1), key.hex() + "\n")
        now = self.clock()
        with nullcontext() if self.conn.in_transaction else self.batch():  # (both or none)
            self.conn.execute(
                "INSERT INTO devices (device_id, state, key_version, mqtt_password_hash, "
                "interval_s, label, added_at, updated_at, protocol, counter_floor) "
                "VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, ACTIVE, mosquitto_hash(mqtt_password) if mqtt_password else None,
                 interval_s, label, now, now, protocol, counter_floor))
            if downlinks_after:
                self.conn.execute("INSERT INTO downlink_counters (device_id, last_counter) "
                                  "VALUES (?, ?)", (device_id, downlinks_after))
        return self.get(device_id)

    def raise_protocol(self, device_id, version):
        """A frame of `version` verified from the device: its downlinks are sealed in that
        version from now on, if it is higher. Call inside the caller's transaction."""
        self.conn.execute("UPDATE devices SET protocol = ?, updated_at = ? WHERE device_id = ? "
                          "AND protocol < ?", (version, self.clock(), device_id, version))

    def revoke(self, device_id):
        device = self._existing(device_id)
        self.conn.execute("UPDATE devices SET state = ?, updated_at = ? WHERE device_id = ?",
                          (REVOKED, self.clock(), device_id))
        return device._replace(state=REVOKED)

    def rotate_key(self, device_id, key, mqtt_password=None):
        """Give a device a new frame key (and optionally a new broker password)."""
        device = self._existing(device_id)
        p.DeviceKey(key)
        self._ensure_keys_dir()
        version = device.key_version + 1
        write_private_file(self.key_path(device_id, version), key.hex() + "\n")
        if mqtt_password:
            self.conn.execute("UPDATE devices SET mqtt_password_hash = ? WHERE device_id = ?",
                              (mosquitto_hash(mqtt_password), device_id))
        self.conn.execute("UPDATE devices SET key_version = ?, updated_at = ? WHERE device_id = ?",
                          (version, self.clock(), device_id))
        old = self.key_path(device_id, device.key_version)
        if os.path.exists(old):
            os.unlink(old)
        return self.get(device_id)

    def import_record(self, record):
        """Register a device from a provisioning record (a dict; see gateway/README.md)."""
        if not isinstance(record, dict):
            raise RegistryError("a provisioning record is a JSON object")
        for field in ("device_id", "key"):
            if field not in record:
                raise RegistryError("the provisioning record has no %r" % field)
        device_id = parse_device_id(record["device_id"])
        key = parse_key_hex(record["key"], "the provisioning record")
        password = record.get("mqtt_password")
        if password is not None and not isinstance(password, str):
            raise RegistryError("mqtt_password in the provisioning record must be a string")
        interval = record.get("checkin_interval_s")
        # A record of older tools says nothing: its unit may run v1 firmware (until a v2
        # frame from it verifies).
        protocol = record.get("protocol", 1)
        if protocol not in PROTOCOLS:
            raise RegistryError("protocol in the provisioning record must be 1 or 2")
        return self.add(device_id, key, password, interval, str(record.get("label", "")),
                        protocol, record.get("counter_floor"), record.get("downlinks_after"))

    def _existing(self, device_id):
        device = self.get(device_id)
        if device is None:
            raise RegistryError("no device %s in the registry" % device_hex(device_id))
        return device

    @staticmethod
    def _check_interval(interval_s):
        if interval_s is not None and (not isinstance(interval_s, int) or isinstance(
                interval_s, bool) or not 1 <= interval_s <= 0xFFFF):
            raise RegistryError("a check-in interval is a whole number of seconds, 1 to 65535")


def new_key():
    return secrets.token_bytes(p.KEY_LEN)


def new_password():
    return secrets.token_urlsafe(24)


def provisioning_record(device_id, key, mqtt_password, interval_s=None, label="", protocol=2):
    """The JSON text `device import` reads (and `device add` writes when it makes secrets)."""
    record = {"device_id": device_hex(device_id), "key": key.hex(), "protocol": protocol,
              "mqtt_password": mqtt_password, "mqtt_username": device_hex(device_id),
              "mqtt_client_id": "vigil-" + device_hex(device_id)}
    if interval_s:
        record["checkin_interval_s"] = interval_s
    if label:
        record["label"] = label
    return json.dumps(record, indent=2) + "\n"
