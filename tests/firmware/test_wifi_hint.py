# Wi-Fi access points as a hint of where the wearer is (wifi_scan in the config), on the
# MicroPython unix port with the firmware's real MQTT link and a real Mosquitto; the test plays
# the gateway and decodes every frame with vigil_protocol. The unix port has no `network`: the
# station's scan is the simulated board's (hal_sim_wifi.SimStation: WLAN.scan()'s tuples, every
# scan recorded with its time).
import vigil_protocol as p
from vigil_protocol.beacon_id import WIFI, short_id

NEAR, MID, FAR = "a4b1c2d3e4f5", "a4b1c2d3e4f6", "0c8112000001"
IN_RANGE = [(FAR, -83), (NEAR, -48), (MID, -66)]
EVERY = 2


def uplinks(gw):
    with gw.lock:
        return [(len(raw), f) for _, raw, f in gw.uplinks if not isinstance(f, str)]


def test_access_points_are_scanned_on_the_check_in_schedule_only_and_carried_as_a_hint(
        scenario, fake_gateway):
    gw = fake_gateway()
    report = scenario("wifi_hint", wifi_scan={"every": EVERY}, checkin_test_s=1,
                      access_points=IN_RANGE)
    assert report["first"] and report["sos"] and report["duress"] and report["acked"], report
    gw.wait_frames("checkin", 6)
    frames = uplinks(gw)
    expected = [short_id(WIFI, bytes.fromhex(b)).hex() for b in (NEAR, MID, FAR)]

    # The schedule alone decides the scans: one before every EVERY-th check-in, the first
    # included; the SOS and the duress alarm raised between them started none.
    scheduled = report["scheduled"]
    assert scheduled >= 6 and report["scanned"] == len(report["scans"])
    assert len(report["scans"]) == (scheduled + EVERY - 1) // EVERY, report

    # A check-in after a scan that heard them carries the access points, strongest first,
    # with their RSSI (a scan age within a check-in interval or two).
    checkins = [f for _, f in frames if f.NAME == "checkin"]
    first = checkins[0]
    assert [(sid.hex(), rssi) for sid, rssi in first.wifi[1]] == list(
        zip(expected, [-48, -66, -83]))
    assert first.wifi[0] <= 1 and first.beacons is None and first.location is None
    # The alarms did not wait for a scan: each carries the last one's, with its true age.
    alarms = [f for _, f in frames if f.NAME == "alarm"]
    assert [f.kind for f in alarms] == [p.SOS, p.DURESS]
    for alarm in alarms:
        assert [sid.hex() for sid, _ in alarm.wifi[1]] == expected
        assert 0 <= alarm.wifi[0] <= 2 * EVERY
    # The access points gone: the next scan heard nothing, and what follows says nothing.
    assert checkins[-1].wifi is None
    # wifi_scan seals every alarm and check-in at 48 bytes, heard or not.
    assert {size for size, _ in frames} == {48}, [size for size, _ in frames]
    # Duress silence: from the duress alarm on nothing was felt or seen (the SOS's
    # acknowledgements included).
    assert report["played"][report["played_at_duress"]:] == [], report["played"]


# -- which frames carry the hint: the app's rule on CPython (the firmware core runs there too,
# as in `vigil sim`), each frame decoded as a gateway would ------------------------------------

class _Fix:  # the GNSS parser's fix(now), held
    def __init__(self, fix):
        self.value = fix

    def fix(self, now):
        return self.value


class _Beacons:  # a beacon scan's entries(now, with_fix), held
    def __init__(self, heard):
        from vigil_fw.clock import Flag
        self.heard = heard
        self.wake = Flag()  # (raising an alarm asks for a scan)

    def entries(self, now, with_fix):
        return self.heard


def test_the_hint_goes_only_in_frames_with_neither_a_fix_nor_a_beacon(tmp_path):
    from vigil_fw.app import Wearable
    from vigil_fw.config import Config
    from vigil_fw.hal_sim import SimBoard
    from vigil_protocol.mac import UP

    key = "6b" * 32
    config = Config({"version": 1, "device_id": "00c0ffee", "key": key,
                     "mqtt": {"host": "h", "username": "00c0ffee", "password": "p"},
                     "wifi": {"ssid": "site-net"}, "wifi_scan": {"every": 1}})
    board = SimBoard(str(tmp_path), wifi_scan=config.wifi_scan)
    board.station.access_points.append((b"site-net", bytes.fromhex(NEAR), 6, -50, 3, False))
    lines = []
    w = Wearable(board, config, [], log=lines.append)
    w.wifi_scanner.scan()
    fix = (515007800, -1275000, 8, 2)
    beacon = (1, ((bytes(4), -60),))
    for gnss, scanner, wifi_sent in ((None, None, True), (_Fix(fix), None, False),
                                     (None, _Beacons(beacon), False),
                                     (None, _Beacons(None), True)):
        w.gnss, w.scanner = gnss, scanner
        w.raise_alarm(p.SOS)
        raw = bytes.fromhex(lines[-1].split()[-1])  # "vigil: raised <frame>"
        alarm = p.decode(raw, bytes.fromhex(key), UP)
        assert (alarm.wifi is not None) == wifi_sent, (gnss, scanner, alarm.wifi)
        assert len(raw) == 48 and (alarm.location == fix) == (gnss is not None)
        if wifi_sent:
            assert alarm.wifi[1] == ((short_id(WIFI, bytes.fromhex(NEAR)), -50),)
