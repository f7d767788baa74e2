# The responder actions API: what a responder backend does to an incident, carried back to the
# wearable as signed downlinks. Document: gateway/openapi.json.
#
#   POST /v2/incidents/{id}/actions   {"action", "request_id", "sent_at", ["note"]}
#   GET  /v2/incidents/{id}           the incident, its state and audit trail
#
# Times are RFC 3339 in UTC with "Z" (rfc3339.py), as in the logs. /v1/ is the same API with
# unix seconds (sent_at a number, the audit's `at` numbers): deprecated, kept for the backends
# written against it for this release, removed in the next.
#
# Rules, in the order a request is checked (the first failure is its answer, and is counted):
#   auth        "Authorization: Bearer <token>" equal to one backend's token (every token is
#               compared, in constant time) else 401 unauthorized
#   shape       JSON object, at most 8 KiB, fields as in ACTIONS/the OpenAPI document (sent_at
#               an RFC 3339 UTC time; on /v1/ a finite number: not NaN, not infinite), else
#               400 malformed (the message names the field)
#   retried     a request_id this backend used before, for the same incident and the same
#               body bytes: the original answer again (200, as it was; counted "retried"), so
#               a backend may retry after a timeout, however late; the same request_id with
#               another body or incident: 409 replayed (a request_id names one request)
#   fresh       sent_at within tolerance_s of the gateway's clock, else 409 replayed ("stale")
#   incident    unknown: 404 not_found; closed (for anything but resolve): 409 refused
#   duress      prompt_double_tap on a DURESS incident: 409 refused - the wearer must not be
#               cued; acknowledged and help_dispatched are audited but send no downlink (the
#               wearable would show nothing, and no downlink means no radio traffic tied to
#               the responder's work); resolve is sent (the wearable shows nothing, but closes
#               the alarm, which ends its duress silence)
#   lost contact no alarm on the wearable to refer to: prompt_double_tap refused, the others
#               audited with no downlink
#   idempotent  the same action on the same incident a second time (another request_id) has no
#               effect: 200 with "effect": "none" and the original downlink's counter
#   effect      audit trail entry (with the backend's name), incident rule (resolve closes and is
#               forwarded), and the signed downlink, all in one transaction: the downlink waits
#               in the store until the wearable is reachable (downlinks.py)
# Storage: the requests taken and their answers, and the incident read in the device's turn,
# through `requests` (api_requests.py on SQLite, api_requests_pg.py on PostgreSQL): no SQL
# here. The request_id is taken inside the action's transaction, so the same request arriving
# twice at once (at two workers) is applied once: the second finds it taken when the first
# commits, and answers the first's answer (retried).
import hashlib
import hmac
import json
import math
import re

import vigil_protocol as p

from . import rfc3339
from .api_requests import SqliteApiRequests
from .downlinks import ACTION
from .config import read_private
from .errors import ConfigError
from .incidents import CLOSED, LOST_CONTACT

MAX_BODY = 8192
ACTIONS = {
    "acknowledge": ("acknowledged", p.ACKNOWLEDGED),
    "prompt_double_tap": ("prompt_double_tap", p.PROMPT_DOUBLE_TAP),
    "help_dispatched": ("help_dispatched", p.HELP_DISPATCHED),
    "resolve": ("resolved", p.RESOLVED),
}
_FIELDS = {"action", "request_id", "sent_at", "note"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
_PATH = re.compile(r"^/(v1|v2)/incidents/([0-9]{1,12})(/actions)?$")
V1 = "v1"  # deprecated: unix seconds



def read_tokens(path, key="actions.tokens_file"):
    """{backend name: token} from lines "<name> <token>" (# comments, blank lines skipped)."""
    lines = read_private(path, key).splitlines()  # refused if others can read it
    tokens = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise ConfigError(key, "%s line %d: write '<backend name> <token of 16+ "
                                   "characters>'" % (path, number))
        tokens[parts[0]] = parts[1]
    if not tokens:
        raise ConfigError(key, "%s holds no token" % path)
    return tokens


class Reply:
    __slots__ = ("status", "body", "result")

    def __init__(self, status, body, result):
        self.status = status
        self.body = body
        self.result = result  # the metric label


def _error(status, result, message):
    return Reply(status, {"error": result, "message": message}, result)


class ActionsApi:
    def __init__(self, store, incidents, downlinks, tokens, clock, tolerance_s=300,
                 downlink_ready=lambda: None, pipeline=None, requests=None):
        self.store = store
        self.requests = requests if requests is not None else SqliteApiRequests(store.conn)
        self.incidents = incidents
        self.downlinks = downlinks
        self.tokens = {name: token.encode() for name, token in tokens.items()}
        self.clock = clock
        self.tolerance_s = tolerance_s
        self.downlink_ready = downlink_ready
        self.pipeline = pipeline

    def handle(self, method, path, headers, body):
        match = _PATH.match(path.split("?", 1)[0])
        if match is None:
            return _error(404, "not_found", "no such endpoint")
        backend = self._backend(headers.get("authorization", ""))
        if backend is None:
            return _error(401, "unauthorized", "missing or wrong bearer token")
        version, incident_id, actions = (match.group(1), int(match.group(2)),
                                         bool(match.group(3)))
        if not actions:
            if method != "GET":
                return _error(405, "method_not_allowed", "GET only")
            return self._show(incident_id, version)
        if method != "POST":
            return _error(405, "method_not_allowed", "POST only")
        return self._action(backend, incident_id, headers, body, version)

    def _backend(self, header):
        given = header[7:].strip().encode() if header[:7].lower() == "bearer " else b""
        found = None
        for name, token in self.tokens.items():  # compare with every token, always
            if hmac.compare_digest(given, token) and given:
                found = name
        return found

    def _show(self, incident_id, version):
        with self.requests.reading():
            incident = self.store.incident(incident_id)
            audit = self.store.audit(incident_id) if incident is not None else ()
        if incident is None:
            return _error(404, "not_found", "no incident %d" % incident_id)
        time_of = (lambda at: at) if version == V1 else rfc3339.format
        return Reply(200, dict(_incident_json(incident), audit=[
            {"at": time_of(a.at), "event": a.event, "detail": a.detail}
            for a in audit]), "shown")

    def _parse(self, headers, body, version):
        if "json" not in headers.get("content-type", ""):
            return None, "Content-Type must be application/json"
        if len(body) > MAX_BODY:
            return None, "body over %d bytes" % MAX_BODY
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None, "body is not JSON"
        if not isinstance(data, dict):
            return None, "body must be a JSON object"
        unknown = set(data) - _FIELDS
        if unknown:
            return None, "unknown field %s" % sorted(unknown)[0]
        if data.get("action") not in ACTIONS:
            return None, "action must be one of %s" % ", ".join(ACTIONS)
        if not isinstance(data.get("request_id"), str) or not _REQUEST_ID.match(
                data["request_id"]):
            return None, "request_id must be 8-64 characters of A-Z a-z 0-9 . _ : -"
        sent_at = data.get("sent_at")
        if version != V1:
            try:
                data["sent_at"] = rfc3339.parse(sent_at)  # unix seconds from here on
            except ValueError as exc:
                return None, "sent_at must be %s" % exc
        elif not isinstance(sent_at, (int, float)) or isinstance(sent_at, bool):
            return None, "sent_at must be a number (unix seconds; /v2/ takes RFC 3339 times)"
        elif not _finite(sent_at):  # JSON as Python reads it has NaN and Infinity
            return None, "sent_at must be a finite number of unix seconds (not NaN or infinite)"
        note = data.get("note", "")
        if not isinstance(note, str) or len(note) > 500:
            return None, "note must be a string of at most 500 characters"
        return data, None

    def _action(self, backend, incident_id, headers, body, version):
        data, problem = self._parse(headers, body, version)
        if data is None:
            return _error(400, "malformed", problem)
        digest = hashlib.sha256(b"%d\n" % incident_id + body).hexdigest()
        earlier = self._earlier(backend, data["request_id"], digest)
        if earlier is not None:
            return earlier
        now = self.clock()
        if abs(now - data["sent_at"]) > self.tolerance_s:
            return _error(409, "replayed", "sent_at is more than %d s from the gateway's clock: "
                          "a stale or replayed request (check the backend's clock)"
                          % self.tolerance_s)
        event, code = ACTIONS[data["action"]]
        try:
            with self.store.transaction():
                reply = self._apply(backend, incident_id, data, event, code, now, digest)
                if reply.status >= 400 and reply.result != "replayed":
                    raise _Rollback(reply)
                if reply.result in ("applied", "no_effect"):  # what a retry of it gets
                    kept = dict(reply.body, downlink_queued=False)
                    self.requests.keep(backend, data["request_id"], digest, reply.status,
                                       json.dumps(kept, sort_keys=True))
        except _Rollback as rollback:
            return rollback.reply
        except Exception:
            if self.pipeline is not None:
                self.pipeline.forget()
            raise
        if reply.body.get("downlink_queued"):
            self.downlink_ready()
        return reply

    def _earlier(self, backend, request_id, digest):
        """The stored answer to this very request (a retry), a refusal when the request_id
        named another request, or None when it is new."""
        row = self.requests.stored(backend, request_id)
        if row is None:
            return None
        if row[0] == digest and row[2] is not None:
            return Reply(row[1], json.loads(row[2]), "retried")
        return _error(409, "replayed", "request_id %s was used already, for another request "
                      "(a retry must send the same body to the same incident)" % request_id)

    def _apply(self, backend, incident_id, data, event, code, now, digest):
        if not self.requests.take(backend, data["request_id"], now):
            # taken since _earlier() looked: the same request at another worker, or another
            # one under this request_id, committed meanwhile - its answer, or a refusal
            return self._earlier(backend, data["request_id"], digest) or _error(
                409, "replayed", "request_id %s was used already" % data["request_id"])
        incident = self.requests.incident(self.store, incident_id)
        if incident is None:
            return _error(404, "not_found", "no incident %d" % incident_id)
        duress = incident.kind == "DURESS"
        if code == p.PROMPT_DOUBLE_TAP and duress:
            return _error(409, "refused", "incident %d is a duress alarm: the wearer must not be "
                          "cued or contacted (no prompt is ever sent)" % incident_id)
        if code == p.PROMPT_DOUBLE_TAP and incident.counter is None:
            return _error(409, "refused", "incident %d (%s) has no alarm on the wearable to "
                          "answer" % (incident_id, incident.kind))
        already = self._already(incident, event)
        if already:
            found = (self.downlinks.find(incident.device_id, incident.counter, ACTION, code)
                     if incident.counter is not None else None)
            return Reply(200, dict(_incident_json(incident), action=data["action"],
                                   effect="none", downlink=found.counter if found else None,
                                   downlink_queued=False), "no_effect")
        if incident.state == CLOSED:
            return _error(409, "refused", "incident %d is closed" % incident_id)
        note = data.get("note", "")
        detail = "by %s, request %s%s" % (backend, data["request_id"],
                                           "; " + note if note else "")
        incident = self.incidents.apply(incident, event, now, detail)
        downlink = None
        silent = duress and code in (p.ACKNOWLEDGED, p.HELP_DISPATCHED)
        if incident.counter is not None and not silent and incident.kind != LOST_CONTACT:
            downlink = self.downlinks.make(incident.device_id, incident.counter, ACTION, code,
                                           now)
        return Reply(200, dict(_incident_json(incident), action=data["action"],
                               effect="applied",
                               downlink=downlink.counter if downlink else None,
                               downlink_queued=downlink is not None), "applied")

    def _already(self, incident, event):
        return any(a.event == event and not a.detail.startswith("ignored")
                   for a in self.store.audit(incident.id))


def _finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


class _Rollback(Exception):
    def __init__(self, reply):
        Exception.__init__(self, reply.result)
        self.reply = reply


def _incident_json(incident):
    return {"incident": incident.id, "device": "%08x" % incident.device_id,
            "kind": incident.kind, "state": incident.state, "alarm_counter": incident.counter}
