# DC-09 state on SQLite (dc09_pg.py is PostgreSQL's): a receiving centre's sequence number
# and clock offset, each outbox row's sequence number, and the wearer profiles its messages
# name, on the gateway's database (forward_dc09.Dc09Transport reads and writes it).
from . import wearers as wearer_profiles

NAME = "dc09"  # the destination's name (forward_dc09.NAME)


class Dc09State:
    """The destination's sequence number and clock offset, on disk, and the wearer profiles
    its messages name (dc09_pg.PostgresDc09State is the same on PostgreSQL)."""

    def __init__(self, conn, destination=NAME):
        self.conn = conn
        self.destination = destination
        conn.execute("INSERT OR IGNORE INTO dc09_state VALUES (?, 0, 0.0)", (destination,))

    def _row(self):
        return self.conn.execute("SELECT sequence, clock_offset FROM dc09_state WHERE "
                                 "destination = ?", (self.destination,)).fetchone()

    def next_sequence(self):
        seq = self._row()[0] % 9999 + 1
        self.conn.execute("UPDATE dc09_state SET sequence = ? WHERE destination = ?",
                          (seq, self.destination))
        return seq

    def sequence_for(self, outbox_id):
        """The sequence number of outbox row `outbox_id`: taken at its first attempt, then the
        same on every retransmission, also after a restart."""
        row = self.conn.execute("SELECT sequence FROM dc09_sequences WHERE destination = ? AND "
                                "outbox_id = ?", (self.destination, outbox_id)).fetchone()
        if row is not None:
            return row[0]
        seq = self.next_sequence()
        self.conn.execute("INSERT INTO dc09_sequences VALUES (?, ?, ?)",
                          (self.destination, outbox_id, seq))
        return seq

    def wearer(self, device_id):
        """The device's wearer profile (its zone and account at the ARC), or None."""
        return wearer_profiles.get(self.conn, device_id)

    @property
    def clock_offset(self):
        return self._row()[1]

    def set_clock_offset(self, offset):
        self.conn.execute("UPDATE dc09_state SET clock_offset = ? WHERE destination = ?",
                          (offset, self.destination))
