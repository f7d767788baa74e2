# After a PostgreSQL database was restored with PostgreSQL's own tools (pg_restore of a
# pg_dump, a base backup and its WAL): what `vigil gateway restore` does for a SQLite backup,
# so the restored gateway never signs a downlink with a counter a wearable has seen
# (`vigil gateway restore --database-restored`, before any worker starts).
#
# Rules (backup.py's, on the database as it now is):
#   in one transaction, every device's row locked (in id order): its downlink counter moved
#     backup.DOWNLINK_MARGIN past what the database holds; the wearables have seen the
#     counters the lost database signed after its backup, and take any higher one;
#   then what the restored workers will send again is signed afresh above it (downlinks.py's
#     restored()): a v2 device's unconfirmed stored downlinks (their sent marks and leases
#     cleared: they go out at once) and any device's never sent, in the order they were made,
#     their counters before kept (downlink_old_counters) so a receipt for one still confirms;
#     one the wearable is past (a later downlink of its alarm confirmed) and a revoked device's
#     are left;
#   a device with downlinks to sign again whose key file is missing (the keys folder was not
#     restored with the database) stops it, naming the device, with nothing changed;
#   run again, it moves the counters again: harmless (the 32-bit counter has room for
#     thousands of restores), never a counter back.
import logging
from collections import namedtuple

from .backup import DOWNLINK_MARGIN
from .downlinks import signed_afresh
from .errors import GatewayError, StoreError
from .registry import REVOKED, Device

log = logging.getLogger("vigil_gateway.restore")

# a stored downlink to sign again, as the restore's query selects it
_Pending = namedtuple("_Pending", "id device_id ref kind code counter")


def after_restore(store, registry, margin=DOWNLINK_MARGIN):
    """Move every device's downlink counter `margin` past the database's and sign again what
    will be sent; returns (devices, downlinks signed again)."""
    with store.transaction():
        conn = store._conn
        ids = [row[0] for row in conn.execute("SELECT device_id FROM devices").fetchall()]
        rows = store.lock(ids)
        counters = {d: row.downlink_counter + margin for d, row in rows.items()}
        pending = conn.execute(
            "SELECT d.id, d.device_id, d.ref, d.kind, d.code, d.counter FROM downlinks d JOIN "
            "devices v USING (device_id) WHERE d.confirmed_at IS NULL AND v.state <> %s AND "
            "(v.protocol >= 2 OR (d.mqtt_sent_at IS NULL AND d.ble_sent_at IS NULL)) AND NOT "
            "EXISTS (SELECT 1 FROM downlinks later WHERE later.device_id = d.device_id AND "
            "later.ref = d.ref AND later.id > d.id AND later.confirmed_at IS NOT NULL) "
            "ORDER BY d.id", (REVOKED,)).fetchall()
        signed = 0
        for d in map(_Pending._make, pending):
            device_id = d.device_id
            device = Device(*rows[device_id][:len(Device._fields)])  # (as the lock read it)
            try:
                key = registry.key(device)
            except GatewayError as exc:  # (it names the device)
                raise StoreError("%s (nothing changed: restore the keys folder with the "
                                 "database)" % exc) from None
            counter = counters[device_id] = counters[device_id] + 1
            frame = signed_afresh(d, counter, key, device.protocol, "restored", log)
            unsent = device.protocol >= 2  # v2: offered again; v1: never sent, stays so
            # its counter before still names it, for a receipt sent before the restore
            conn.execute("INSERT INTO downlink_old_counters (device_id, counter, downlink_id) "
                         "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                         (device_id, d.counter, d.id))
            conn.execute(
                "UPDATE downlinks SET counter = %s, frame = %s, lease = NULL, lease_until = "
                "NULL, next_at = NULL, retries = 0" + (", mqtt_sent_at = NULL, ble_sent_at = "
                                                       "NULL, offered_at = NULL" if unsent
                                                       else "") + " WHERE id = %s",
                (counter, frame, d.id))
            signed += 1
        for device_id, counter in counters.items():
            conn.execute("UPDATE devices SET downlink_counter = %s WHERE device_id = %s",
                         (counter, device_id))
    return len(counters), signed
