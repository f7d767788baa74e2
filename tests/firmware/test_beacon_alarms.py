# BLE beacon scans wired into the wearable, on the MicroPython unix port with the firmware's
# real MQTT link and a real Mosquitto; the test plays the gateway and decodes every frame with
# vigil_protocol. The unix port has no `bluetooth`, so the radio is a stand-in for aioble
# behind the part of its public interface the firmware calls (aioble.scan(duration_ms,
# interval_us, window_us, active) as an async context manager and async iterator of results
# with .adv_data and .rssi: scenarios.Air), fed real beacons' advertising payloads.
import vigil_protocol as p
from vigil_protocol.beacon_id import EDDYSTONE, IBEACON, short_id

UUID = bytes.fromhex("f7826da64fa24e988024bc5b71e0893e")  # a Kontakt.io-style proximity UUID
NAMESPACE, INSTANCE = bytes.fromhex("edd1ebeac04e5defa017"), bytes.fromhex("0b1c2d3e4f50")
SCAN_MS = 800


def ibeacon(major, minor):
    """An iBeacon's advertising payload: flags, then Apple's manufacturer data."""
    return (bytes.fromhex("0201061aff4c000215") + UUID
            + bytes((major >> 8, major & 255, minor >> 8, minor & 255, 0xC5)))


def eddystone_uid():
    return bytes.fromhex("0201060303aafe1716aafe00ee") + NAMESPACE + INSTANCE + b"\0\0"


NEAR = ibeacon(1, 7)  # the strongest: the place the gateway names
FAR = ibeacon(1, 8)
EDDY = eddystone_uid()
IN_RANGE = [(NEAR.hex(), -52), (FAR.hex(), -80), (EDDY.hex(), -67),
            ("0201060303aafe", -40)]  # and something that is not a beacon


def ids(heard):
    return [(sid.hex(), rssi) for sid, rssi in heard[1]]


def expected():
    near = short_id(IBEACON, UUID + bytes((0, 1, 0, 7)))
    far = short_id(IBEACON, UUID + bytes((0, 1, 0, 8)))
    eddy = short_id(EDDYSTONE, NAMESPACE + INSTANCE)
    return [near.hex(), eddy.hex(), far.hex()]


def uplinks(gw):
    with gw.lock:
        return [(len(raw), f) for _, raw, f in gw.uplinks if not isinstance(f, str)]


def run(scenario, fake_gateway, **settings):
    gw = fake_gateway()
    report = scenario("beacons_alarm", beacons={"scan_ms": SCAN_MS}, beacons_in_range=IN_RANGE,
                      **settings)
    assert report["raised_ok"] and report["scanned"] and report["raised2"], report
    assert report["acked"] and report["sent"], report
    gw.wait_frames("checkin", 3)
    return gw, report


def test_an_alarm_goes_at_once_and_the_beacons_it_scanned_follow_as_a_location_update(
        scenario, fake_gateway):
    gw, report = run(scenario, fake_gateway)
    frames = uplinks(gw)
    alarms = [f for _, f in frames if f.NAME == "alarm"]
    assert [f.kind for f in alarms] == [p.SOS, p.LOW_BATTERY]
    sos, low = alarms
    # The SOS did not wait for the scan: it went out before the scan ended, with nothing
    # heard yet (nothing is made up).
    (raised_at, _), = report["raised"][:1]
    first_tx = min(t for t, _ in report["tx"])
    scan_start, scan_end = report["scans"][0][:2]
    assert sos.beacons is None and first_tx < scan_end, (report["tx"], report["scans"])
    assert first_tx - raised_at < 500 and scan_end - scan_start >= SCAN_MS
    # The scan it started: passive, for the configured time, the receiver on throughout.
    for scan in report["scans"]:
        assert scan[2:] == [SCAN_MS, 30000, 30000, False], scan
    # Its end: a check-in of the open alarm with the beacons heard, strongest first, each
    # once with its strongest RSSI; the advert that is no beacon counted, not sent.
    update = [f for _, f in frames if f.NAME == "checkin" and f.beacons is not None][0]
    assert update.flags & p.FLAG_ALARM_OPEN
    assert [sid for sid, _ in ids(update.beacons)] == expected()
    assert [rssi for _, rssi in ids(update.beacons)] == [-52, -67, -80]
    assert update.beacons[0] <= 1
    assert report["heard"]["other"] >= 1 and report["heard"]["beacons"] >= 3
    # The LOW_BATTERY alarm raised later carries that scan, with its true age.
    assert [sid for sid, _ in ids(low.beacons)] == expected()
    assert low.beacons[0] >= 1
    # The beacons gone: the next scan heard nothing, and the check-in says nothing.
    assert [f for _, f in frames if f.NAME == "checkin"][-1].beacons is None
    # A unit with beacons configured: every alarm and check-in at 48 bytes, heard or not.
    assert {size for size, _ in frames} == {48}, [size for size, _ in frames]


def test_a_duress_alarm_scans_and_sends_its_place_with_nothing_felt_or_seen(
        scenario, fake_gateway):
    gw, report = run(scenario, fake_gateway, duress=True)
    frames = uplinks(gw)
    assert [f.kind for _, f in frames if f.NAME == "alarm"][:1] == [p.DURESS]
    update = [f for _, f in frames if f.NAME == "checkin" and f.beacons is not None][0]
    assert [sid for sid, _ in ids(update.beacons)] == expected()
    # Duress silence: the scan, the heard beacons and the location update cue nothing; the
    # only patterns are the LOW_BATTERY alarm's, which duress silences too.
    assert report["played"] == [] and report["feedback"] == [], report
    assert all(scan[-1] is False for scan in report["scans"])  # passive: nothing sent
