"""Which wearable is advertising: a rotating identifier (protocol/SPEC.md section 10) is
resolved by trying the BLE keys of the devices on the allow-list, as a resolvable private
address is resolved against the IRKs a host holds.

Each device's BLE keys are derived once per device key and kept (the device key is looked up
again every KEY_TTL_S, so a replaced key is taken up within a minute without a registry query
per HMAC); every identifier heard is remembered with its verdict, so a new identifier costs one
HMAC per allowed device once and its later advertisements a dictionary lookup. A "no" is
forgotten after NEGATIVE_TTL_S, so a device registered meanwhile is found at its next
advertisement.
"""
import collections
import time

from vigil_protocol.ble_id import BleKey


class Resolver:
    CACHE = 4096           # identifiers remembered (a site's wearables rotate every 15 min)
    NEGATIVE_TTL_S = 60.0
    KEY_TTL_S = 60.0

    def __init__(self, key_of, clock=time.monotonic):
        """`key_of(device_id)` is the device's DeviceKey, or None when it has none."""
        self.key_of = key_of
        self.clock = clock
        self._ble = {}   # device_id -> (DeviceKey, BleKey, when the device key was looked up)
        self._seen = collections.OrderedDict()  # identifier -> (device_id or None, when)

    def ble_key(self, device_id):
        """The device's BleKey (derived again only when its device key changed), or None."""
        now = self.clock()
        cached = self._ble.get(device_id)
        if cached is not None and now - cached[2] < self.KEY_TTL_S:
            return cached[1]
        key = self.key_of(device_id)
        if key is None:
            self._ble.pop(device_id, None)
            return None
        if cached is None or cached[0] is not key:
            cached = (key, BleKey(key), now)
        else:
            cached = (key, cached[1], now)
        self._ble[device_id] = cached
        return cached[1]

    def known(self, identifier, allowed):
        """(True, device id or None) when `identifier` was judged already and the verdict
        still holds; (False, None) when it must be resolved."""
        entry = self._seen.get(identifier)
        if entry is None:
            return False, None
        device_id, when = entry
        if device_id is None:
            if self.clock() - when < self.NEGATIVE_TTL_S:
                return True, None
        elif device_id in allowed:
            return True, device_id
        del self._seen[identifier]
        return False, None

    def resolve(self, identifier, allowed):
        """The device id on `allowed` whose key made `identifier`, or None; remembered."""
        found = None
        for device_id in sorted(allowed):
            ble = self.ble_key(device_id)
            if ble is not None and ble.resolves(identifier):
                found = device_id
                break
        self._seen[identifier] = (found, self.clock())
        self._seen.move_to_end(identifier)
        while len(self._seen) > self.CACHE:
            self._seen.popitem(last=False)
        return found
