# Property-based tests and a decoder fuzz test (CPython, hypothesis).
# CI runs a bounded number of examples; `make fuzz` sets VIGIL_FUZZ_EXAMPLES for a long run.
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vigil_protocol as p
from vigil_protocol import frames as wire

FUZZ_EXAMPLES = int(os.environ.get("VIGIL_FUZZ_EXAMPLES", "3000"))
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
props = settings(max_examples=300, deadline=None)

keys = st.binary(min_size=32, max_size=32)
u32 = st.integers(min_value=1, max_value=2**32 - 1)
f8 = st.integers(0, 255).map(wire.age_seconds)  # values the 8-bit floats hold exactly
lat_lon = (st.integers(-900000000, 900000000), st.integers(-1800000000, 1800000000))
locations = (st.none() | st.tuples(*lat_lon, st.integers(0, 0xFFFF))
             | st.tuples(*lat_lon, f8.filter(lambda v: v <= 0xFFFF), f8))  # 0x01, 0x04
batteries = st.integers(0, 100) | st.just(255)


@st.composite
def heard(draw, most):
    """A beacons or Wi-Fi extension's value: a scan age and 1..most entries, strongest first."""
    n = draw(st.integers(1, most))
    ids = draw(st.lists(st.binary(min_size=4, max_size=4), min_size=n, max_size=n, unique=True))
    rssis = sorted(draw(st.lists(st.integers(-127, 20), min_size=n, max_size=n)), reverse=True)
    return (draw(f8), tuple(zip(ids, rssis)))


# (at most 2 beacons and an access point: with every other extension, still 64 bytes)
beacons = st.none() | heard(2)
wifi = st.none() | heard(1)


@st.composite
def alarms(draw):
    counter = draw(u32)
    kind = draw(st.sampled_from(sorted(p.KINDS)))
    ref = 0
    if kind == p.DOUBLE_TAP:
        if counter < 2:
            counter = 2
        ref = counter - draw(st.integers(1, min(0xFFFF, counter - 1)))
    return p.Alarm(draw(u32), counter, kind, ref=ref, location=draw(locations),
                   age=draw(st.none() | st.integers(0, 2**32 - 1)),
                   battery=draw(st.none() | batteries), beacons=draw(beacons), wifi=draw(wifi))


checkins = st.builds(p.CheckIn, u32, u32, battery=batteries, flags=st.integers(0, 255),
                     interval=st.integers(0, 0xFFFF), location=locations, beacons=beacons,
                     wifi=wifi)
acks = st.builds(p.Ack, u32, u32, u32, st.sampled_from(sorted(p.STAGES)))
actions = st.builds(p.Action, u32, u32, u32, st.sampled_from(sorted(p.ACTIONS)))
frames = alarms() | checkins | acks | actions


@props
@given(frames, keys)
def test_every_frame_round_trips(frame, key):
    data = p.encode(frame, key)
    assert len(data) <= p.MAX_FRAME
    decoded = p.decode(data, key, frame.DIRECTION)
    assert decoded.fields() == frame.fields()
    assert p.encode(decoded, key) == data


@props
@given(alarms(), keys)
def test_alarm_without_extensions_is_20_bytes(alarm, key):
    alarm.location = alarm.age = alarm.battery_ext = alarm.beacons = alarm.wifi = None
    assert len(p.encode(alarm, key)) == 20


@props
@given(frames, keys, keys)
def test_other_keys_never_verify(frame, key, other):
    data = p.encode(frame, key)
    if other != key:
        try:
            p.decode(data, other, frame.DIRECTION)
        except p.BadMac:
            pass
        else:
            raise AssertionError("verified under another key")


@props
@given(frames, keys)
def test_a_frame_never_decodes_in_the_other_direction(frame, key):
    other = p.DOWN if frame.DIRECTION == p.UP else p.UP
    try:
        p.decode(p.encode(frame, key), key, other)
    except p.WrongDirection:
        pass
    else:
        raise AssertionError("decoded in the wrong direction")


@fuzz
@given(st.binary(max_size=p.MAX_FRAME + 8), keys, st.sampled_from([p.UP, p.DOWN]))
def test_fuzz_random_bytes_raise_only_protocol_errors(data, key, direction):
    try:
        p.decode(data, key, direction)
    except p.RemoteProtocolError:
        pass


@st.composite
def resigned_mutations(draw):
    """Valid frames with bytes changed and the MAC recomputed: reaches the field parsers."""
    frame = draw(frames)
    key = draw(keys)
    body = bytearray(p.encode(frame, key)[:-p.TAG_LEN])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        elif op == "cut" and body:
            del body[draw(st.integers(0, len(body) - 1)):]
        else:
            body += draw(st.binary(max_size=12))
    body = bytes(body)
    return body + p.DeviceKey(key).tag(frame.DIRECTION, body), key, frame.DIRECTION


@fuzz
@given(resigned_mutations())
def test_fuzz_validly_signed_garbage_raises_only_protocol_errors(case):
    data, key, direction = case
    try:
        frame = p.decode(data, key, direction)
    except p.RemoteProtocolError:
        return
    # Whatever decodes must survive a round trip of its known fields.
    assert frame.fields()["counter"] >= 1


# -- v2 -------------------------------------------------------------------------------------

@st.composite
def alarms_v2(draw):
    alarm = draw(alarms())
    if alarm.kind == p.DOUBLE_TAP:
        alarm.ref = alarm.counter - draw(st.integers(1, min(1023, alarm.counter - 1)))
    return alarm


checkins_v2 = st.builds(p.CheckIn, u32, u32, battery=batteries, flags=st.integers(0, 31),
                        interval=st.integers(0, 153000), location=locations, beacons=beacons,
                        wifi=wifi)
frames_v2 = alarms_v2() | checkins_v2 | acks | actions


def carried(frame):
    """The fields a v2 frame carries for `frame`: its age rounded down, interval rounded up."""
    fields = frame.fields()
    if isinstance(frame, p.Alarm):
        fields["age"] = wire.age_seconds(wire.age_code(frame.age or 0))
    if isinstance(frame, p.CheckIn):
        fields["interval"] = wire.interval_seconds(wire.interval_code(frame.interval))
    return fields


@props
@given(frames_v2, keys)
def test_every_v2_frame_round_trips(frame, key):
    data = p.encode(frame, key, version=2)
    assert len(data) in wire.V2_SIZES
    decoded = p.decode(data, key, frame.DIRECTION)
    assert decoded.version == 2
    assert decoded.fields() == carried(frame)
    assert p.encode(decoded, key, version=2) == data


@props
@given(alarms_v2(), checkins_v2, keys)
def test_v2_core_alarms_and_checkins_are_all_20_bytes(alarm, checkin, key):
    alarm.location = alarm.battery_ext = checkin.location = None
    alarm.beacons = alarm.wifi = checkin.beacons = checkin.wifi = None
    assert len(p.encode(alarm, key, version=2)) == 20
    assert len(p.encode(checkin, key, version=2)) == 20


@props
@given(frames_v2, keys)
def test_v2_peek_shows_the_header_and_nothing_else(frame, key):
    header = p.peek(p.encode(frame, key, version=2))
    assert (header.version, header.device_id, header.counter) == (2, frame.device_id,
                                                                  frame.counter)
    assert header.name is None and header.frame_type is None


@props
@given(frames_v2, keys, keys)
def test_v2_other_keys_never_verify(frame, key, other):
    data = p.encode(frame, key, version=2)
    if other != key:
        for direction in (p.UP, p.DOWN):
            try:
                p.decode(data, other, direction)
            except p.BadMac:
                pass
            else:
                raise AssertionError("verified under another key")


@props
@given(frames_v2, keys)
def test_a_v2_frame_is_wrong_direction_the_other_way(frame, key):
    other = p.DOWN if frame.DIRECTION == p.UP else p.UP
    try:
        p.decode(p.encode(frame, key, version=2), key, other)
    except p.WrongDirection:
        pass
    else:
        raise AssertionError("decoded in the wrong direction")


@fuzz
@given(st.binary(max_size=p.MAX_FRAME + 8), keys, st.sampled_from([p.UP, p.DOWN]))
def test_fuzz_random_v2_bytes_raise_only_protocol_errors(data, key, direction):
    try:
        p.decode(b"\x20" + data, key, direction)
    except p.RemoteProtocolError:
        pass


@st.composite
def resealed_mutations(draw):
    """v2 contents (core, extensions) changed, then sealed validly at some v2 size: reaches the
    parsers behind the MAC and the decryption."""
    frame = draw(frames_v2)
    key = draw(keys)
    direction = draw(st.sampled_from([frame.DIRECTION] * 3 + [p.UP, p.DOWN]))
    core = bytearray(9 + frame.CORE2)
    frame._core2(core)
    body = core[9:] + frame._extensions(2)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and body:
            i = draw(st.integers(0, len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        elif op == "cut" and body:
            del body[draw(st.integers(0, len(body) - 1)):]
        else:
            body += draw(st.binary(max_size=12))
    size = draw(st.sampled_from([s for s in wire.V2_SIZES if s >= 17 + len(body)] or [64]))
    buf = bytearray(struct.pack(">BII", 0x20, frame.device_id, draw(st.sampled_from(
        [frame.counter, 0]))) + bytes(body[:size - 17]))
    buf += bytes(size - len(buf))
    wire._seal(p.DeviceKey(key), direction, buf)
    return bytes(buf), key, frame.DIRECTION


@fuzz
@given(resealed_mutations())
def test_fuzz_validly_sealed_garbage_raises_only_protocol_errors(case):
    data, key, direction = case
    try:
        frame = p.decode(data, key, direction)
    except p.RemoteProtocolError:
        return
    assert frame.version == 2 and frame.counter >= 1
    # Whatever decodes encodes again to what it said (skipped extensions are not re-sent).
    fields = frame.fields()
    fields.pop("unknown_extensions", None)
    assert p.decode(p.encode(frame, key, version=2), key, direction).fields() == fields
