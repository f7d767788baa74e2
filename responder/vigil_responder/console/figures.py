# Alarm-handling times, as a manager reports them (BS 8484 asks for them): per incident, from
# the moment the alarm was raised (incident.raised_at, earlier than its arrival when it came
# late) to the console having it, to the first responder step, to its resolution; and a
# month's summary per kind (count, median, 90th percentile, worst). The median is the middle
# time (the mean of the two middle ones for an even count); the 90th percentile is by nearest
# rank, a time some incident took, within which at least 90 % of them were handled.
import math
import statistics
import time

INTERVALS = (("to_console", "raised → on the console"), ("to_first_step", "raised → first step"),
             ("to_resolved", "raised → resolved"))


def incident_times(view):
    """{interval: seconds or None} for one incident view (views.incident_view)."""
    raised = view["raised_at"]
    steps = [s["at"] for s in view["steps"] if s["outcome"] == "done"]
    return {"to_console": _since(raised, view["first_seen_at"]),
            "to_first_step": _since(raised, min(steps) if steps else None),
            "to_resolved": _since(raised, view["resolved_at"])}


def _since(start, end):
    return None if start is None or end is None else max(0.0, end - start)


def month_of(t):
    return time.strftime("%Y-%m", time.gmtime(t))


def summary(views, month):
    """Rows per kind (and 'all') for the incidents raised in `month` ("YYYY-MM")."""
    chosen = [v for v in views if month_of(v["raised_at"]) == month]
    groups = {}
    for v in chosen:
        for key in (v["kind"], "all"):
            groups.setdefault(key, []).append(incident_times(v))
    rows = []
    for kind in sorted(groups, key=lambda k: (k == "all", k)):
        times = groups[kind]
        row = {"kind": kind, "count": len(times)}
        for name, _ in INTERVALS:
            row[name] = _stats([t[name] for t in times if t[name] is not None])
        rows.append(row)
    return rows


def _stats(values):
    if not values:
        return None
    values = sorted(values)
    return {"median": statistics.median(values), "p90": _nearest_rank(values, 0.9),
            "max": values[-1], "n": len(values)}


def _nearest_rank(values, q):
    """The smallest of the sorted values with at least q of them at or below it."""
    return values[max(0, math.ceil(round(q * len(values), 9)) - 1)]


def duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 120:
        return "%.1f s" % seconds
    if seconds < 7200:
        return "%.1f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)
