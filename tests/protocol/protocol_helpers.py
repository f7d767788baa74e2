# Shared by the protocol tests on CPython, the MicroPython unix port and the WebAssembly port:
# only what all three interpreters have (no os.path, no pathlib, no pytest).
import json

import vigil_protocol as p


def repo_root():
    here = __file__.replace("\\", "/")
    # .../tests/protocol/protocol_helpers.py -> ...
    return here.rsplit("/", 3)[0] if here.count("/") >= 3 else "."


def load_document():
    with open(repo_root() + "/protocol/vectors.json") as f:
        return json.load(f)


def load_vectors():
    return load_document()["vectors"]


def rejection(fn, *args):
    """The reason code of the RemoteProtocolError fn(*args) raises, or None."""
    try:
        fn(*args)
    except p.RemoteProtocolError as exc:
        return exc.reason
    return None


def frame_from_fields(type_name, fields):
    """Rebuild a frame object from a vector's fields (the inverse of Frame.fields())."""
    loc = fields.get("location")
    location = None if loc is None else (loc["lat_e7"], loc["lon_e7"], loc["accuracy_m"])
    if loc is not None and "fix_age" in loc:
        location += (loc["fix_age"],)
    heard = {}
    for name in ("beacons", "wifi"):
        if name in fields:
            heard[name] = (fields[name]["age"], tuple(
                (unhex(e["id"]), e["rssi"]) for e in fields[name]["heard"]))
    d, c = fields["device_id"], fields["counter"]
    if type_name == "alarm":
        return p.Alarm(d, c, fields["kind"], ref=fields["ref"], location=location,
                       age=fields.get("age"), battery=fields.get("battery"), **heard)
    if type_name == "checkin":
        return p.CheckIn(d, c, battery=fields["battery"], flags=fields["flags"],
                         interval=fields["interval"], location=location, **heard)
    if type_name == "ack":
        return p.Ack(d, c, fields["ref"], fields["stage"])
    if type_name == "receipt":
        return p.Receipt(d, c, fields["downlink"])
    return p.Action(d, c, fields["ref"], fields["action"])


def unhex(text):
    return bytes(int(text[i:i + 2], 16) for i in range(0, len(text), 2))
