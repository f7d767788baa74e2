# The site's beacon table on PostgreSQL, shared by every worker: beacons.Beacons' rules (what
# may be added, how resolve() names a place) unchanged, with PostgreSQL's SQL, on a
# store's live connection: a worker's inside the batch's transaction (resolve() at ingest), a
# command's for add and remove, one transaction each.
#
# Rules (beside beacons.py's):
#   the primary key (kind, short_id) and the unique identifier refuse two workers or commands
#     adding clashing beacons at once: the second gets BeaconError, as if it had come later.
import psycopg

from .beacons import COLUMNS, BeaconError, Beacons, from_row

SCHEMA = """
CREATE TABLE IF NOT EXISTS beacons (
    kind text NOT NULL,
    short_id bytea NOT NULL,
    identifier text NOT NULL UNIQUE,
    place text NOT NULL,
    floor text NOT NULL DEFAULT '',
    room text NOT NULL DEFAULT '',
    lat double precision,
    lon double precision,
    added_at double precision NOT NULL,
    PRIMARY KEY (kind, short_id)
);
"""


class PostgresBeacons(Beacons):
    """The beacon table on a store_pg.PostgresStore's live connection (Beacons' interface):
    resolve() inside the caller's transaction (the batch's, at ingest); add() and remove()
    each in one transaction of their own, or a savepoint of the caller's."""

    def __init__(self, store):
        self.store = store

    @property
    def conn(self):
        return self.store.conn

    def add(self, kind, identifier, place, floor="", room="", lat=None, lon=None, at=None):
        try:
            with self.conn.transaction():
                return Beacons.add(self, kind, identifier, place, floor, room, lat, lon, at)
        except psycopg.errors.UniqueViolation:  # (the transaction is over: rolled back)
            raise BeaconError("%s %s: one with its identifier or short id was placed "
                              "meanwhile (see `vigil gateway beacon list`)"
                              % (kind, identifier)) from None

    def remove(self, kind, identifier):
        with self.conn.transaction():
            Beacons.remove(self, kind, identifier)

    def all(self):
        return [from_row(row) for row in self.conn.execute(
            "SELECT %s FROM beacons ORDER BY place, floor, room, kind, identifier" % COLUMNS
        ).fetchall()]

    def _by_identifier(self, kind, canonical):
        row = self.conn.execute("SELECT %s FROM beacons WHERE kind = %%s AND identifier = %%s"
                                % COLUMNS, (kind, canonical)).fetchone()
        return None if row is None else from_row(row)

    def _by_short_id(self, kind, sid):
        row = self.conn.execute("SELECT %s FROM beacons WHERE kind = %%s AND short_id = %%s"
                                % COLUMNS, (kind, sid)).fetchone()
        return None if row is None else from_row(row)

    def _insert(self, values):
        self.conn.execute("INSERT INTO beacons (%s) VALUES (%%s, %%s, %%s, %%s, %%s, %%s, "
                          "%%s, %%s, %%s)" % COLUMNS, values)

    def _delete(self, kind, canonical):
        return self.conn.execute("DELETE FROM beacons WHERE kind = %s AND identifier = %s",
                                 (kind, canonical)).rowcount
