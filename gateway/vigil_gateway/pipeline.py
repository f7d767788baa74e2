# The ingest pipeline: uplink messages in, durable state and signed acks out. No sockets here:
# the service feeds it batches and sends what it returns.
#
# Rules, in the order each message is checked (the first failure is the rejection reason):
#   topic      <prefix>/up/<dev> or <prefix>/status/<dev>, else `malformed_topic`
#   peek       size, version, type (protocol reasons: oversized, truncated, ...)
#   binding    the frame's device id equals the topic's <dev>, else `device_mismatch`
#   registry   known (`unknown_device`), not revoked (`revoked_device`), key readable
#              (`key_unavailable`)
#   version    a v1 frame while [protocol] accept_v1 is off: `v1_disabled`
#   decode     MAC and fields, as an uplink (protocol reasons: bad_mac, wrong_direction, ...)
#   window     new / retransmission / `stale_counter` / `counter_reuse` (SPEC §7); below the
#              window the store decides: the same tag stored is a retransmission, another tag
#              `counter_reuse`, nothing stored a late frame accepted as new - unless the counter
#              is below the device's history floor (where its counters started, from the
#              registry; when that is not known, its first accepted counter minus the window
#              size: this gateway has no record there), which is `stale_counter`
#   persist    a new frame, its incident change and the device's contact go into the batch's
#              transaction; a retransmission creates nothing; an alarm that arrived late
#              (lateness.py: its age, a later frame that came first, lost contact) raises its
#              incident all the same, marked late; its location is what location.locate()
#              makes of the frame's fix and the places the beacon table names for what it
#              heard (beacons.py), as the frame arrived; a later frame's location (a
#              check-in's, a double tap's) updates the device's open alarms where it is news
#              (incidents.update_location)
#   receipt    a v2 wearable's receipt confirms the stored downlink it names (downlinks.py)
#              and is acknowledged by nothing; every new frame from a v2 device offers its
#              unconfirmed stored downlinks again once their wait is over
#   ack        new frames and retransmissions both get a signed RECEIVED ack with a fresh
#              downlink counter, allocated in the same transaction, sealed in the frame's
#              version; a verified v2 frame raises the device's registry protocol to 2, so
#              its other downlinks (DELIVERED, responder actions) are sealed too;
#              a retransmission is acked again at most once per reack_interval_s per counter
#              (replayed frames must not make the gateway a downlink amplifier; every ack
#              goes out on every path, so a copy arriving meanwhile needs none), the rest
#              counted in vigil_gateway_reacks_suppressed_total
# A new frame counts for its device's later frames as soon as it is written into the batch's
# transaction (so a later frame of the same batch is judged against it); process() returns the
# acks only once the batch has committed: nothing is acknowledged that is not on disk. (The
# service splits it: write() leaves the transaction open, the service commits it in its writer
# thread, then committed() gives the acks.) If the commit fails, what the backend kept is
# dropped (read again from the store on next use) and nothing is returned (StoreError): the
# caller retries the batch.
#
# Storage: the device state behind device_state.py's interface, one backend per store - SQLite
# (device_state.py: replay windows, contacts and counters kept between batches) or PostgreSQL
# (device_state_pg.py: the batch's devices locked in id order, nothing kept between batches).
# No SQL here.
import logging
import time

import vigil_protocol as p

from . import lateness, logs
from .beacons import Beacons
from .device_state import LATE, SqliteDeviceState, first_floor
from .device_state import WINDOW_SIZE  # noqa: F401 (the replay window's size, for retention)
from .errors import RegistryError, StoreError
from .incidents import CONTACT_RESTORED, PROMPT_PLAYED, Incidents
from .location import locate
from .registry import REVOKED, device_hex
from .store import Contact
from .topics import STATUS

NEW = p.NEW
RETRANSMISSION = p.RETRANSMISSION
REJECTED = "rejected"
STATUS_RESULT = "status"

# Reasons of the gateway's own, beside the protocol's (SPEC §6).
GATEWAY_REASONS = ("malformed_topic", "unknown_device", "revoked_device", "device_mismatch",
                   "key_unavailable", "v1_disabled")
# A message the gateway failed on (a bug): logged, counted, and never acknowledged to the
# broker, which delivers it again after the next reconnect.
INTERNAL_ERROR = "internal_error"
REASONS = tuple(cls.reason for cls in p.REJECTIONS) + GATEWAY_REASONS + (INTERNAL_ERROR,)
_STATUSES = (b"online", b"offline")

log = logging.getLogger("vigil_gateway.pipeline")


class Message:
    """One message from a link: topic, payload, an opaque token for the link's own ack, and
    when it arrived (time.monotonic)."""

    __slots__ = ("topic", "payload", "token", "arrived")

    def __init__(self, topic, payload, token=None, arrived=None):
        self.topic = topic
        self.payload = payload
        self.token = token
        self.arrived = time.monotonic() if arrived is None else arrived


class Outcome:
    __slots__ = ("message", "result", "reason", "device_id", "counter", "downlink", "hold",
                 "reoffered")

    def __init__(self, message, result, reason=None, device_id=None, counter=None,
                 downlink=None, hold=False, reoffered=0):
        self.message = message
        self.reoffered = reoffered  # stored downlinks to send again (the service's pump)
        self.hold = hold            # not to be acknowledged to the broker (see process())
        self.result = result        # NEW, RETRANSMISSION, REJECTED or STATUS_RESULT
        self.reason = reason        # for REJECTED
        self.device_id = device_id
        self.counter = counter
        self.downlink = downlink    # (topic, frame bytes) to publish, or None


class Rejected(Exception):
    def __init__(self, reason, detail="", device_id=None):
        Exception.__init__(self, detail)
        self.reason = reason
        self.device_id = device_id


class Pipeline:
    def __init__(self, registry, store, topics, metrics=None, clock=time.time, outbox=None,
                 accept_v1=True, late_after_s=30.0, reack_interval_s=1.0, state=None,
                 places=None):
        """state: the device state's backend (device_state.py's interface); SQLite's on
        `store` and `registry` when not given. places: the beacon table (resolve(), as
        beacons.Beacons), SQLite's on `store` when state is not given; None: no places, a
        frame's GNSS fix only."""
        self.registry = registry
        self.reack_interval_s = reack_interval_s
        self._reacked = {}  # (device_id, counter) -> when a retransmission of it was last acked
        self._batch_reacks = []  # (key, its time before) for the re-acks of the open batch
        self.downlinks = None  # downlinks.Downlinks, which sets itself here
        self.accept_v1 = accept_v1
        self.late_after_s = late_after_s
        self.store = store
        self.state = SqliteDeviceState(store, registry) if state is None else state
        self.places = Beacons(store.conn) if state is None and places is None else places
        self.topics = topics
        self.metrics = metrics
        self.clock = clock
        self.incidents = Incidents(store, outbox)

    def process(self, batch):
        """Verify, persist and acknowledge a batch of Messages; one commit for all of them."""
        return self.committed(self._write_and_commit(batch))

    def write(self, batch):
        """process() up to the commit: verify the batch and write it in a transaction left
        open. The caller commits it (state.commit(), or the connection's commit_in() a writer
        thread on SQLite), then hands the outcomes to committed(), or the error to
        commit_failed()."""
        now = self.clock()
        state = self.state
        parsed = [self.topics.parse(message.topic) for message in batch]
        outcomes = []
        self._batch_reacks = []
        try:
            state.begin(sorted({topic[1] for topic in parsed if topic is not None}))
            for message, topic in zip(batch, parsed):
                outcomes.append(self._one(message, topic, now))
            state.finish()
        except state.errors as exc:
            state.rollback()
            raise self.commit_failed(batch, exc) from None
        except Exception as exc:  # a bug here, not bad input (that is rejected above)
            state.rollback()
            self.forget()
            if len(batch) > 1:  # find the message that trips it; commit the others
                return [o for message in batch for o in self._write_and_commit([message])]
            logs.event(log, logging.ERROR, "internal_error", topic=batch[0].topic[:200],
                       error="%s: %s" % (type(exc).__name__, exc))
            outcomes = [Outcome(batch[0], REJECTED, reason=INTERNAL_ERROR, hold=True)]
        return outcomes

    def committed(self, outcomes):
        """The outcomes of a batch now on disk: counted, and returned for sending."""
        if self.metrics is not None:
            self.metrics.batches.inc()
            for outcome in outcomes:
                self.metrics.frames.inc(outcome.result)
                if outcome.reason:
                    self.metrics.rejections.inc(outcome.reason)
        return outcomes

    def commit_failed(self, batch, exc):
        """The StoreError to raise for a batch whose transaction failed (and was rolled back).
        The backend saw frames, and counters were allocated, that are not on disk after all:
        they are forgotten, and read again from the store on next use; its re-acks were
        never sent, so they suppress nothing (the batch's retry acks its copies)."""
        self.forget()
        for key, before in reversed(self._batch_reacks):
            if before is None:
                self._reacked.pop(key, None)
            else:
                self._reacked[key] = before
        self._batch_reacks = []
        return StoreError("cannot commit %d frames: %s" % (len(batch), exc))

    def _write_and_commit(self, batch):
        outcomes = self.write(batch)
        try:
            self.state.commit()
        except self.state.errors as exc:
            raise self.commit_failed(batch, exc) from None
        return outcomes

    def forget(self):
        """Drop what is cached from the store (after a failed commit, or when something else
        - supervision - changed contacts)."""
        self.state.forget()

    def allocate_downlink(self, device_id):
        """A fresh downlink counter for a downlink sent outside a batch (DELIVERED acks,
        responder actions) on SQLite; call inside a store transaction: it is written at once.
        If that transaction fails, call forget()."""
        return self.state.allocate_downlink(device_id)

    def _one(self, message, topic, now):
        try:
            return self._accept(message, topic, now)
        except Rejected as exc:
            return self._rejected(message, exc.reason, str(exc), exc.device_id)
        except p.RemoteProtocolError as exc:
            return self._rejected(message, exc.reason, str(exc), None)

    def _rejected(self, message, reason, detail, device_id):
        logs.event(log, logging.WARNING, "frame_rejected", reason=reason, detail=detail,
                   topic=message.topic[:200], length=len(message.payload),
                   device=device_hex(device_id) if device_id else None)
        return Outcome(message, REJECTED, reason=reason, device_id=device_id)

    def _accept(self, message, topic, now):
        if topic is None:
            raise Rejected("malformed_topic", "not <prefix>/up/<8 hex digits>")
        channel, topic_device = topic
        if channel == STATUS:
            # Advisory only (unsigned): supervision relies on signed check-ins.
            status = bytes(message.payload)
            logs.event(log, logging.INFO, "device_status", device=device_hex(topic_device),
                       status=status.decode() if status in _STATUSES else "unrecognised")
            return Outcome(message, STATUS_RESULT, device_id=topic_device)
        payload = bytes(message.payload)
        header = p.peek(payload)
        if header.device_id != topic_device:
            raise Rejected("device_mismatch", "frame says %08x, topic says %08x"
                           % (header.device_id, topic_device), topic_device)
        device = self.state.device(topic_device)
        if device is None:
            raise Rejected("unknown_device", "not in the registry", topic_device)
        if device.state == REVOKED:
            raise Rejected("revoked_device", "device revoked", topic_device)
        if header.version == 1 and not self.accept_v1:
            raise Rejected("v1_disabled", "protocol v1 is switched off ([protocol] accept_v1)",
                           topic_device)
        try:
            key = self.registry.key(device)
        except RegistryError as exc:
            logs.event(log, logging.ERROR, "key_unavailable", device=device_hex(topic_device),
                       detail=str(exc))
            raise Rejected("key_unavailable", "the device's key file cannot be used",
                           topic_device) from None
        try:
            frame = p.decode(payload, key, p.UP)
            verdict = self._verdict(frame)
        except p.RemoteProtocolError as exc:
            raise Rejected(exc.reason, str(exc), topic_device) from None
        if frame.version > device.protocol:
            device = self.state.raise_protocol(device, frame.version)
            logs.event(log, logging.INFO, "device_protocol", device=device_hex(frame.device_id),
                       protocol=frame.version)
        receipt = isinstance(frame, p.Receipt)
        if receipt:
            self._confirm(frame, now)  # first: what it names is not to be offered again
        reoffered = 0
        if verdict == NEW:
            self._persist(frame, device, payload, now)
            if frame.version == 2 and self.downlinks is not None:
                reoffered = self._reoffer(frame.device_id, now)
        if receipt:
            return Outcome(message, verdict, device_id=frame.device_id, counter=frame.counter,
                           reoffered=reoffered)
        if verdict != NEW:
            logs.event(log, logging.DEBUG, "retransmission", device=device_hex(frame.device_id),
                       counter=frame.counter)
            if not self._may_reack(frame, now):
                if self.metrics is not None:
                    self.metrics.reacks_suppressed.inc()
                return Outcome(message, verdict, device_id=frame.device_id,
                               counter=frame.counter)
        ack = p.Ack(frame.device_id, self.state.next_downlink_counter(frame.device_id),
                    frame.counter, p.RECEIVED)
        # In the uplink's version: a unit re-flashed to v2 may still resend v1 frames from
        # its outbox, and a v1 unit cannot read a v2 ack.
        downlink = (self.topics.down(frame.device_id), p.encode(ack, key, frame.version))
        return Outcome(message, verdict, device_id=frame.device_id, counter=frame.counter,
                       downlink=downlink, reoffered=reoffered)

    def _confirm(self, receipt, now):
        device_id = receipt.device_id
        counter = receipt.resolve(self.state.last_downlink_counter(device_id))
        taken = None if self.downlinks is None else self.downlinks.confirm(device_id, counter,
                                                                          now)
        if taken is not None:
            logs.event(log, logging.DEBUG, "downlink_confirmed", device=device_hex(device_id),
                       counter=counter)
            if self.metrics is not None:
                self.metrics.receipts.inc("confirmed")
            if taken.kind == "action" and taken.code == p.PROMPT_DOUBLE_TAP:
                # The wearable plays a prompt as it verifies it: the responder learns when.
                incident = self.store.incident_for_alarm(device_id, taken.ref)
                if incident is not None:
                    self.incidents.apply(incident, PROMPT_PLAYED, now,
                                         "receipt, frame %d" % receipt.counter)
        elif self.metrics is not None:
            self.metrics.receipts.inc("repeat")  # already confirmed, or no such stored one

    def _reoffer(self, device_id, now):
        count = self.downlinks.reoffer(device_id, now)
        if count:
            logs.event(log, logging.INFO, "downlinks_offered_again",
                       device=device_hex(device_id), count=count)
            if self.metrics is not None:
                self.metrics.receipts.inc("offered_again", amount=count)
        return count

    def _may_reack(self, frame, now):
        """True at most once per reack_interval_s per counter (a wearable retransmits no
        faster than every 1.5 s: each of its own retransmissions is acked)."""
        key = (frame.device_id, frame.counter)
        last = self._reacked.get(key)
        if last is not None and 0 <= now - last < self.reack_interval_s:
            return False
        if len(self._reacked) >= 4096:  # forget what can no longer suppress anything
            self._reacked = {k: t for k, t in self._reacked.items()
                             if 0 <= now - t < self.reack_interval_s}
        self._batch_reacks.append((key, last))
        self._reacked[key] = now
        return True

    def _verdict(self, frame):
        verdict = self.state.verdict(frame)
        if verdict != LATE:
            return verdict
        logs.event(log, logging.WARNING, "late_frame", device=device_hex(frame.device_id),
                   counter=frame.counter, detail="below the window, never seen: accepted")
        if self.metrics is not None:
            self.metrics.late_frames.inc()
        return NEW

    def _lateness(self, frame, now):
        """An alarm's Lateness when it is late enough to say so (lateness.py), else None.
        Before the frame is stored and its contact restored: both change what it is judged
        on."""
        device_id = frame.device_id
        top = self.state.top(device_id)
        higher = None
        if frame.counter < top:
            higher = self.state.first_arrival_above(device_id, frame.counter)
        silent_since = None
        contact = self.state.contact(device_id)
        if contact is not None and contact.lost_incident is not None and frame.counter > top:
            silent_since = contact.last_seen
        late = lateness.judge(now, frame.age or 0, higher, silent_since)
        if not lateness.is_late(late, self.late_after_s):
            return None
        logs.event(log, logging.WARNING, "alarm_late", device=device_hex(device_id),
                   counter=frame.counter, kind=frame.kind_name, late_s=round(late.late_s, 1),
                   basis=late.basis or None, possibly_held_s=None if late.held_up_to_s is None
                   else round(late.held_up_to_s, 1))
        if self.metrics is not None:
            for basis in (late.basis.split(",") if late.basis else []) + (
                    ["silence"] if late.held_up_to_s is not None else []):
                self.metrics.late_alarms.inc(basis)
        return late

    def _persist(self, frame, device, payload, now):
        device_id = frame.device_id
        late = self._lateness(frame, now) if isinstance(frame, p.Alarm) else None
        self.state.record(frame, payload, now)
        self._contact(frame, device, now)
        raises = isinstance(frame, p.Alarm) and frame.kind != p.DOUBLE_TAP
        if not raises and (getattr(frame, "location", None) is not None
                           or getattr(frame, "beacons", None) or getattr(frame, "wifi", None)):
            for incident in self.incidents.update_location(
                    device_id, self._where(frame, now), now,
                    "%s frame %d" % (frame.NAME, frame.counter)):
                logs.event(log, logging.INFO, "location_updated", incident=incident.id,
                           device=device_hex(device_id), counter=frame.counter)
        if isinstance(frame, p.Alarm):
            detail = _alarm_detail(frame, late)
            if frame.kind == p.DOUBLE_TAP:
                said = "double tap, frame %d" % frame.counter
                if late is not None:
                    said += ", " + lateness.describe(late)
                incident = self.incidents.wearer_confirms(device_id, frame.ref, now, said)
                if incident is None:  # before its alarm: kept for it (incidents.py)
                    self.incidents.early_tap(device_id, frame.counter, frame.ref, now)
                    if self.metrics is not None:
                        self.metrics.early_taps.inc("kept")
                logs.event(log, logging.WARNING if incident is None else logging.INFO,
                           "wearer_confirms" if incident else "double_tap_early",
                           device=device_hex(device_id), counter=frame.counter, ref=frame.ref,
                           incident=incident.id if incident else None)
            else:
                incident = self.incidents.raise_alarm(device_id, frame.counter, frame.kind_name,
                                                      now, detail, self._where(frame, now),
                                                      late)
                logs.event(log, logging.INFO, "incident_raised", incident=incident.id,
                           kind=frame.kind_name, device=device_hex(device_id),
                           counter=frame.counter)

    def _where(self, frame, now):
        """The alarm's location.Location, or None."""
        heard = frame.beacons or frame.wifi
        resolved = self.places.resolve(frame.beacons, frame.wifi) \
            if heard and self.places is not None else None
        return locate(frame, now, resolved)

    def _contact(self, frame, device, now):
        device_id = frame.device_id
        contact = self.state.contact(device_id)
        if contact is None:  # its first frame: its history floor (SPEC section 7)
            contact = Contact(device_id, now, None, None, first_floor(device, frame.counter))
        if contact.lost_incident is not None:
            incident = self.store.incident(contact.lost_incident)
            if incident is not None:
                self.incidents.apply(incident, CONTACT_RESTORED, now,
                                     "%s frame %d" % (frame.NAME, frame.counter))
                logs.event(log, logging.INFO, "contact_restored", incident=incident.id,
                           device=device_hex(device_id))
            contact = contact._replace(lost_incident=None)
        if isinstance(frame, p.CheckIn) and frame.interval:
            contact = contact._replace(interval_s=frame.interval)
        if contact.last_seen < now:  # (a batch's later frames of the device change nothing)
            contact = contact._replace(last_seen=now)
        self.state.set_contact(contact)


def _alarm_detail(frame, late=None):
    """What the audit says of an alarm beside its lateness (which says the age it judged)."""
    parts = []
    if frame.location is not None:
        parts.append("location %.7f,%.7f ±%dm" % (frame.location[0] / 1e7,
                                                  frame.location[1] / 1e7, frame.location[2]))
    if frame.age and (late is None or lateness.AGE not in late.basis.split(",")):
        parts.append("waited %ds on the wearable" % frame.age)  # (0 says nothing)
    if frame.battery_ext is not None:
        parts.append("battery %d%%" % frame.battery_ext)
    return ", ".join(parts)
