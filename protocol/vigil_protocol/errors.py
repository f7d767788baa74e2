# One root exception for the protocol, split by whose fault it was (as h11 does).
#
# RemoteProtocolError: the bytes that came in are bad (the peer's fault, or an attacker's);
#   the receiver counts the rejection under `reason` and carries on.
# LocalProtocolError: the caller asked for something the protocol cannot do (a bug here).
#
# Every rejection reason has its own class and a short, stable `reason` code: the code is what
# gateways count in metrics and what protocol/vectors.json names in its "error" field.
#
# The other modules look these classes up when they raise one (`protocol.BadMac(...)`), never
# at import: on MicroPython the package then loads this module on first use, so a wearable
# that has rejected nothing keeps these 14 classes (~4 KB) out of its heap.


class ProtocolError(Exception):
    reason = "protocol_error"


class LocalProtocolError(ProtocolError):
    reason = "local_error"


class RemoteProtocolError(ProtocolError):
    reason = "remote_error"


class Oversized(RemoteProtocolError):
    reason = "oversized"


class Truncated(RemoteProtocolError):
    reason = "truncated"


class UnsupportedVersion(RemoteProtocolError):
    reason = "unsupported_version"


class UnknownType(RemoteProtocolError):
    reason = "unknown_type"


class WrongDirection(RemoteProtocolError):
    reason = "wrong_direction"


class BadMac(RemoteProtocolError):
    reason = "bad_mac"


class UnknownKind(RemoteProtocolError):
    reason = "unknown_kind"


class BadField(RemoteProtocolError):
    reason = "bad_field"


class BadExtension(RemoteProtocolError):
    reason = "bad_extension"


class StaleCounter(RemoteProtocolError):
    reason = "stale_counter"


class CounterReuse(RemoteProtocolError):
    reason = "counter_reuse"


# Every reason a receiver can reject a frame for, in the order the decoder checks them.
REJECTIONS = (
    Oversized,
    Truncated,
    UnsupportedVersion,
    UnknownType,
    WrongDirection,
    BadMac,
    UnknownKind,
    BadField,
    BadExtension,
    StaleCounter,
    CounterReuse,
)
