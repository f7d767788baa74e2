# The SIA DC-09 destination: an alarm receiving centre's receiver over TCP (dc09.py encodes).
#
# Rules (the mapping; also in gateway/README.md; codes from DC-05 Contact ID and DC-03 SIA):
#   kind/event          Contact ID               SIA-DCS (restore)  I-text
#   SOS raised          1 120 panic              PA (PH)
#   DURESS raised       1 121 duress             HA (HH)
#   FALL raised         1 103 fall detected      MA (MH)            fall
#   NO_MOTION raised    1 102 fail to report in  QA (QH)            no motion
#   LOW_BATTERY raised  1 384 RF low battery     XT (XR)
#   LOST_CONTACT raised 1 381 loss of supervision RF (zone)  UY untyped missing trouble (UJ)
#   wearer_confirms     6 <the kind's event>: "previously reported condition still present";
#                       SIA: the kind's code again; I-text "wearer confirms" - the confirmation
#                       is the open alarm reported again, so it pairs with it at the ARC (same
#                       code, same zone) and the alarm's restore closes both: never left open;
#                       (1, a new event, when it reopens an alarm already resolved);
#   wearer_confirms on DURESS: 6 121 / HA, I-text "duress - double tap received", counted
#                       (duress_taps): never a personal emergency that invites a call;
#   contact_restored, resolved: 3 <the kind's event> / the kind's restore code;
#   location_updated (a later frame placed the wearer elsewhere, or afresh): 6 <the kind's
#                       event> / the kind's code, I-text "location update" and the place: the
#                       open alarm reported again with where the wearer is now, never a new one;
#   every code is zone-addressed: account and zone from dc09_identity (scheme "site": the
#   site's account, the wearer profile's zone; "device": the device's own account, zone 001;
#   no profile under "site": the device's own account, logged dc09_identity_derived), area /
#   partition 1 (DC-05 addresses 121 by user: the same number);
#   the I-text names the device ("dev 00c0ffee"), then the place where a beacon named one
#   (location.place_text: "Main hall, floor G, Reception", ", stale" past 60 s), then the
#   wearer where the profile has a name (the I-text keeps 60 characters);
#   location, when it has coordinates, in [X lon][Y lat] (degrees, hemisphere, minutes) with
#   SIA-DCS; "location stale" in the I-text when they are over 60 s old at sending and no
#   place says so;
#   an event sent more than LATE_S after it happened carries its time of occurrence [H...] (a
#   late alarm's raised_at from the snapshot, else when it was queued);
#   ADM-CID messages carry at most one extended-data block: receivers such as pysiaalarm refuse
#   more after a Contact ID event, so no location, and [H] in place of the I-text when late:
#   choose SIA-DCS where the ARC should see the location.
# Rules (the exchange):
#   one TCP connection per message; an outbox row gets its sequence number (0001-9999,
#   wrapping) at its first attempt, on disk, and keeps it on every retransmission, so a receiver
#   that got a message whose ACK was lost sees the same number again and can pair the two; each
#   attempt carries a fresh timestamp (an encrypted message older than the receiver's window,
#   -40/+20 s, is refused);
#   an ACK counts only when it pairs (dc09.ack_problem: sequence, receiver, line, account, and
#   *ACK decrypting for an encrypted message); one that does not is a failed attempt with an
#   alert and a counted reason, retried by the outbox;
#   NAK carrying the receiver's time: when that time is off ours by more than CLOCK_SLACK_S the
#   clock offset is corrected (persisted) and the message resent at once, once, same sequence;
#   when it agrees with ours the clock was not the cause: for an encrypted account that is the
#   answer to a message the receiver could not decrypt, reported as a wrong key;
#   DUH, a bare NAK or an unreadable reply: a failed attempt with an operator alert (`alert`
#   set), retried by the outbox with backoff; every such reply is counted by reason (`counts`);
#   a backup receiver (primary and secondary paths, EN 50136-1 dual path): a message the
#   primary does not acknowledge (unreachable, no ACK within timeout_s, or refused) goes to the
#   secondary with the same sequence number and account, so an ARC that gets it on both pairs
#   them; a path known down is tried after the others; each path has its own NULL link tests
#   and up/down state (dc09_path_down at error on failure, dc09_path_up when it answers again);
#   `link_up` is true while one path answers. One clock offset for both (NTP-run receivers).
import asyncio
import collections
import datetime
import logging
import time

from . import dc09, logs
from .dc09_identity import identity
from .dc09_state import NAME, Dc09State  # noqa: F401 (SQLite's state, for the gateway)
from .errors import GatewayError
from .location import from_record, is_stale, place_text
from .registry import device_hex

log = logging.getLogger("vigil_gateway.forward_dc09")

# kind -> (SIA code, restore SIA code, Contact ID event, I-text)
KINDS = {
    "SOS": ("PA", "PH", 120, None),
    "DURESS": ("HA", "HH", 121, None),
    "FALL": ("MA", "MH", 103, "fall"),
    "NO_MOTION": ("QA", "QH", 102, "no motion"),
    "LOW_BATTERY": ("XT", "XR", 384, None),
    "LOST_CONTACT": ("UY", "UJ", 381, "lost contact"),
}
CONFIRMS_TEXT = "wearer confirms"
DURESS_TAP_TEXT = "duress - double tap received"

# An event sent this long after it happened carries its time of occurrence ([H...]), so the
# ARC can tell a buffered alarm from a new one.
LATE_S = 10.0

# A NAK's time within this of ours says the clock was not why the receiver refused (the
# timestamps have one-second resolution).
CLOCK_SLACK_S = 2.0



# Incident events the ARC is not sent: the wearable's receipt for a responder's prompt says
# when it played, for a console; to an ARC it would read as the alarm raised again.
NOT_FOR_THE_ARC = ("prompt_played",)


def event_for(snapshot, sent_at=None):
    """The dc09.Event reporting one outbox snapshot, sent at `sent_at` (epoch seconds; now by
    default), which says whether its location is stale."""
    sent_at = time.time() if sent_at is None else sent_at
    kind = snapshot["incident"]["kind"]
    event = snapshot["event"]
    if kind not in KINDS:
        raise GatewayError("no DC-09 mapping for incident kind %s" % kind)
    sia, restore_sia, cid, text = KINDS[kind]
    qualifier = dc09.NEW
    if event == "wearer_confirms":
        # a confirmation after the alarm was resolved reopens it: a new event, not a status
        reopened = any(a["event"] == "resolved" for a in snapshot.get("audit", ()))
        qualifier = dc09.NEW if reopened else dc09.STATUS
        text = DURESS_TAP_TEXT if kind == "DURESS" else CONFIRMS_TEXT
    elif event == "location_updated":
        qualifier, text = dc09.STATUS, "location update"
    elif event in ("resolved", "contact_restored"):
        sia, qualifier = restore_sia, dc09.RESTORE
        text = "resolved" if event == "resolved" else "contact restored"
    location = from_record(snapshot.get("location"))
    where = place = None
    if location is not None:
        if location.lat is not None and -90 <= location.lat <= 90 \
                and -180 <= location.lon <= 180:
            where = (location.lat, location.lon)
        place = place_text(location, sent_at)
        if place is None and where is not None and is_stale(location, sent_at):
            place = "location stale"
    # who it is and where, for the ARC's operator: the device id, the place, the wearer's name
    name = (snapshot.get("wearer") or {}).get("name")
    text = ", ".join(part for part in (text, "dev %08x" % snapshot["device_id"], place, name)
                     if part)
    return dc09.Event(sia, cid, snapshot.get("zone") or 1, qualifier=qualifier,
                      location=where, text=text)


def _occurred(item):
    """When the event happened: a late alarm's `raised` at the time it was raised at the latest
    (the snapshot's `late`, from the wearable's age or the order of its frames), else when it
    was queued."""
    late = item.snapshot.get("late")
    if item.event == "raised" and late and late.get("raised_at") is not None:
        return min(late["raised_at"], item.created_at)
    return item.created_at


class Result:
    __slots__ = ("ok", "error", "alert", "reason")

    def __init__(self, ok, error=None, alert=False, reason=None):
        self.ok = ok
        self.error = error
        self.alert = alert
        self.reason = reason


class Path:
    """One way to the ARC: a receiver's host and port, and what its last exchange said."""

    def __init__(self, name, host, port):
        self.name = name
        self.host = host
        self.port = port
        self.link_up = None  # unknown until the first exchange

    def __repr__(self):
        return "<DC-09 %s path %s:%d>" % (self.name, self.host, self.port)


class Dc09Transport:
    name = NAME

    def __init__(self, host, port, account, state, fmt="SIA-DCS", timeout_s=10.0,
                 clock=time.time, scheme="site", backup=None):
        self.paths = [Path("primary", host, port)]
        if backup:  # (host, port) of the ARC's secondary receiver
            self.paths.append(Path("secondary", backup[0], backup[1]))
        self.account = account  # the site's account (NULL link tests, scheme "site")
        self.scheme = scheme    # dc09_identity: "site" or "device"
        self.derived = set()    # devices reported under an identity derived from their id
        self.state = state
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.clock = clock
        self.clock_corrections = 0
        self.counts = collections.Counter()  # refused replies by reason
        self.duress_taps = 0  # double taps on a duress incident forwarded (as duress)

    @property
    def link_up(self):
        """True while some path answers, False once every path has failed, None before."""
        states = [p.link_up for p in self.paths]
        if True in states:
            return True
        return False if False in states else None

    def _order(self):
        # the primary first, unless it is known down and another is not: an alarm must not
        # wait out the primary's timeout on every attempt while the secondary answers
        return sorted(self.paths, key=lambda p: p.link_up is False)

    def _path_seen(self, path, up, error=None):
        if up and path.link_up is False:
            logs.event(log, logging.WARNING, "dc09_path_up", path=path.name, host=path.host,
                       port=path.port)
        elif not up and path.link_up is not False:
            logs.event(log, logging.ERROR, "dc09_path_down", path=path.name, host=path.host,
                       port=path.port, error=error)
        path.link_up = up

    def _when(self):
        # Whole seconds: what the timestamp carries, so a NAK's time compares with it exactly.
        return datetime.datetime.fromtimestamp(int(self.clock() + self.state.clock_offset),
                                               datetime.timezone.utc)

    async def deliver(self, item):
        if item.event in NOT_FOR_THE_ARC:
            return Result(True)  # nothing an ARC's operator acts on: taken as delivered
        try:
            event = event_for(item.snapshot, self.clock())
        except GatewayError as exc:
            return Result(False, str(exc), alert=True, reason="no_mapping")
        if self.fmt == "ADM-CID":
            event.location = None
        account, event.zone, derived = identity(
            self.scheme, self.account, item.device_id, self.state.wearer(item.device_id))
        if derived and item.device_id not in self.derived:
            self.derived.add(item.device_id)
            logs.event(log, logging.WARNING, "dc09_identity_derived",
                       device=device_hex(item.device_id), account=account.number,
                       fix="give the wearer a profile with its zone (vigil gateway wearer set)")
        occurred = _occurred(item)
        if self.clock() - occurred > LATE_S:
            event.occurred = datetime.datetime.fromtimestamp(
                int(occurred + self.state.clock_offset), datetime.timezone.utc)
        result = await self._on_some_path(
            self.state.sequence_for(item.id),
            lambda seq, when: dc09.encode_event(account, seq, event, when, self.fmt), account)
        if result.ok and item.event == "wearer_confirms" and \
                item.snapshot["incident"]["kind"] == "DURESS":
            self.duress_taps += 1
        return result

    async def link_test(self):
        """A NULL on every path (each its own supervision); ok when one answers."""
        results = []
        for path in self.paths:
            results.append(await self._send(
                self.state.next_sequence(),
                lambda seq, when: dc09.encode_null(self.account, seq, when), self.account, path))
        return _first_ok(results, self.paths)

    async def _on_some_path(self, seq, build, account):
        """The message on each path in turn, the same sequence number and account on each (so
        an ARC that gets it from both pairs them), until one acknowledges it."""
        results, tried = [], []
        for path in self._order():
            result = await self._send(seq, build, account, path)
            if result.ok:
                return result
            results.append(result)
            tried.append(path)
        return _first_ok(results, tried)

    def _refused(self, reason, error):
        self.counts[reason] += 1
        return Result(False, error, alert=True, reason=reason)

    async def _send(self, seq, build, account, path=None):
        path = path or self.paths[0]
        for _attempt in range(2):
            when = self._when()
            try:
                raw = await self._exchange(build(seq, when), path)
                reply = dc09.parse_reply(raw, account)
            except (OSError, asyncio.TimeoutError) as exc:
                error = "cannot reach the receiver at %s:%d: %s" % (path.host, path.port,
                                                                    type(exc).__name__)
                self._path_seen(path, False, error)
                return Result(False, error)
            except dc09.Dc09Error as exc:
                self._path_seen(path, True)
                return self._refused("unreadable", "unreadable reply from the receiver: %s" % exc)
            if not raw:  # connected, then closed without a word: the ACK (if any) was lost
                error = "no reply from the receiver at %s:%d to sequence %04d" % (
                    path.host, path.port, seq)
                self._path_seen(path, False, error)
                return Result(False, error)
            self._path_seen(path, True)
            if reply.kind == "ACK":
                problem = dc09.ack_problem(reply, account, seq)
                if problem is None:
                    return Result(True)
                reason, text = problem
                return self._refused(reason, "reply to sequence %04d not counted as its ACK: %s"
                                     % (seq, text))
            if reply.kind == "NAK" and reply.receiver_time is not None:
                offset = reply.receiver_time.timestamp() - when.timestamp()
                if abs(offset) <= CLOCK_SLACK_S:
                    if account.key:
                        return self._refused("wrong_key", "the receiver cannot decrypt our "
                                             "messages for account %s: wrong key (its NAK's time "
                                             "agrees with ours)" % account.number)
                    return self._refused("nak", "the receiver refused the message for account "
                                         "%s (NAK; its time agrees with ours)"
                                         % account.number)
                self.state.set_clock_offset(self.state.clock_offset + offset)
                self.clock_corrections += 1
                continue  # resend at once with the corrected time, same sequence number
            if reply.kind == "DUH":
                return self._refused("duh", "the receiver does not understand this event (DUH)")
            if reply.kind == "NAK":
                return self._refused("unknown_account", "the receiver refused account %s (NAK "
                                     "without its time: unknown account)" % account.number)
            if reply.kind == "NONE":
                return self._refused("corrupt", "the receiver got a corrupt line (no framed "
                                     "reply)")
            return self._refused("unexpected", "the receiver answered %s" % reply.kind)
        return self._refused("clock", "the receiver refused our time twice (NAK)")

    async def _exchange(self, line, path):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(path.host, path.port), self.timeout_s)
        try:
            writer.write(line)
            await writer.drain()
            data = b""
            while not dc09.reply_complete(data) and len(data) < 4096:
                chunk = await asyncio.wait_for(reader.read(4096), self.timeout_s)
                if not chunk:
                    break
                data += chunk
            return data
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def close(self):
        pass


def _first_ok(results, paths):
    """One Result for attempts on several paths: the first success, else every path's error
    (alert when one was a refusal, its reason the first refusal's)."""
    for result in results:
        if result.ok:
            return result
    if len(results) == 1:
        return results[0]
    refusals = [r for r in results if r.alert]
    return Result(False, "; ".join("%s: %s" % (p.name, r.error) for p, r in zip(paths, results)),
                  alert=bool(refusals), reason=refusals[0].reason if refusals else None)
