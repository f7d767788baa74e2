# Structured logs: one JSON object per line on stderr, {"ts", "level", "logger", "event", ...}.
#
# Rules: log device ids (8 hex digits), counters, reasons and topics; never a key, a password or
# a DeviceKey's bytes (DeviceKey hides them in repr anyway). Callers pass fields, not prose.
import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                 "logger": record.name, "event": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = "%s: %s" % (record.exc_info[0].__name__, record.exc_info[1])
        return json.dumps(entry, default=str)


def setup(level="info", stream=None):
    """Send the gateway's logs, as JSON lines, to `stream` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("vigil_gateway")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False
    logging.Formatter.converter = time.gmtime
    return root


def event(logger, level, name, **fields):
    """Log `name` with structured fields, if the level is enabled (cheap when it is not)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
