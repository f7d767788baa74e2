# `vigil gateway wearer` and `vigil gateway outbox`: profiles set, shown and listed; bad input
# refused with the option named.
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gateway"))
from gateway_harness import GatewayProcess  # noqa: E402


def test_wearer_set_show_list_and_errors(tmp_path):
    gw = GatewayProcess(tmp_path / "gw", 1883)
    out = gw.cli("wearer", "set", "00c0ffee", "--name", "A. Worker", "--contact",
                 "B. Lead,+44 1234 567890,supervisor", "--contact", "C. Kin,07700 900123,partner",
                 "--notes", "asthma", "--zone", "12").stdout
    assert "00c0ffee" in out and "2 escalation contacts" in out
    assert "A. Worker" not in out
    shown = gw.cli("wearer", "show", "00c0ffee").stdout
    assert "A. Worker" in shown and "C. Kin, 07700 900123 (partner)" in shown
    rows = [json.loads(line) for line in gw.cli("wearer", "list", "--json").stdout.splitlines()]
    assert rows == [{"device": "00c0ffee", "name": "A. Worker", "zone": 12, "notes": "asthma",
                     "dc09_account": None, "contacts": [{"name": "B. Lead", "phone": "+44 1234 567890",
                                   "relation": "supervisor"},
                                  {"name": "C. Kin", "phone": "07700 900123",
                                   "relation": "partner"}]}]
    for args, message in ((["--contact", "only-a-name"], "--contact"),
                          (["--contact", "B,not a phone!,x"], "phone number"),
                          (["--zone", "1000"], "--zone"),
                          (["--dc09-account", "XYZ"], "--dc09-account")):
        result = gw.cli("wearer", "set", "00c0ffee", "--name", "X", *args, check=False)
        assert result.returncode == 2 and message in result.stderr
    missing = gw.cli("wearer", "show", "0000beef", check=False)
    assert missing.returncode == 2 and "no wearer profile" in missing.stderr
    assert gw.cli("outbox", "--pending").stdout == ""
