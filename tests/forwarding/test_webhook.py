# Webhook bodies and signatures: what a responder backend receives and checks.
import json
import pathlib

import jsonschema
import pytest

from vigil_gateway import webhook

SECRET = b"backend-shared-secret"
INCIDENT = {"id": 4, "kind": "DURESS", "state": "open", "counter": 17, "opened_at": 1700000000.0,
            "updated_at": 1700000000.5}
WEARER = {"name": "A. Worker", "contacts": [{"name": "B. Lead", "phone": "+441234567890",
                                             "relation": "supervisor"}], "notes": "night shift"}


def test_signature_round_trip_and_tampering():
    body = webhook.encode_body({"a": 1})
    header = webhook.sign(SECRET, body, timestamp=1000)
    assert webhook.verify(SECRET, header, body, now=1010) == 1000
    with pytest.raises(webhook.SignatureError, match="does not match"):
        webhook.verify(SECRET, header, body + b" ", now=1010)
    with pytest.raises(webhook.SignatureError, match="does not match"):
        webhook.verify(b"other", header, body, now=1010)
    with pytest.raises(webhook.SignatureError, match="outside"):
        webhook.verify(SECRET, header, body, now=1000 + webhook.TOLERANCE_S + 1)
    with pytest.raises(webhook.SignatureError, match="malformed"):
        webhook.verify(SECRET, "v1=abc", body, now=1000)


def test_duress_payload_says_do_not_contact_and_carries_contacts():
    payload = webhook.incident_payload("raised", INCIDENT, 0x00C0FFEE, WEARER,
                                       [{"at": 1700000000.0, "event": "raised", "detail": "x"}],
                                       sent_at=1700000001)
    assert payload["procedure"]["contact_wearer"] is False
    assert "do NOT contact the wearer" in payload["procedure"]["instruction"]
    assert payload["wearer"]["contacts"][0]["phone"] == "+441234567890"
    assert payload["idempotency_key"] == "00c0ffee-17-raised"
    assert payload["incident"]["opened_at"] == "2023-11-14T22:13:20.000Z"


SCHEMA = json.loads((pathlib.Path(__file__).resolve().parents[2] / "gateway" /
                     "webhook-schema.json").read_text())


@pytest.mark.parametrize("kind", ["SOS", "DURESS", "FALL", "LOW_BATTERY", "LOST_CONTACT"])
def test_payloads_validate_against_the_published_schema(kind):
    incident = dict(INCIDENT, kind=kind, counter=None if kind == "LOST_CONTACT" else 17)
    payload = webhook.incident_payload(
        "raised", incident, 1, WEARER if kind != "SOS" else None,
        [{"at": 1700000000.0, "event": "raised", "detail": ""}],
        location={"lat": 51.5, "lon": -0.12, "accuracy_m": 12, "at": "2023-11-14T22:13:20.000Z"})
    jsonschema.validate(payload, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert payload["procedure"]["contact_wearer"] is (kind != "DURESS")


def test_the_schema_rejects_a_payload_without_its_procedure():
    payload = webhook.incident_payload("raised", INCIDENT, 1, None, [])
    del payload["procedure"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, SCHEMA)


def test_a_late_alarm_says_when_it_was_raised_and_why_it_is_late():
    late = {"raised_at": 1699999000.0, "late_s": 1000.0, "basis": "age,order",
            "held_up_to_s": None}
    payload = webhook.incident_payload("raised", INCIDENT, 1, WEARER, [], late=late)
    jsonschema.validate(payload, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert payload["incident"]["raised_at"] == "2023-11-14T21:56:40.000Z"
    assert payload["incident"]["late"] == {"late_by_s": 1000.0, "basis": ["age", "order"],
                                           "possibly_held_s": None}
    on_time = webhook.incident_payload("raised", INCIDENT, 1, WEARER, [])
    jsonschema.validate(on_time, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert on_time["incident"]["late"] is None
    assert on_time["incident"]["raised_at"] == on_time["incident"]["opened_at"]
    broken = dict(payload, incident=dict(payload["incident"], late={"late_by_s": -1}))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
