# Stored downlinks on PostgreSQL (store_pg.py's family; downlinks.py is SQLite's): DELIVERED
# acks and responder actions, made by whichever worker, each signed with a counter no other
# downlink of its device has.
#
# Rules:
#   a downlink is made inside a transaction holding its device's row (store_pg's lock): its
#   counter comes from that row and it is stored in the same transaction, so it is on disk
#   before it is sent and no two workers sign two downlinks with one counter;
#   one per (device, alarm counter, kind, code): a second worker asking for the same one, after
#   waiting for the lock, finds it made and makes nothing;
#   the frame is signed by the caller (sign(counter) -> bytes): keys never reach the database;
#   each one made NOTIFYs the channel CHANNEL at commit, so an idle pump in any worker wakes
#   (LISTEN) rather than polls.
from collections import namedtuple

CHANNEL = "vigil_downlinks"

Made = namedtuple("Made", "id device_id counter ref kind code frame")

SCHEMA = """
CREATE TABLE IF NOT EXISTS downlinks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices (device_id),
    counter bigint NOT NULL,
    ref bigint NOT NULL,
    kind text NOT NULL,
    code integer NOT NULL,
    frame bytea NOT NULL,
    created_at double precision NOT NULL,
    mqtt_sent_at double precision,
    ble_sent_at double precision,
    confirmed_at double precision,
    UNIQUE (device_id, ref, kind, code),
    UNIQUE (device_id, counter)
);
"""


def make(store, device_id, ref, kind, code, sign, at):
    """Inside store.locked([device_id]): the signed downlink, stored (and notified at commit);
    None if it exists already."""
    conn = store._conn
    found = conn.execute("SELECT 1 FROM downlinks WHERE device_id = %s AND ref = %s AND "
                         "kind = %s AND code = %s", (device_id, ref, kind, code)).fetchone()
    if found is not None:
        return None
    counter = store.take_downlink_counter(device_id)
    frame = sign(counter)
    row = conn.execute("INSERT INTO downlinks (device_id, counter, ref, kind, code, frame, "
                       "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                       (device_id, counter, ref, kind, code, frame, at)).fetchone()
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "%d" % device_id))
    return Made(row[0], device_id, counter, ref, kind, code, frame)
