# The device registry on PostgreSQL (registry.py is SQLite's and states the rules of a device):
# the same checks, the same key files, the devices' rows shared by every worker.
#
# Rules:
#   the devices' rows are store_pg's `devices` table; each worker reads a device's row under
#   its lock in every batch (device_state_pg.py), so a revoke or a new key version is seen by
#   the next batch of every worker;
#   keys stay out of the database, as on SQLite: <keys_dir>/<dev>.v<version>.key, mode 0600,
#   read and checked by registry.Registry's own code (every worker needs the key files of the
#   devices it serves; how they get there is the deployment's: a shared read-only volume, or
#   the same files provisioned to each worker); the database holds the key's version and the
#   broker password's salted hash only;
#   add writes the key file, then the row (a device two commands add at once is added once:
#   the second finds it registered); rotate-key writes the new key file, then switches the
#   version under the device's row lock, then removes the old file (a worker that has not read
#   the new file yet reads it at its next batch of that device);
#   revoke changes the row under its lock: the next batch of every worker rejects the device.
import os
import time
from contextlib import nullcontext

import vigil_protocol as p

from .broker_config import mosquitto_hash
from .errors import RegistryError
from .registry import (PROTOCOLS, REVOKED, Registry, _check_counter, device_hex,
                       write_private_file)


class PostgresRegistry:
    def __init__(self, store, keys_dir, clock=time.time):
        self.store = store
        self.keys_dir = keys_dir
        self.clock = clock
        self._keys = {}  # (device_id, key_version) -> DeviceKey: a key version never changes

    # the key files and the checks, exactly as on SQLite
    key = Registry.key
    key_path = Registry.key_path
    _read_key = Registry._read_key
    _ensure_keys_dir = Registry._ensure_keys_dir
    _check_interval = staticmethod(Registry._check_interval)
    import_record = Registry.import_record
    _existing = Registry._existing

    def get(self, device_id):
        return self.store.device(device_id)

    def batch(self):
        """On PostgreSQL each add is a transaction of its own (a batch is checked whole before
        the first, as on SQLite, but not added in one transaction)."""
        return nullcontext(self)

    def devices(self):
        return self.store.devices()

    def add(self, device_id, key, mqtt_password=None, interval_s=None, label="", protocol=2,
            counter_floor=None, downlinks_after=None):
        """Register a device with its 32-byte frame key (key version 1). RegistryError if it
        is registered already. `downlinks_after`: as registry.Registry.add's."""
        if protocol not in PROTOCOLS:
            raise RegistryError("protocol is 1 or 2, not %r" % (protocol,))
        _check_counter(counter_floor, "a counter floor")
        _check_counter(downlinks_after, "--downlinks-after")
        already = RegistryError("device %s is already registered (use rotate-key to change "
                                "its key)" % device_hex(device_id))
        if self.get(device_id) is not None:
            raise already
        p.DeviceKey(key)  # checks the length
        self._check_interval(interval_s)
        self._ensure_keys_dir()
        write_private_file(self.key_path(device_id, 1), key.hex() + "\n")
        if not self.store.add_device(device_id, self.clock(), counter_floor=counter_floor,
                                     downlink_counter=downlinks_after or 0,
                                     interval_s=interval_s, protocol=protocol,
                                     mqtt_password_hash=mosquitto_hash(mqtt_password)
                                     if mqtt_password else None, label=label):
            raise already  # (added meanwhile by another command)
        return self.get(device_id)

    def revoke(self, device_id):
        device = self._existing(device_id)
        self.store.revoke(device_id, self.clock())
        return device._replace(state=REVOKED)

    def rotate_key(self, device_id, key, mqtt_password=None):
        """Give a device a new frame key (and optionally a new broker password)."""
        device = self._existing(device_id)
        p.DeviceKey(key)
        self._ensure_keys_dir()
        version = device.key_version + 1
        write_private_file(self.key_path(device_id, version), key.hex() + "\n")
        self.store.set_key_version(device_id, version, self.clock(),
                                   mosquitto_hash(mqtt_password) if mqtt_password else None)
        old = self.key_path(device_id, device.key_version)
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass
        return self.get(device_id)
