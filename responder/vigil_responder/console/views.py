# What the pages show of an incident, from the stored webhook snapshot and the console's own
# steps: the procedure's state, the prompt and the wearer's tap, the police script.
import calendar
import time

from . import procedures


def epoch(iso):
    """Unix seconds from the webhook's "YYYY-MM-DDTHH:MM:SS.mmmZ", or None."""
    if not iso:
        return None
    try:
        base, _, frac = iso.rstrip("Z").partition(".")
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float(
            "0." + frac if frac else 0)
    except ValueError:
        return None


def clock(t):
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


_SOURCES = {"ble": "by beacon", "wifi": "by Wi-Fi (a hint)", "gnss": "by GNSS"}


def location_text(loc):
    """The webhook's location in words: the place (from the gateway's beacon table) and/or the
    coordinates with their accuracy, how it was found, when, and STALE when it was over 60 s
    old on sending; the GNSS fix beside a place found otherwise."""
    if not loc:
        return "unknown"
    where = []
    if loc.get("place"):
        where.append(", ".join([loc["place"]] + [
            "%s %s" % (label, loc[key]) for key, label in (("floor", "floor"), ("room", "room"))
            if loc.get(key)]))
    if loc.get("lat") is not None and loc.get("lon") is not None:
        where.append(_coordinates(loc))
    if not where:
        return "unknown"
    text = " · ".join(where)
    if loc.get("source") in _SOURCES:
        text += ", " + _SOURCES[loc["source"]]
    if loc.get("at"):
        text += ", at %s" % clock(epoch(loc["at"]))
    if loc.get("stale"):
        text += " (STALE: over 60 s old)"
    fix = loc.get("fix")
    if loc.get("source") != "gnss" and isinstance(fix, dict) and fix.get("lat") is not None:
        text += "; GNSS fix %s%s%s" % (_coordinates(fix), ", at %s" % clock(epoch(fix["at"]))
                                        if fix.get("at") else "",
                                        " (STALE)" if fix.get("stale") else "")
    return text


def _coordinates(loc):
    text = "%.5f, %.5f" % (loc["lat"], loc["lon"])
    if loc.get("accuracy_m") is not None:
        text += " (within %d m)" % loc["accuracy_m"]
    return text


def contacts_text(contacts):
    return "; ".join("%s%s, %s" % (c.get("name", "?"),
                                   " (%s)" % c["relation"] if c.get("relation") else "",
                                   c.get("phone", "?")) for c in contacts) or "none on file"


def incident_view(row, steps=(), events=()):
    snap = row["snapshot"]
    inc = snap.get("incident", {})
    wearer = snap.get("wearer") or {}
    raised_at = epoch(inc.get("raised_at")) or epoch(inc.get("opened_at")) or row[
        "first_seen_at"]
    late = inc.get("late")
    done = {s["step"]: s for s in steps if s["outcome"] == "done"}
    checklist = []
    for step in procedures.checklist(row["kind"]):
        checklist.append(dict(name=step.name, label=step.label, done=done.get(step.name),
                              ready=all(n in done for n in step.needs)
                              and step.name not in done))
    taps = [epoch(a.get("at")) for a in snap.get("audit") or []
            if a.get("event") == "wearer_confirms"]
    prompts = [epoch(a.get("at")) for a in snap.get("audit") or []
               if a.get("event") == "prompt_double_tap"]
    played = [epoch(a.get("at")) for a in snap.get("audit") or []
              if a.get("event") == "prompt_played"]  # the wearable's receipt for it
    view = dict(
        id=row["id"], kind=row["kind"], lane=procedures.lane(row["kind"]), state=row["state"],
        device=row["device"], holder=row["holder"], resolved_at=row["resolved_at"],
        resolution=row["resolution"],
        wearer=wearer.get("name") or "unknown wearer (device %s)" % row["device"],
        notes=wearer.get("notes"), contacts=wearer.get("contacts") or [],
        contacts_text=contacts_text(wearer.get("contacts") or []),
        location=location_text(snap.get("location")),
        location_at=epoch((snap.get("location") or {}).get("at")), raised_at=raised_at,
        raised_text=clock(raised_at), first_seen_at=row["first_seen_at"],
        late=late, late_text=_late_text(late),
        checklist=checklist, steps=list(steps), audit=snap.get("audit") or [],
        instruction=(snap.get("procedure") or {}).get("instruction", ""),
        prompt_sent=done.get("prompt_double_tap"),
        prompt_in_gateway=clock(prompts[0]) if prompts else None,
        prompt_played=clock(played[0]) if played else None,
        tapped=clock(taps[-1]) if taps else None, open=row["resolved_at"] is None
        and row["state"] != "closed")
    if view["lane"] == procedures.DURESS:
        view["police_script"] = police_script(view, row["device"])
    return view


def _late_text(late):
    if not late:
        return None
    text = "LATE ALARM: raised at least %d s before it reached the gateway" % round(
        late.get("late_by_s") or 0)
    if late.get("possibly_held_s"):
        text += " (possibly held up to %d s more)" % round(late["possibly_held_s"])
    return text


def police_script(view, device):
    lines = [
        "I am calling about a duress alarm raised by a lone worker. They may be in danger "
        "and we have not contacted them, so as not to put them at greater risk.",
        "Wearer: %s (device %s)." % (view["wearer"], device),
        "Alarm raised at %s%s." % (view["raised_text"], " at the latest; it reached us late"
                                   if view["late"] else ""),
        "Last known location: %s." % view["location"],
    ]
    if view["notes"]:
        lines.append("Notes: %s." % view["notes"])
    lines.append("Escalation contacts: %s." % view["contacts_text"])
    return lines
