# Vigil protocol v1: the frame codec shared by the wearable (MicroPython) and the gateway.
# Sans-I/O; runs unchanged on CPython >= 3.11 and MicroPython >= 1.27. See protocol/SPEC.md.
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
    decode,
    encode,
    peek,
)
from .mac import DOWN, KEY_LEN, TAG_LEN, UP, DeviceKey  # noqa: F401
from .window import NEW, RETRANSMISSION, ReplayWindow  # noqa: F401

PROTOCOL_VERSION = 1
