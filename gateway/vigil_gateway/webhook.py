"""Signed JSON webhooks to responder backends, without I/O: the payload, its signature and the
receiver's check. Schema: gateway/webhook-schema.json (version "vigil.incident.v1").

Rules:
  body       = UTF-8 JSON, keys sorted, no insignificant whitespace (what is signed is sent)
  times      = every time in the body (sent_at, incident.opened_at, updated_at, raised_at,
               location.at, location.fix.at, audit[].at) is RFC 3339 in UTC with "Z" and
               milliseconds, "2026-12-01T15:48:27.250Z": rfc3339.format (the actions API's
               and the log lines' form, microseconds) cut to the millisecond, so a moment
               reads the same here as there; durations are numbers of seconds (*_s)
  signature  = header "Vigil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
               '<t>.' + body)>"; the receiver recomputes it, compares in constant time and
               refuses a timestamp more than TOLERANCE_S away from its clock (replays). t stays
               an integer of unix seconds: it is part of the signing scheme (the signed bytes
               begin with it), not a time of the event, and it is sent_at in whole seconds
  idempotency= header "Idempotency-Key: <device hex>-<alarm counter or incident id>-<event>"
               (also in the body): a backend that sees a key twice has seen one event, once
  DURESS     = the payload says, in `procedure`, that the wearer must not be contacted, and
               carries the escalation contacts for the police
"""
import hashlib
import hmac
import json
import time

from . import rfc3339

SCHEMA = "vigil.incident.v1"
SIGNATURE_HEADER = "Vigil-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
TOLERANCE_S = 300

PROCEDURES = {
    "DURESS": {"contact_wearer": False,
               "instruction": "Duress: do NOT contact the wearer. Contact the police directly "
                              "with everything known, including the escalation contacts, then "
                              "inform the escalation contacts."},
    "default": {"contact_wearer": True,
                "instruction": "Contact the wearer at once. If they answer but do not speak, "
                               "ask them to tap the device twice if they need help. If they are "
                               "at risk, call emergency services and the escalation contacts."},
}


class SignatureError(Exception):
    """A webhook request whose signature or timestamp does not check out."""


def idempotency_key(device_id, ref, event):
    return "%08x-%s-%s" % (device_id, ref, event)


def encode_body(payload):
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def sign(secret, body, timestamp=None):
    """The Vigil-Signature header value for `body` (bytes)."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return "t=%d,v1=%s" % (t, mac)


def verify(secret, header, body, now=None, tolerance_s=TOLERANCE_S):
    """Check a request as a receiver must; raises SignatureError with the reason."""
    now = time.time() if now is None else now
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError, AttributeError):
        raise SignatureError("malformed %s header" % SIGNATURE_HEADER) from None
    if abs(now - t) > tolerance_s:
        raise SignatureError("timestamp %d is outside the allowed %d s" % (t, tolerance_s))
    expected = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("signature does not match")
    return t


def incident_payload(event, incident, device_id, wearer, audit, location=None, sent_at=None,
                     late=None, key=None):
    """The webhook body for one incident event.

    event    -- what happened: "raised", "wearer_confirms", "contact_restored", "resolved", ...
    incident -- dict: id, kind, state, counter, opened_at, updated_at
    wearer   -- dict: name, contacts [{name, phone, relation}], notes (or None)
    audit    -- list of dicts: at, event, detail
    location -- dict: lat, lon, accuracy_m, at (or None)
    late     -- dict: raised_at, late_s, basis, held_up_to_s (lateness.Lateness), when the
                alarm arrived late (or None)
    key      -- the event's idempotency key, as the outbox made it (outbox.event_key); by
                default the key of the incident's one `event`
    """
    kind = incident["kind"]
    ref = incident["counter"] if incident.get("counter") is not None else "i%d" % incident["id"]
    return {
        "schema": SCHEMA,
        "idempotency_key": key or idempotency_key(device_id, ref, event),
        "event": event,
        "sent_at": _iso(time.time() if sent_at is None else sent_at),
        "incident": {
            "id": incident["id"],
            "kind": kind,
            "state": incident["state"],
            "alarm_counter": incident.get("counter"),
            "opened_at": _iso(incident["opened_at"]),
            "updated_at": _iso(incident["updated_at"]),
            # When the alarm was raised at the latest: earlier than opened_at if it came late.
            "raised_at": _iso(late["raised_at"] if late else incident["opened_at"]),
            "late": None if late is None else {
                "late_by_s": round(late["late_s"], 3),
                "basis": late["basis"].split(",") if late["basis"] else [],
                "possibly_held_s": None if late["held_up_to_s"] is None
                else round(late["held_up_to_s"], 3)},
        },
        "procedure": PROCEDURES.get(kind, PROCEDURES["default"]),
        "device": {"id": "%08x" % device_id},
        "wearer": wearer or {"name": None, "contacts": [], "notes": None},
        "location": location,
        "audit": [{"at": _iso(a["at"]), "event": a["event"], "detail": a["detail"]}
                  for a in audit],
    }


def _iso(t):
    """Unix seconds as the body's times: "2026-12-01T15:48:27.250Z"."""
    return rfc3339.format(t)[:-4] + "Z"  # "...27.250123Z": its first three digits
