# Wearer profiles: who wears a device, whom to call, what a responder should know. Forwarded
# with every incident of the device; never logged (logs carry the device id only).
#
# Rules:
#   one profile per device id (the device need not be registered yet: a technician may fill the
#   profile before provisioning);
#   a contact is "name,phone,relation": all three present, the phone made of digits, spaces and
#   + - ( ) only;
#   zone (1-999) is the wearer's zone number at the alarm receiving centre (SIA DC-09);
#   dc09_account (3-16 hex digits, or empty) is the wearer's own account there, when the ARC
#   gives each wearer one (dc09_identity.py).
import json
import re
import time
from collections import namedtuple

from .errors import GatewayError

Wearer = namedtuple("Wearer", "device_id name contacts notes zone updated_at dc09_account")

_ACCOUNT = re.compile(r"^[0-9A-Fa-f]{3,16}$")
_PHONE = re.compile(r"^\+?[0-9 ()\-]{3,24}$")


class WearerError(GatewayError):
    """A wearer profile field is not usable; the message names it."""


def parse_contact(text):
    """'B. Lead,+44 1234 567890,supervisor' -> {"name", "phone", "relation"}."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(parts):
        raise WearerError('--contact: write "name,phone,relation" (got %d fields)' % len(parts))
    name, phone, relation = parts
    if not _PHONE.match(phone):
        raise WearerError("--contact: the phone number may hold digits, spaces, + - ( ) only")
    return {"name": name, "phone": phone, "relation": relation}


def checked(device_id, name, contacts=(), notes="", zone=1, at=None, dc09_account=""):
    """The profile's row as both backends store it (contacts as JSON text), or WearerError
    naming the field (wearers_pg.py is the PostgreSQL backend)."""
    if not name or not name.strip():
        raise WearerError("--name: a wearer needs a name")
    if not 1 <= int(zone) <= 999:
        raise WearerError("--zone: from 1 to 999")
    if dc09_account and not _ACCOUNT.match(dc09_account):
        raise WearerError("--dc09-account: 3 to 16 hex digits")
    return (device_id, name.strip(), json.dumps(list(contacts)), notes or "", int(zone),
            time.time() if at is None else at, (dc09_account or "").upper())


def from_row(row):
    """A stored row (device_id, name, contacts JSON, notes, zone, updated_at, dc09_account)."""
    return Wearer(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6])


class Wearers:
    def __init__(self, conn):
        self.conn = conn

    def set(self, device_id, name, contacts=(), notes="", zone=1, at=None, dc09_account=""):
        self.conn.execute(
            "INSERT OR REPLACE INTO wearers (device_id, name, contacts, notes, zone, updated_at, "
            "dc09_account) VALUES (?, ?, ?, ?, ?, ?, ?)",
            checked(device_id, name, contacts, notes, zone, at, dc09_account))

    def get(self, device_id):
        return get(self.conn, device_id)

    def all(self):
        return [self.get(r[0]) for r in self.conn.execute(
            "SELECT device_id FROM wearers ORDER BY device_id")]

    def remove(self, device_id):
        return self.conn.execute("DELETE FROM wearers WHERE device_id = ?",
                                 (device_id,)).rowcount > 0


def get(conn, device_id):
    """The device's profile or None (no schema work: safe inside a transaction)."""
    row = conn.execute("SELECT device_id, name, contacts, notes, zone, updated_at, dc09_account "
                       "FROM wearers WHERE device_id = ?", (device_id,)).fetchone()
    return None if row is None else from_row(row)


def as_payload(wearer):
    """The webhook's `wearer` object (or the empty one when no profile is set)."""
    if wearer is None:
        return {"name": None, "contacts": [], "notes": None}
    return {"name": wearer.name, "contacts": wearer.contacts, "notes": wearer.notes or None}
