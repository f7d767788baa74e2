# Structured logs: one JSON object per line on stderr, {"ts", "level", "logger", "event", ...};
# "ts" is RFC 3339 in UTC (rfc3339.py: "2026-12-01T15:48:27.123456Z"), as in the actions API.
#
# Rules: log device ids (8 hex digits), counters, reasons and topics; never a key, a password or
# a DeviceKey's bytes (DeviceKey hides them in repr anyway). Callers pass fields, not prose.
# Inside `with logs.batch():` (the ingest loop, around one batch) lines below WARNING are held
# and written together when the batch ends; a warning or an error is written at once, with
# everything held before it. Outside a batch every line is written at once.
import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii as _quote

from . import rfc3339

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_NAMES = {number: name for name, number in LEVELS.items()}


def _line(created, level_name, logger_name, event_name, fields):
    # Written by hand rather than by json.dumps (which builds an encoder per call): this runs
    # once per alarm. Strings and ints, what the hot lines carry, are encoded here; anything
    # else goes through json.dumps.
    parts = ['{"ts": "%s", "level": %s, "logger": %s, "event": %s'
             % (rfc3339.format(created), _quote(level_name), _quote(logger_name),
                _quote(event_name))]
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            value = _quote(value)
        elif kind is int:
            value = str(value)
        elif value is None:
            value = "null"
        else:
            value = json.dumps(value, default=str)
        parts.append(", %s: %s" % (_quote(key), value))
    parts.append("}")
    return "".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record):
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["error"] = "%s: %s" % (record.exc_info[0].__name__, record.exc_info[1])
        return _line(record.created, record.levelname.lower(), record.name,
                     record.getMessage(), fields)


class BatchingHandler(logging.Handler):
    """Holds formatted lines while `holding`, until flush(), a WARNING or a full buffer."""

    MAX_PENDING = 512

    def __init__(self, stream):
        logging.Handler.__init__(self)
        self.stream = stream
        self.pending = []
        self.holding = False

    def emit(self, record):
        try:
            self.hold_line(self.format(record), record.levelno)
        except Exception:
            self.handleError(record)

    def hold_line(self, line, levelno):
        self.pending.append(line)
        if not self.holding or levelno >= logging.WARNING or len(self.pending) >= self.MAX_PENDING:
            self.flush()

    def flush(self):
        with self.lock:
            if self.pending:
                lines, self.pending = self.pending, []
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()


_held_by = []  # the BatchingHandler inside a batch, if any (the fast path in event())


class batch:
    """`with logs.batch():` hold info lines until the block ends."""

    def __enter__(self):
        self.handlers = [h for h in logging.getLogger("vigil_gateway").handlers
                         if isinstance(h, BatchingHandler)]
        for handler in self.handlers:
            handler.holding = True
        _held_by[:] = self.handlers[:1] if len(self.handlers) == 1 else []

    def __exit__(self, *exc):
        _held_by.clear()
        for handler in self.handlers:
            handler.holding = False
            handler.flush()
        return False


def setup(level="info", stream=None):
    """Send the gateway's logs, as JSON lines, to `stream` (stderr by default)."""
    # Fields we never log, skipped as the logging HOWTO's "Optimization" section suggests: one
    # line per alarm must stay cheap.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("vigil_gateway")
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    root.propagate = False
    logging.Formatter.converter = time.gmtime
    return root


def event(logger, level, name, **fields):
    """Log `name` with structured fields, if the level is enabled (cheap when it is not).
    Inside a batch an info line goes straight to the held lines: the same JSON, without a
    LogRecord (one line per alarm must stay cheap)."""
    if not logger.isEnabledFor(level):
        return
    if _held_by and level < logging.WARNING:
        _held_by[0].hold_line(_line(time.time(), _NAMES[level], logger.name, name, fields),
                              level)
    else:
        logger.log(level, name, extra={"fields": fields})
