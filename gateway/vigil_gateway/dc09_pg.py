# DC-09 state on PostgreSQL (store_pg.py's family; dc09_state.Dc09State is SQLite's): one
# sender per receiving centre at a time among all workers, and its sequence numbers.
#
# Rules:
#   a worker sends DC-09 to a receiving centre only while it holds that centre's advisory lock
#   (session-level, pg_try_advisory_lock): the centre pairs ACKs by sequence number, and two
#   senders would interleave them; a worker that dies or loses its connection frees the lock
#   with its session, and another takes it over;
#   a lost connection loses the lock too: is_sender() says so, and the worker asks again;
#   an outbox row gets its sequence number (0001-9999, wrapping) at its first attempt, under the
#   lock of the centre's state row, and keeps it on every retransmission, whichever worker
#   sends it (forward_dc09.py's rule, kept across workers);
#   the wearer profile a message names (zone, account) is read for each message, as last
#   committed (wearers_pg.py).
import psycopg

from . import wearers_pg
from .errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS dc09_state (
    destination text PRIMARY KEY,
    sequence integer NOT NULL DEFAULT 0,
    clock_offset double precision NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dc09_sequences (
    destination text NOT NULL,
    outbox_id bigint NOT NULL,
    sequence integer NOT NULL,
    PRIMARY KEY (destination, outbox_id)
);
"""


class PostgresDc09State:
    def __init__(self, store, destination="dc09"):
        self.store = store
        self.destination = destination
        self._locked_on = None  # the connection whose session holds the sender lock

    def try_become_sender(self):
        """True if this worker is (now) the centre's one sender."""
        if self.is_sender():
            return True
        conn = self.store.conn  # (connected again if it was lost)
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                               ("vigil-dc09:" + self.destination,)).fetchone()[0]
            conn.rollback()  # the lock is the session's: it outlives the transaction
        except psycopg.Error as exc:
            raise StoreError("cannot take the DC-09 sender lock: %s" % _first_line(exc)
                             ) from None
        self._locked_on = conn if got else None
        return got

    def is_sender(self):
        conn = self._locked_on
        return conn is not None and conn is self.store._conn and not (conn.closed or conn.broken)

    def next_sequence(self):
        """A sequence number for a message of no outbox row (a NULL link test). Commits."""
        return self._take(None)

    def wearer(self, device_id):
        """The device's wearer profile as last committed (its zone and account at the ARC:
        an operator's change is in the next message, whichever worker sends it), or None."""
        try:
            with self.store.conn.transaction():
                return wearers_pg.get(self.store._conn, device_id)
        except psycopg.Error as exc:
            raise StoreError("cannot read a wearer profile: %s" % _first_line(exc)) from None

    @property
    def clock_offset(self):
        """The receiving centre's clock less ours, as its last NAK said (the same for every
        worker)."""
        try:
            row = self.store.conn.execute("SELECT clock_offset FROM dc09_state WHERE "
                                          "destination = %s", (self.destination,)).fetchone()
            self.store._conn.rollback()
        except psycopg.Error as exc:
            raise StoreError("cannot read the DC-09 state: %s" % _first_line(exc)) from None
        return row[0] if row else 0.0

    def set_clock_offset(self, offset):
        try:
            with self.store.conn.transaction():
                self.store._conn.execute(
                    "INSERT INTO dc09_state (destination, clock_offset) VALUES (%s, %s) ON "
                    "CONFLICT (destination) DO UPDATE SET clock_offset = excluded.clock_offset",
                    (self.destination, offset))
        except psycopg.Error as exc:
            raise StoreError("cannot write the DC-09 state: %s" % _first_line(exc)) from None

    def sequence_for(self, outbox_id):
        """The sequence number of outbox row `outbox_id`, taken at its first attempt, then the
        same on every retransmission, by any worker. Commits."""
        return self._take(outbox_id)

    def _take(self, outbox_id):
        try:
            with self.store.conn.transaction():
                conn = self.store._conn
                conn.execute("INSERT INTO dc09_state (destination) VALUES (%s) "
                             "ON CONFLICT DO NOTHING", (self.destination,))
                last = conn.execute("SELECT sequence FROM dc09_state WHERE destination = %s "
                                    "FOR UPDATE", (self.destination,)).fetchone()[0]
                if outbox_id is not None:
                    row = conn.execute("SELECT sequence FROM dc09_sequences WHERE "
                                       "destination = %s AND outbox_id = %s",
                                       (self.destination, outbox_id)).fetchone()
                    if row is not None:
                        return row[0]
                seq = last % 9999 + 1
                conn.execute("UPDATE dc09_state SET sequence = %s WHERE destination = %s",
                             (seq, self.destination))
                if outbox_id is not None:
                    conn.execute("INSERT INTO dc09_sequences VALUES (%s, %s, %s)",
                                 (self.destination, outbox_id, seq))
                return seq
        except psycopg.Error as exc:
            raise StoreError("cannot take a DC-09 sequence number: %s" % _first_line(exc)
                             ) from None


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
