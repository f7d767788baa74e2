# The beacon table (vigil_gateway.beacons) and `vigil gateway beacon add|list|remove`:
# identifiers in their canonical form with the short ids wearables send, refusals in one line,
# and resolve()'s rule: the strongest KNOWN BLE beacon names the place, Wi-Fi only without one.
import json

import pytest

import vigil_protocol as p
from gateway_harness import GatewayProcess
from vigil_gateway import GatewayError, db
from vigil_gateway.beacons import BeaconError, Beacons, parse_identifier

HALL = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:1:2"  # the iBeacon of protocol/vectors.json
STAIRS = "edd1ebeac04e5defa017:0badcafe0001"  # its Eddystone-UID
AP = "A4-B1-C2-D3-E4-F5"  # its access point
# Two BSSIDs whose short ids are equal (found by trying 67,055 of them)
CLASH = ("02:00:00:00:87:36", "02:00:00:01:05:ee")


@pytest.fixture
def table(tmp_path):
    conn = db.open_database(str(tmp_path / "data"))
    yield Beacons(conn)
    conn.close()


def sid(kind, identifier):
    _, protocol_kind, raw = parse_identifier(kind, identifier)
    return p.short_id(protocol_kind, raw)


def golden():
    with open(p.__file__.rsplit("/", 3)[0] + "/protocol/vectors.json") as f:
        return {g["kind"]: g["short_id"] for g in json.load(f)["beacon_ids"]}


class TestTable:
    def test_identifiers_are_stored_canonical_with_the_protocols_short_ids(self, table):
        hall = table.add("ble", HALL, "Main hall", floor="G", room="Reception")
        stairs = table.add("ble", STAIRS, "North stairs", floor="2", lat=51.5, lon=-0.12)
        ap = table.add("wifi", AP, "Plant room")
        assert hall.identifier == "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2"
        assert ap.identifier == "a4:b1:c2:d3:e4:f5"
        assert {"ibeacon": hall.short_id.hex(), "eddystone": stairs.short_id.hex(),
                "wifi": ap.short_id.hex()} == golden()
        assert (stairs.lat, stairs.lon, stairs.floor, hall.room) == (51.5, -0.12, "2",
                                                                     "Reception")
        # the same beacon however it is typed
        assert table.get("ble", "e2c56db5dffb48d2b060d0f5a71096e0:1:2") == hall
        assert [b.place for b in table.all()] == ["Main hall", "North stairs", "Plant room"]

    def test_remove(self, table):
        table.add("wifi", AP, "Plant room")
        table.remove("wifi", "a4:b1:c2:d3:e4:f5")
        assert table.all() == []
        with pytest.raises(BeaconError, match="no wifi beacon a4:b1:c2:d3:e4:f5"):
            table.remove("wifi", AP)

    @pytest.mark.parametrize("kind, identifier, place, extra, says", [
        ("ble", "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1", "x", {}, "iBeacon UUID:major:minor"),
        ("ble", "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:65536", "x", {}, "0 to 65535"),
        ("ble", "e2c56db5-dffb-48d2-b060-d0f5a71096e0:one:2", "x", {}, "0 to 65535"),
        ("ble", "edd1ebeac04e5defa017:0badcafe00", "x", {}, "Eddystone-UID"),
        ("ble", "edd1ebeac04e5defa0zz:0badcafe0001", "x", {}, "Eddystone-UID"),
        ("wifi", "a4:b1:c2:d3:e4", "x", {}, "BSSID"),
        ("zigbee", "a4:b1:c2:d3:e4:f5", "x", {}, "ble or wifi"),
        ("wifi", AP, " ", {}, "--place"),
        ("wifi", AP, "x" * 81, {}, "--place"),
        ("wifi", AP, "x", {"floor": "f" * 41}, "--floor"),
        ("wifi", AP, "x", {"lat": 51.5}, "give both"),
        ("wifi", AP, "x", {"lat": 91, "lon": 0}, "-90 to 90"),
        ("wifi", AP, "x", {"lat": "north", "lon": 0}, "decimal degrees"),
    ])
    def test_bad_input_is_refused_in_one_line(self, table, kind, identifier, place, extra, says):
        with pytest.raises(BeaconError) as raised:
            table.add(kind, identifier, place, **extra)
        assert says in str(raised.value) and "\n" not in str(raised.value)
        assert isinstance(raised.value, GatewayError)
        assert table.all() == []

    def test_one_beacon_twice_and_two_beacons_with_one_short_id_are_refused(self, table):
        assert sid("wifi", CLASH[0]) == sid("wifi", CLASH[1])
        table.add("ble", HALL, "Main hall")
        with pytest.raises(BeaconError, match="already placed"):
            table.add("ble", HALL.lower(), "Somewhere else")
        table.add("wifi", CLASH[0], "Office")
        with pytest.raises(BeaconError, match="same short id"):
            table.add("wifi", CLASH[1], "Canteen")
        assert [b.place for b in table.all()] == ["Main hall", "Office"]

    def test_the_short_id_space_is_per_kind(self, table):
        # a BLE beacon and an access point may share a short id: they travel in different
        # extensions (0x05, 0x06), and resolve() never mixes them
        table.add("ble", HALL, "Main hall")
        hall = sid("ble", HALL)
        assert table.resolve(wifi=(0, ((hall, -40),))) is None


class TestResolve:
    def place(self, table):
        table.add("ble", HALL, "Main hall", floor="G")
        table.add("ble", STAIRS, "North stairs", floor="2")
        table.add("wifi", AP, "Plant room", floor="B1")

    def test_the_strongest_known_beacon_names_the_place(self, table):
        self.place(table)
        heard = (3, ((b"\xb0\x00\x00\x01", -40), (sid("ble", STAIRS), -62),
                     (sid("ble", HALL), -70)))
        got = table.resolve(beacons=heard)
        assert (got.beacon.place, got.beacon.floor, got.rssi, got.age, got.source, got.unknown) \
            == ("North stairs", "2", -62, 3, "ble", 1)

    def test_a_beacon_wins_over_a_stronger_access_point(self, table):
        self.place(table)
        got = table.resolve(beacons=(0, ((sid("ble", HALL), -90),)),
                            wifi=(0, ((sid("wifi", AP), -30),)))
        assert (got.beacon.place, got.source) == ("Main hall", "ble")

    def test_wifi_names_the_place_when_no_beacon_is_known(self, table):
        self.place(table)
        got = table.resolve(beacons=(0, ((b"\xb0\x00\x00\x02", -50),)),
                            wifi=(8, ((b"\xb0\x00\x00\x03", -40), (sid("wifi", AP), -66))))
        assert (got.beacon.place, got.rssi, got.age, got.source, got.unknown) == (
            "Plant room", -66, 8, "wifi", 2)

    def test_equal_rssi_keeps_the_one_the_wearable_listed_first(self, table):
        self.place(table)
        for first, second, place in ((HALL, STAIRS, "Main hall"), (STAIRS, HALL, "North stairs")):
            heard = (0, ((sid("ble", first), -60), (sid("ble", second), -60)))
            assert table.resolve(beacons=heard).beacon.place == place

    def test_nothing_known_or_nothing_heard_is_none(self, table):
        self.place(table)
        assert table.resolve(beacons=(0, ((b"\xb0\x00\x00\x01", -40),))) is None
        assert table.resolve() is None

    def test_from_a_frame_as_the_wearable_seals_it(self, table):
        self.place(table)
        key = bytes(range(32))
        heard = (2, ((b"\xb0\x00\x00\x01", -41), (sid("ble", HALL), -58)))
        data = p.encode(p.Alarm(0xC0FFEE, 5, "SOS", beacons=heard), key, 2, size=48)
        frame = p.decode(data, key, p.UP)
        got = table.resolve(frame.beacons, frame.wifi)
        assert (got.beacon.place, got.beacon.floor, got.rssi, got.age) == ("Main hall", "G",
                                                                           -58, 2)


class TestCommand:
    def test_add_list_remove(self, tmp_path):
        gw = GatewayProcess(tmp_path / "gw", 1)
        out = gw.cli("beacon", "add", "ble", HALL, "--place", "Main hall", "--floor", "G",
                     "--room", "Reception", "--lat", "51.5", "--lon", "-0.12").stdout
        assert "placed at Main hall, floor G, Reception, 51.500000,-0.120000" in out
        assert golden()["ibeacon"] in out
        gw.cli("beacon", "add", "wifi", AP, "--place", "Plant room")
        rows = [json.loads(line) for line in gw.cli("beacon", "list", "--json").stdout.split(
            "\n") if line]
        assert [(r["kind"], r["identifier"], r["place"], r["short_id"]) for r in rows] == [
            ("ble", "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2", "Main hall", golden()["ibeacon"]),
            ("wifi", "a4:b1:c2:d3:e4:f5", "Plant room", golden()["wifi"])]
        assert "Main hall" in gw.cli("beacon", "list").stdout
        gw.cli("beacon", "remove", "wifi", "a4:b1:c2:d3:e4:f5")
        assert "Plant room" not in gw.cli("beacon", "list").stdout

    @pytest.mark.parametrize("args, says", [
        (("add", "ble", "not-a-beacon", "--place", "x"), "a BLE beacon is an iBeacon"),
        (("add", "wifi", AP, "--place", "x", "--lat", "95", "--lon", "0"), "-90 to 90"),
        (("remove", "wifi", AP), "no wifi beacon"),
    ])
    def test_bad_input_is_one_line_and_no_traceback(self, tmp_path, args, says):
        gw = GatewayProcess(tmp_path / "gw", 1)
        result = gw.cli("beacon", *args, check=False)
        assert result.returncode == 2
        assert says in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
