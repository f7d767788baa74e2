# The one timestamp format the gateway writes for people and backends: RFC 3339 in UTC with
# "Z", microseconds always given ("2026-12-01T15:48:27.123456Z"): the log lines' "ts" and the
# actions API's times from /v2/ on.
#
# Rules: format() takes unix seconds (a float, as time.time() gives); parse() takes what a
# backend sends, RFC 3339 in UTC only ("Z"; an offset, even +00:00, is refused so that one
# form is in use), seconds with or without a fraction, and returns unix seconds; anything else
# is a ValueError whose message names the form wanted.
import calendar
import re
import time

_FORM = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                   r"(\.[0-9]{1,9})?[Zz]$")
EXAMPLE = "2026-12-01T15:48:27Z"


def format(ts):  # noqa: A001 (the module's own name space: rfc3339.format)
    seconds = int(ts // 1)
    micros = int(round((ts - seconds) * 1e6))
    if micros == 1000000:
        seconds, micros = seconds + 1, 0
    return "%s.%06dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)), micros)


def parse(text):
    match = _FORM.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("an RFC 3339 time in UTC, like %s or %s" % (EXAMPLE,
                                                                     "2026-12-01T15:48:27.250Z"))
    digits = match.groups()[:6]
    try:
        if int(digits[5]) > 60:  # 60: a leap second, which RFC 3339 allows
            raise ValueError
        fields = time.strptime("-".join(digits), "%Y-%m-%d-%H-%M-%S")
    except ValueError:
        raise ValueError("not a real date and time (%s)" % text[:40]) from None
    return calendar.timegm(fields) + (float(match.group(7)) if match.group(7) else 0.0)
