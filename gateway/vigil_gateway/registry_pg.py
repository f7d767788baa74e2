# The device registry on PostgreSQL (registry.py is SQLite's), in progress: what ingest needs.
#
# Rules:
#   the devices' rows are store_pg's `devices` table; each worker reads a device's row under
#   its lock in every batch (device_state_pg.py), so a revoke or a new key version is seen by
#   the next batch of every worker;
#   keys stay out of the database, as on SQLite: <keys_dir>/<dev>.v<version>.key, mode 0600,
#   read and checked by registry.Registry's own code (every worker needs the key files of the
#   devices it serves; how they get there is the deployment's: a shared read-only volume, or
#   the same files provisioned to each worker).
import time

import vigil_protocol as p

from .registry import Registry, write_private_file


class PostgresRegistry:
    def __init__(self, store, keys_dir, clock=time.time):
        self.store = store
        self.keys_dir = keys_dir
        self.clock = clock
        self._keys = {}  # (device_id, key_version) -> DeviceKey: a key version never changes

    # the key files, exactly as on SQLite
    key = Registry.key
    key_path = Registry.key_path
    _read_key = Registry._read_key
    _ensure_keys_dir = Registry._ensure_keys_dir

    def get(self, device_id):
        return self.store.device(device_id)

    def add(self, device_id, key, interval_s=None, counter_floor=None, protocol=2):
        """Register a device with its 32-byte frame key (key version 1)."""
        p.DeviceKey(key)  # checks the length
        self._ensure_keys_dir()
        write_private_file(self.key_path(device_id, 1), key.hex() + "\n")
        self.store.add_device(device_id, self.clock(), counter_floor=counter_floor,
                              interval_s=interval_s, protocol=protocol)
        return self.get(device_id)

    def revoke(self, device_id):
        self.store.revoke(device_id, self.clock())
