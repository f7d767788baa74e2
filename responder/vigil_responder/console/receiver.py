# The webhook's rules, in the order a request is checked (the first failure is its answer,
# logged on one line and counted under its reason; nothing of a refused request is stored):
#   size       a body up to MAX_BODY bytes, else 413 too_large
#   signature  Vigil-Signature over the raw body (vigil_gateway.webhook.verify: HMAC-SHA256,
#              constant time, its timestamp within tolerance_s), else 401 bad_signature/stale
#   shape      JSON of schema vigil.incident.v1 with the fields the console reads, else 400
#              malformed (the log names the field)
#   duplicate  an idempotency key seen before: 200, nothing changes (counted duplicate)
#   stored     committed to SQLite, then 200: a 2xx tells the wearer DELIVERED
import json
import logging

from vigil_gateway import webhook

log = logging.getLogger("vigil.responder")

MAX_BODY = 1 << 20
KINDS = {"SOS", "DURESS", "FALL", "NO_MOTION", "LOW_BATTERY", "LOST_CONTACT"}
RESULTS = ("stored", "duplicate", "bad_signature", "stale", "malformed", "too_large")


class Receiver:
    def __init__(self, store, secret, tolerance_s=webhook.TOLERANCE_S):
        self.store = store
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.counts = dict.fromkeys(RESULTS, 0)

    def receive(self, signature, body):
        """(HTTP status, the stored event or None)."""
        if len(body) > MAX_BODY:
            return self._refuse(413, "too_large", "body over %d bytes" % MAX_BODY)
        try:
            webhook.verify(self.secret, signature or "", body, tolerance_s=self.tolerance_s)
        except webhook.SignatureError as exc:
            reason = "stale" if "outside" in str(exc) else "bad_signature"
            return self._refuse(401, reason, str(exc))
        event, problem = _parse(body)
        if problem:
            return self._refuse(400, "malformed", problem)
        if not self.store.add_event(event):
            self.counts["duplicate"] += 1
            log.info("webhook duplicate key=%s", event["idempotency_key"])
            return 200, None
        self.counts["stored"] += 1
        log.info("webhook stored incident=%d event=%s kind=%s", event["incident"]["id"],
                 event["event"], event["incident"]["kind"])
        return 200, event

    def _refuse(self, status, reason, message):
        self.counts[reason] += 1
        log.warning("webhook refused (%s): %s", reason, message)
        return status, None


def _parse(body):
    """(event, None) or (None, what is wrong)."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, "body is not JSON"
    if not isinstance(event, dict) or event.get("schema") != webhook.SCHEMA:
        return None, "schema is not %s" % webhook.SCHEMA
    for field, kind in (("idempotency_key", str), ("event", str), ("incident", dict),
                        ("device", dict)):
        if not isinstance(event.get(field), kind):
            return None, "%s is missing or not a %s" % (field, kind.__name__)
    incident = event["incident"]
    if not isinstance(incident.get("id"), int) or isinstance(incident.get("id"), bool):
        return None, "incident.id is missing or not an integer"
    if incident.get("kind") not in KINDS:
        return None, "incident.kind is not one of %s" % ", ".join(sorted(KINDS))
    if not isinstance(incident.get("state"), str):
        return None, "incident.state is missing"
    if not isinstance(event["device"].get("id"), str):
        return None, "device.id is missing"
    for field, kind in (("wearer", dict), ("location", dict), ("audit", list)):
        if event.get(field) is not None and not isinstance(event[field], kind):
            return None, "%s is not a %s" % (field, "list" if kind is list else "object")
    # what the pages read of them: a signed body that breaks a page is refused here
    contacts = (event.get("wearer") or {}).get("contacts") or []
    if not isinstance(contacts, list) or not all(isinstance(c, dict) for c in contacts):
        return None, "wearer.contacts is not a list of objects"
    location = event.get("location") or {}
    fix = location.get("fix")
    if fix is not None and not isinstance(fix, dict):
        return None, "location.fix is not an object"
    for name, part in (("location", location), ("location.fix", fix or {})):
        for field in ("lat", "lon", "accuracy_m"):
            value = part.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value,
                                                                                 (int, float))):
                return None, "%s.%s is not a number" % (name, field)
        for field in ("at",) + (("place", "floor", "room", "source") if part is location
                                else ()):
            if part.get(field) is not None and not isinstance(part[field], str):
                return None, "%s.%s is not a string" % (name, field)
    if not all(isinstance(a, dict) for a in event.get("audit") or []):
        return None, "audit is not a list of objects"
    return event, None
