# The DC-09 destination against a real receiver (pysiaalarm's, on loopback): every mapped
# kind and event, plain and AES, both message formats; sequence numbers on disk; a NAK's time
# corrects our clock; DUH and unknown accounts are alerts, not silent retries.
import asyncio
import itertools
import sqlite3
import time

import pytest
from sia_receiver import start_receiver, start_siadc09_receiver
from vigil_gateway import dc09
from vigil_gateway.db import open_database
from vigil_gateway.forward_dc09 import Dc09State, Dc09Transport, event_for
from vigil_gateway.outbox import Item
from vigil_gateway.wearers import Wearers
from vigil_tools.broker import free_port

KEY = "0123456789ABCDEF0123456789ABCDEF"

# (kind, event) -> (SIA-DCS code, Contact ID qualifier, Contact ID event), DC-03 and DC-05
CASES = {
    ("SOS", "raised"): ("PA", "1", "120"),
    ("SOS", "wearer_confirms"): ("PA", "6", "120"),     # the open alarm, still present
    ("SOS", "resolved"): ("PH", "3", "120"),
    ("DURESS", "raised"): ("HA", "1", "121"),
    ("DURESS", "wearer_confirms"): ("HA", "6", "121"),  # duress stays duress
    ("DURESS", "resolved"): ("HH", "3", "121"),
    ("FALL", "raised"): ("MA", "1", "103"),             # DC-05 103 fall detected
    ("FALL", "wearer_confirms"): ("MA", "6", "103"),
    ("FALL", "resolved"): ("MH", "3", "103"),
    ("NO_MOTION", "raised"): ("QA", "1", "102"),
    ("NO_MOTION", "resolved"): ("QH", "3", "102"),      # not FALL's restore
    ("LOW_BATTERY", "raised"): ("XT", "1", "384"),
    ("LOW_BATTERY", "resolved"): ("XR", "3", "384"),
    ("LOST_CONTACT", "raised"): ("UY", "1", "381"),     # a zone-addressed trouble
    ("LOST_CONTACT", "contact_restored"): ("UJ", "3", "381"),
}


@pytest.fixture(scope="module")
def receiver():
    port = free_port()
    client = start_receiver(port, {"AAA": None, "BBB": KEY})
    yield port, client.events
    client.stop()


_ROW_IDS = itertools.count(1)


def item(kind, event, location=None, zone=3, row_id=None, audit=(), created_at=None):
    """An outbox row (a new row id each, as the outbox gives them, unless `row_id` says),
    queued now unless `created_at` says."""
    snapshot = {"event": event, "device_id": 0xC0FFEE,
                "incident": {"id": 1, "kind": kind, "state": "open", "counter": 5,
                             "opened_at": 0, "updated_at": 0},
                "wearer": {}, "zone": zone, "location": location,
                "audit": [{"at": 0, "event": e, "detail": ""} for e in audit]}
    created_at = time.time() if created_at is None else created_at
    return Item(next(_ROW_IDS) if row_id is None else row_id, "dc09", 1, 0xC0FFEE, "k", event,
                snapshot, created_at, 0, created_at, None, None, None)


def transport(tmp_path, port, encrypted, fmt, clock=time.time, scheme="site", profile=True):
    """A transport for the site account AAA (plain) or BBB (AES); the wearer of 00c0ffee has a
    profile with zone 3 unless `profile` is False."""
    conn = open_database(str(tmp_path))
    account = dc09.Account("BBB", KEY) if encrypted else dc09.Account("AAA")
    state = Dc09State(conn)
    if profile:
        Wearers(conn).set(0xC0FFEE, "Zoë Quinn", zone=3)
    return Dc09Transport("127.0.0.1", port, account, state, fmt, 5.0, clock, scheme)


def drain(events):
    while not events.empty():
        events.get_nowait()


@pytest.mark.parametrize("fmt", ["SIA-DCS", "ADM-CID"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "aes"])
def test_every_mapped_kind_is_acknowledged_and_understood(receiver, tmp_path, fmt, encrypted):
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, encrypted, fmt)
    for (kind, event), (code, qualifier, cid) in CASES.items():
        location = {"lat": 51.5, "lon": -0.12, "accuracy_m": 5, "at": 0} \
            if kind == "SOS" else None
        result = asyncio.run(t.deliver(item(kind, event, location)))
        assert result.ok, (kind, event, result.error)
        got = events.get(timeout=5)
        assert got.account == ("BBB" if encrypted else "AAA")
        if fmt == "SIA-DCS":
            assert got.code == code, (kind, event)
            assert got.ri == "1" and got.message.startswith("003")  # area 1, zone 3
        else:  # the raw Contact ID (pysiaalarm's table lacks 384: not its translation)
            assert (got.event_qualifier, got.event_type) == (qualifier, cid), (kind, event)
        if location and fmt == "SIA-DCS":  # ADM-CID: one extended-data block at most
            assert "Y51N30.000" in got.x_data and "X000W07.200" in got.x_data
    assert t.state._row()[0] == len(CASES)  # one sequence number each, on disk


def test_sequence_numbers_persist_and_wrap(tmp_path):
    conn = open_database(str(tmp_path))
    state = Dc09State(conn)
    assert [state.next_sequence() for _ in range(2)] == [1, 2]
    state2 = Dc09State(open_database(str(tmp_path)))
    assert state2.next_sequence() == 3
    conn.execute("UPDATE dc09_state SET sequence = 9999")
    assert state2.next_sequence() == 1


def test_a_nak_corrects_the_clock_and_the_event_is_resent(receiver, tmp_path):
    port, events = receiver
    drain(events)
    ten_min_slow = lambda: time.time() - 600  # noqa: E731
    t = transport(tmp_path, port, True, "SIA-DCS", clock=ten_min_slow)
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert result.ok
    assert t.clock_corrections == 1
    assert 590 < t.state.clock_offset < 610          # kept for the next message
    assert events.get(timeout=5).code == "PA"
    assert asyncio.run(t.link_test()).ok
    assert t.clock_corrections == 1


def test_unknown_account_is_an_alert(receiver, tmp_path):
    port, _ = receiver
    conn = open_database(str(tmp_path))
    t = Dc09Transport("127.0.0.1", port, dc09.Account("DDD"), Dc09State(conn))
    Wearers(conn).set(0xC0FFEE, "W", zone=3)
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.alert and "DDD" in result.error


def test_duh_is_an_alert(receiver, tmp_path, monkeypatch):
    port, _ = receiver
    t = transport(tmp_path, port, False, "SIA-DCS")
    monkeypatch.setattr("vigil_gateway.forward_dc09.event_for",
                        lambda snapshot, sent_at: dc09.Event("AQ", 120, 1))
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.alert and "DUH" in result.error


def test_receiver_down_is_a_plain_failure(tmp_path):
    t = transport(tmp_path, free_port(), False, "SIA-DCS")
    result = asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and not result.alert and "cannot reach" in result.error
    assert t.link_up is False


def test_an_event_sent_late_carries_its_time_of_occurrence(receiver, tmp_path):
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, True, "SIA-DCS")
    queued = time.time() - 600                       # waited ten minutes in the outbox
    assert asyncio.run(t.deliver(item("SOS", "raised", created_at=queued))).ok
    got = events.get(timeout=5)
    assert "H" + dc09.timestamp(dc09.datetime.datetime.fromtimestamp(
        int(queued), dc09.datetime.timezone.utc))[1:] in got.x_data
    assert asyncio.run(t.deliver(item("SOS", "resolved"))).ok    # sent at once: no [H]
    assert [x.identifier for x in events.get(timeout=5).extended_data] == ["I"]


def test_a_late_alarm_carries_the_time_it_was_raised(receiver, tmp_path):
    """An alarm that waited on the wearable (the snapshot's `late`) goes with [H] at the time it
    was raised at the latest, even when the gateway forwards it at once."""
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, False, "SIA-DCS")
    row = item("SOS", "raised")
    raised_at = time.time() - 300
    row.snapshot["late"] = {"raised_at": raised_at, "late_s": 300.0, "basis": "age",
                            "held_up_to_s": None}
    assert asyncio.run(t.deliver(row)).ok
    stamp = dc09.timestamp(dc09.datetime.datetime.fromtimestamp(
        int(raised_at), dc09.datetime.timezone.utc))[1:]
    assert "H" + stamp in events.get(timeout=5).x_data


def test_no_motion_says_so_in_text():
    event = event_for(item("NO_MOTION", "raised").snapshot)
    assert (event.sia_code, event.cid_event, event.text) == ("QA", 102, "no motion, dev 00c0ffee")


def test_codes_against_dc03_and_dc05_tables():
    """siadc09's DC-03 and DC-05 tables: every code is a real one, zone-addressed (DC-05
    addresses 121 duress by user), and each kind has restores of its own."""
    from siadc09 import dc03, dc05
    for (kind, event), (sia, qualifier, cid) in CASES.items():
        assert dc03.EVENT[sia]["addr"] == "Zone", (kind, event, sia)
        assert dc05.EVENT[cid]["addr"] == ("User" if cid == "121" else "Zone"), (kind, cid)
    assert dc05.EVENT["103"]["name"] == "Fall Detected"
    restores = [(sia, cid) for (kind, event), (sia, q, cid) in CASES.items() if q == "3"]
    assert len(restores) == len(set(restores))  # FALL and NO_MOTION no longer share one
    assert len({sia for sia, _ in restores}) == len(restores)
    assert dc03.EVENT["YC"]["addr"] is None  # why LOST_CONTACT is no longer YC


def test_a_confirmation_is_its_alarm_reported_again_and_closed_by_its_restore():
    raised = event_for(item("SOS", "raised").snapshot)
    confirms = event_for(item("SOS", "wearer_confirms").snapshot)
    resolved = event_for(item("SOS", "resolved").snapshot)
    assert (confirms.sia_code, confirms.cid_event, confirms.zone) == \
        (raised.sia_code, raised.cid_event, raised.zone)
    assert confirms.qualifier == dc09.STATUS and confirms.text.startswith("wearer confirms")
    assert (resolved.cid_event, resolved.qualifier) == (raised.cid_event, dc09.RESTORE)
    # a tap after the alarm was resolved reopens it: a new event
    again = event_for(item("SOS", "wearer_confirms", audit=("raised", "resolved",
                                                             "wearer_confirms")).snapshot)
    assert again.qualifier == dc09.NEW


def test_a_double_tap_on_duress_reaches_the_arc_as_duress_and_is_counted(receiver, tmp_path):
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, True, "SIA-DCS")
    assert asyncio.run(t.deliver(item("DURESS", "wearer_confirms"))).ok
    got = events.get(timeout=5)
    assert got.code == "HA" and "duress" in got.x_data   # holdup: no call to the wearer
    assert "wearer confirms" not in got.x_data
    assert t.duress_taps == 1
    assert asyncio.run(t.deliver(item("SOS", "wearer_confirms"))).ok
    assert t.duress_taps == 1


@pytest.mark.parametrize("fmt", ["SIA-DCS", "ADM-CID"])
def test_every_mapped_kind_is_decoded_by_siadc09(tmp_path, fmt):
    """The second opinion: siadc09's codec reads the same codes, qualifiers and zone."""
    port = free_port()
    server = start_siadc09_receiver(port, {"BBB": KEY.encode()})
    try:
        t = transport(tmp_path, port, True, fmt)
        for (kind, event), (code, qualifier, cid) in CASES.items():
            assert asyncio.run(t.deliver(item(kind, event))).ok, (kind, event)
            msg = server.events.get(timeout=5)
            if fmt == "SIA-DCS":
                (dcs,) = msg.data.blocks[1].events
                assert (dcs.code, dcs.modifiers["ri"].value) == (code, 1), (kind, event)
                assert dcs.addr == 3  # zone 003 (siadc09 reads zones as hex digits)
            else:
                cid_event = msg.data.event
                assert (cid_event.qualifier, cid_event.code, cid_event.group,
                        cid_event.addr) == (qualifier, cid, 1, 3), (kind, event)
    finally:
        server.stop()


def test_each_device_its_own_account_under_the_device_scheme(tmp_path):
    """scheme "device": the wearable's id is its account (zone 001), as lone-worker ARCs
    identify devices; key, line and receiver number stay the configured ones."""
    port = free_port()
    client = start_receiver(port, {"00C0FFEE": KEY, "00C0FFEF": KEY})
    try:
        t = transport(tmp_path, port, True, "SIA-DCS", scheme="device")
        assert asyncio.run(t.deliver(item("SOS", "raised"))).ok
        got = client.events.get(timeout=5)
        assert (got.account, got.code, got.message[:3]) == ("00C0FFEE", "PA", "001")
        other = item("FALL", "raised")
        other.snapshot["device_id"] = 0xC0FFEF
        assert asyncio.run(t.deliver(other._replace(device_id=0xC0FFEF))).ok
        got = client.events.get(timeout=5)
        assert (got.account, got.code) == ("00C0FFEF", "MA")
        assert t.derived == set()  # the scheme chosen: nothing to tell the operator
    finally:
        client.stop()


def test_a_wearer_without_a_profile_never_lands_on_zone_001_of_the_site(receiver, tmp_path,
                                                                          caplog):
    """Under the site account, a wearable with no profile is reported under its own device
    account (the receiver here does not know it: refused, an alert) and the operator is told
    once; with a profile it goes under the site account and its zone."""
    port, events = receiver
    t = transport(tmp_path, port, False, "SIA-DCS", profile=False)
    with caplog.at_level("WARNING", logger="vigil_gateway.forward_dc09"):
        result = asyncio.run(t.deliver(item("SOS", "raised")))
        asyncio.run(t.deliver(item("SOS", "raised")))
    assert not result.ok and result.reason == "unknown_account" and "00C0FFEE" in result.error
    assert [r.getMessage() for r in caplog.records].count("dc09_identity_derived") == 1
    assert t.derived == {0xC0FFEE}
    Wearers(t.state.conn).set(0xC0FFEE, "W", zone=9)
    drain(events)
    assert asyncio.run(t.deliver(item("SOS", "raised"))).ok
    got = events.get(timeout=5)
    assert (got.account, got.message[:3]) == ("AAA", "009")


def test_the_i_text_names_the_device_and_the_wearer(receiver, tmp_path):
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, False, "SIA-DCS")
    row = item("FALL", "raised")
    row.snapshot["wearer"] = {"name": "Zoë Quinn", "contacts": [], "notes": None}
    assert asyncio.run(t.deliver(row)).ok
    got = events.get(timeout=5)
    assert "Ifall, dev 00c0ffee, Zo Quinn" in got.x_data   # ASCII only: the ë is dropped


def test_a_wearer_with_an_account_of_its_own_is_reported_under_it(tmp_path):
    """The ARC gave this wearer its own account (wearer set --dc09-account): that account and
    the profile's zone, under either scheme; the site account stays for the others."""
    port = free_port()
    client = start_receiver(port, {"AAA": None, "5A17": None})
    try:
        for scheme in ("site", "device"):
            t = transport(tmp_path / scheme, port, False, "SIA-DCS", scheme=scheme,
                          profile=False)
            Wearers(t.state.conn).set(0xC0FFEE, "W", zone=4, dc09_account="5a17")
            assert asyncio.run(t.deliver(item("SOS", "raised"))).ok
            got = client.events.get(timeout=5)
            assert (got.account, got.message[:3]) == ("5A17", "004"), scheme
            assert t.derived == set()
    finally:
        client.stop()


def test_a_profile_table_from_before_the_account_column_is_migrated(tmp_path):
    old = sqlite3.connect(str(tmp_path / "gateway.db"))  # as a release before the column left it
    old.executescript("CREATE TABLE wearers (device_id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                      "contacts TEXT NOT NULL DEFAULT '[]', notes TEXT NOT NULL DEFAULT '', "
                      "zone INTEGER NOT NULL DEFAULT 1, updated_at REAL NOT NULL);"
                      "INSERT INTO wearers VALUES (1, 'Old', '[]', '', 7, 0);")
    old.close()
    conn = open_database(str(tmp_path))  # migrations.py adds the column
    assert Wearers(conn).get(1).dc09_account == "" and Wearers(conn).get(1).zone == 7


def test_a_played_prompt_is_not_sent_to_the_arc(receiver, tmp_path):
    # The wearable's receipt for a responder's prompt is for a console: to an ARC it would
    # read as the SOS raised again.
    port, events = receiver
    drain(events)
    t = transport(tmp_path, port, False, "SIA-DCS")
    result = asyncio.run(t.deliver(item("SOS", "prompt_played")))
    assert result.ok
    time.sleep(0.5)  # anything sent would have arrived by now
    assert events.empty()
    assert t.state._row()[0] == 0  # no sequence number spent
