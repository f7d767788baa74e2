# Vigil protocol v1 and v2: the frame codec shared by the wearable (MicroPython) and the
# gateway. Sans-I/O; runs unchanged on CPython >= 3.11 and MicroPython >= 1.27. See
# protocol/SPEC.md. decode() reads both versions; encode() writes PROTOCOL_VERSION (1) unless
# asked for another (version=2).
#
# On CPython every public name is imported here, as usual. On MicroPython (the wearable, with
# a 64 KB heap) each re-exported name would be one more heap entry in this package, so the
# device imports from the submodules, and `vigil_protocol.NAME` loads the submodule that
# defines NAME on first use (a module __getattr__, PEP 562).
import sys as _sys

from . import _compat

PROTOCOL_VERSION = 1

if _compat.TYPE_CHECKING or _sys.implementation.name != "micropython":
    from .beacon_id import short_id  # noqa: F401
    from .ble_id import BleKey  # noqa: F401
    from .counters import CounterReservation  # noqa: F401
    from .errors import (  # noqa: F401
        REJECTIONS,
        BadExtension,
        BadField,
        BadMac,
        CounterReuse,
        LocalProtocolError,
        Oversized,
        ProtocolError,
        RemoteProtocolError,
        StaleCounter,
        Truncated,
        UnknownKind,
        UnknownType,
        UnsupportedVersion,
        WrongDirection,
    )
    from .frames import (  # noqa: F401
        ACKNOWLEDGED,
        ACTIONS,
        BATTERY_UNKNOWN,
        DELIVERED,
        DOUBLE_TAP,
        DURESS,
        FALL,
        FLAG_ALARM_OPEN,
        FLAG_CHARGING,
        FLAG_FAULT,
        FLAG_LOW_BATTERY,
        FLAG_OUTBOX_PENDING,
        HELP_DISPATCHED,
        KINDS,
        LOW_BATTERY,
        MAX_FRAME,
        NO_MOTION,
        PROMPT_DOUBLE_TAP,
        RECEIVED,
        RESOLVED,
        SOS,
        STAGES,
        TYPE_NAMES,
        Ack,
        Action,
        Alarm,
        CheckIn,
        Receipt,
        decode,
        encode,
        peek,
    )
    from .mac import DOWN, KEY_LEN, TAG_LEN, UP, DeviceKey  # noqa: F401
    from .window import DOWNLINK_WINDOW, NEW, RETRANSMISSION, ReplayWindow  # noqa: F401
else:

    def __getattr__(name):
        for sub in ("frames", "errors", "mac", "window", "counters", "ble_id",
                    "beacon_id"):
            module = __import__("vigil_protocol." + sub, None, None, (sub,))
            if name == sub:
                return module
            if name in module.__dict__:
                return module.__dict__[name]
        raise AttributeError(name)
