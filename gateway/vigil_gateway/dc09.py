"""SIA DC-09 messages to an alarm receiving centre (ARC), without I/O.

Rules (ANSI/SIA DC-09):
  line     = LF | CRC (4 upper hex, CRC-16/ARC over the message) | length (4 upper hex) |
             message | CR
  message  = '"' [*] id '"' seq (4 digits) [R rcvr] L pref '#' acct '[' data ']' [xdata] ts
  id       = SIA-DCS (data: '#acct|N' ['ri' area '/'] code zone) or
             ADM-CID (data: '#acct|' qualifier event ' ' partition ' ' zone) or NULL
  xdata    = '[X' longitude ']' '[Y' latitude ']' as degrees, hemisphere letter, minutes
             ('[X000W07.656][Y51N30.047]'), '[H' time of occurrence ']' (a late event),
             '[I' text ']'; ADM-CID: one block at most (receivers refuse more)
  ts       = '_HH:MM:SS,MM-DD-YYYY' in UTC, the sender's clock corrected by the last NAK
  encrypted (account has a key): '*' before id; everything after the first '[' becomes the
             upper-hex AES-CBC (zero IV) of pad '|' data ']' xdata ts, pad making it a multiple
             of 16 bytes. The key (AES-128/192/256) comes from the key file as
             32/48/64 hex digits, or as 16/24/32 characters used as their ASCII bytes (what
             pysiaalarm does with its key string): parse_key.
  replies  = '"ACK"' echoing the sequence, receiver, line and account (ack_problem says why
             one does not pair); to an encrypted message only '"*ACK"' whose body decrypts
             with the account's key counts;
             '"NAK"' carrying the receiver's time (sequence 0000, fields in any order);
             '"DUH"': the receiver does not understand the event; a bare '"NAK"': unknown
             account; nothing framed (e.g. LF CR): the line was corrupt.
"""
import datetime
import os
import re
import string

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import GatewayError

ZERO_IV = bytes(16)
_PAD_ALPHABET = (string.ascii_uppercase + string.digits).encode()
_TIME_FORMAT = "_%H:%M:%S,%m-%d-%Y"


class Dc09Error(GatewayError):
    """A DC-09 message cannot be built or a reply cannot be read."""


def crc16(data):
    """CRC-16/ARC (poly 0xA001 reflected, init 0), as DC-09 uses."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame_line(message):
    body = message.encode("ascii")
    return b"\n%04X%04X%s\r" % (crc16(body), len(body), body)


def timestamp(when):
    return when.astimezone(datetime.timezone.utc).strftime(_TIME_FORMAT)


KEY_FORMS = ("the AES key as 32, 48 or 64 hex digits (128/192/256-bit, as ARCs issue them), "
             "or as 16, 24 or 32 characters used as their ASCII bytes; 'hex:' or 'text:' before "
             "it says which")


def parse_key(text):
    """The AES key of a key file's first line, as bytes. DC-09 keys are 128/192/256-bit binary,
    written as 32/48/64 hex digits; receivers such as pysiaalarm take a 16/24/32-character
    string as its ASCII bytes instead, which is still accepted. 32 hex digits could be either
    (a 128-bit key in hex, a 256-bit key as text): refused unless 'hex:' or 'text:' says.
    No error repeats the key."""
    text = text.strip()
    form = None
    for prefix in ("hex:", "text:"):
        if text.lower().startswith(prefix):
            form, text = prefix[:-1], text[len(prefix):]
    is_hex = bool(re.fullmatch(r"[0-9A-Fa-f]+", text))
    if form is None and len(text) == 32 and is_hex:
        raise Dc09Error("the key is 32 hex digits, which could be a 128-bit key in hex or a "
                        "256-bit key as 32 characters: write 'hex:' or 'text:' before it")
    if form == "hex" or (form is None and is_hex and len(text) in (48, 64)):
        if not is_hex or len(text) not in (32, 48, 64):
            raise Dc09Error("a hex key is 32, 48 or 64 hex digits (got %d characters)"
                            % len(text))
        return bytes.fromhex(text)
    if len(text) in (16, 24, 32) and all(" " < c <= "~" for c in text):
        return text.encode("ascii")
    raise Dc09Error("the key must be %s (got %d characters)" % (KEY_FORMS, len(text)))


class Account:
    """One account at the receiver: number (3-16 hex digits), optional AES key (bytes: the key
    itself; a str: its ASCII bytes), line prefix and receiver number (hex)."""

    def __init__(self, number, key=None, line="0", receiver=None):
        if not re.fullmatch(r"[0-9A-Fa-f]{3,16}", number or ""):
            raise Dc09Error("account must be 3 to 16 hex digits")
        if key is not None and len(key) not in (16, 24, 32):
            raise Dc09Error("the account key must be 16, 24 or 32 characters (AES-128/192/256)")
        if isinstance(key, str):
            key = key.encode("ascii")
        for name, value in (("line", line), ("receiver", receiver)):
            if value is not None and not re.fullmatch(r"[0-9A-Fa-f]{1,6}", value):
                raise Dc09Error("%s must be 1 to 6 hex digits" % name)
        self.number = number.upper()
        self.key = bytes(key) if key else None
        self.line = line.upper()
        self.receiver = receiver.upper() if receiver else None

    def __repr__(self):
        return "<DC-09 account %s%s>" % (self.number, " (encrypted)" if self.key else "")

    def _prefix(self):
        return ("R%s" % self.receiver if self.receiver else "") + "L%s" % self.line


# Contact ID event qualifiers (DC-05): a new event, a restore, a status report ("previously
# reported condition still present").
NEW, RESTORE, STATUS = 1, 3, 6


class Event:
    """What to report: a SIA code and zone for SIA-DCS, or a Contact ID event for ADM-CID."""

    def __init__(self, sia_code, cid_event, zone, restore=False, area=1, location=None,
                 text=None, qualifier=None, occurred=None):
        self.sia_code = sia_code      # two letters, e.g. "PA"
        self.cid_event = cid_event    # three digits, e.g. 120
        self.zone = zone              # 1-999: the wearer's zone at the ARC
        self.qualifier = qualifier if qualifier is not None else (RESTORE if restore else NEW)
        self.area = area              # SIA area / Contact ID partition
        self.location = location      # (latitude, longitude) in degrees, or None
        self.text = text              # short ASCII text (I extended data), or None
        self.occurred = occurred      # when it happened (H extended data) if sent late, or None


def degrees_minutes(value, width, hemispheres):
    """DC-09's location form: whole degrees (`width` digits), the hemisphere letter, minutes
    to a thousandth (about 2 m): -0.1276 longitude is 000W07.656."""
    hemisphere = hemispheres[0] if value >= 0 else hemispheres[1]
    thousandths = round(abs(value) * 60000)  # in thousandths of a minute, rounded once
    degrees, rest = divmod(thousandths, 60000)
    return "%0*d%s%02d.%03d" % (width, degrees, hemisphere, rest // 1000, rest % 1000)


def _xdata(event, fmt="SIA-DCS"):
    out = ""
    if event.location is not None:
        lat, lon = event.location
        out += "[X%s][Y%s]" % (degrees_minutes(lon, 3, "EW"), degrees_minutes(lat, 2, "NS"))
    text = event.text
    if event.occurred is not None:
        out += "[H%s]" % timestamp(event.occurred)[1:]
        if fmt == "ADM-CID":
            text = None  # one block at most after a Contact ID event: the time matters more
    if text:
        # ASCII letters, digits and a little punctuation: a name such as "Zoë" loses its ë
        clean = "".join(c for c in text if c.isascii() and (c.isalnum() or c in " -_.:,"))[:60]
        out += "[I%s]" % clean
    return out


def _data(account, event, fmt):
    if fmt == "SIA-DCS":
        if not re.fullmatch(r"[A-Z]{2}", event.sia_code or ""):
            raise Dc09Error("a SIA code is two capital letters")
        return "#%s|Nri%d/%s%03d" % (account.number, event.area, event.sia_code, event.zone)
    if fmt == "ADM-CID":
        if not (100 <= int(event.cid_event) <= 999):
            raise Dc09Error("a Contact ID event is three digits")
        if event.qualifier not in (NEW, RESTORE, STATUS):
            raise Dc09Error("a Contact ID qualifier is 1, 3 or 6")
        return "#%s|%d%03d %02d %03d" % (account.number, event.qualifier,
                                         int(event.cid_event), event.area, event.zone)
    raise Dc09Error("format must be SIA-DCS or ADM-CID")


def _encrypt(key, text, pad_source=os.urandom):
    plain = text.encode("ascii")
    pad_len = 16 - (len(plain) + 1) % 16 or 16
    pad = bytes(_PAD_ALPHABET[b % len(_PAD_ALPHABET)] for b in pad_source(pad_len))
    encryptor = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV)).encryptor()
    return (encryptor.update(pad + b"|" + plain) + encryptor.finalize()).hex().upper()


def _decrypt(key, hex_text):
    try:
        data = bytes.fromhex(hex_text)
    except ValueError:
        raise Dc09Error("encrypted reply is not hexadecimal") from None
    if not data or len(data) % 16:
        raise Dc09Error("encrypted reply is not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(ZERO_IV)).decryptor()
    return (decryptor.update(data) + decryptor.finalize()).decode("ascii", "replace")


def encode_event(account, sequence, event, when, fmt="SIA-DCS", pad_source=os.urandom):
    """One framed line reporting `event`, timestamped `when` (already clock-corrected)."""
    body = _data(account, event, fmt) + "]" + _xdata(event, fmt) + timestamp(when)
    return _message(account, sequence, fmt, body, pad_source)


def encode_null(account, sequence, when, pad_source=os.urandom):
    """The link test: a NULL message the receiver acknowledges like an event."""
    return _message(account, sequence, "NULL", "]" + timestamp(when), pad_source)


def _message(account, sequence, ident, body, pad_source):
    if not 1 <= sequence <= 9999:
        raise Dc09Error("sequence numbers run from 0001 to 9999")
    head = '"%s%s"%04d%s#%s[' % ("*" if account.key else "", ident, sequence,
                                 account._prefix(), account.number)
    if account.key:
        return frame_line(head + _encrypt(account.key, body, pad_source))
    return frame_line(head + body)


class Reply:
    """What the receiver answered. kind: ACK, NAK, DUH, RSP, or NONE (nothing framed).
    `readable` is False for an encrypted reply that does not decrypt with the account's key."""

    def __init__(self, kind, sequence=None, receiver_time=None, raw=b"", encrypted=False,
                 receiver=None, line=None, account=None, readable=True):
        self.kind = kind
        self.sequence = sequence
        self.receiver_time = receiver_time
        self.raw = raw
        self.encrypted = encrypted
        self.receiver = receiver
        self.line = line
        self.account = account
        self.readable = readable

    def __repr__(self):
        return "<DC-09 reply %s%s seq %s>" % ("*" if self.encrypted else "", self.kind,
                                             self.sequence)


_HEAD = re.compile(r'^"(\*?)(ACK|NAK|DUH|RSP)"(\d{4})?')
# The header fields after the sequence, in any order: pysiaalarm writes its NAK with L before
# R and a missing receiver number as "None" (no R). A field's hex run ends where the next field (or
# the data's '[') starts: 'L0A0[' is line 0 and the NAK's account placeholder A0.
_NEXT = r'(?=R|L|#|None|A[0-9A-F]*\[|\[)'
_FIELD = re.compile(r'(?:R([0-9A-F]{1,6}?)|(None))%s|L([0-9A-F]{1,6}?)%s|#([0-9A-F]{3,16})(?=\[)|'
                    r'A([0-9A-F]*)(?=\[)' % (_NEXT, _NEXT))
_BARE = re.compile(r'^"(ACK|NAK|DUH)"$')
_TIME = re.compile(r"_(\d{2}:\d{2}:\d{2},\d{2}-\d{2}-\d{4})")
# A decrypted reply body: the pad (any bytes but '[', ']' and '|': siadc09 pads with binary,
# pysiaalarm with '0's and no '|'), then printable ASCII up to a timestamp at the end.
_CLEAR = re.compile(r'^[^\[\]|]*\|?[\x20-\x7e]*\][\x20-\x7e]*_\d{2}:\d{2}:\d{2},\d{2}-\d{2}-\d{4}$',
                    re.S)


def reply_complete(data):
    """True once `data` holds a whole reply: a framed line ends with CR; some receivers answer
    an unknown account with a bare '"NAK"' and nothing more."""
    return data.endswith(b"\r") or bool(_BARE.match(data.decode("ascii", "replace").strip()))


def parse_reply(data, account):
    """Read one reply line (with or without its LF/CR framing)."""
    text = data.decode("ascii", "replace").strip("\n\r")
    if not text:
        return Reply("NONE", raw=data)
    if _BARE.match(text):
        return Reply(_BARE.match(text).group(1), raw=data)
    if len(text) < 8:
        raise Dc09Error("reply too short")
    crc, length, message = text[:4], text[4:8], text[8:]
    try:
        if int(crc, 16) != crc16(message.encode("ascii", "replace")):
            raise Dc09Error("reply CRC does not match")
        if int(length, 16) != len(message):
            raise Dc09Error("reply length does not match")
    except ValueError:
        raise Dc09Error("reply header is not hexadecimal") from None
    if _BARE.match(message):
        return Reply(_BARE.match(message).group(1), raw=data)
    head = _HEAD.match(message)
    if not head:
        raise Dc09Error("reply is not a DC-09 response")
    encrypted, kind, seq = head.groups()
    fields = {}
    pos = head.end()
    while pos < len(message) and message[pos] != "[":
        found = _FIELD.match(message, pos)
        if not found:
            raise Dc09Error("reply header field at %r is not R, L, # or A" % message[pos:pos + 8])
        for name, value in zip("RRL#A", found.groups()):
            if value is not None:
                if name in fields and name != "R":
                    raise Dc09Error("reply header has two %s fields" % name)
                fields[name] = value
        pos = found.end()
    if pos >= len(message):
        raise Dc09Error("reply has no data block")
    rest = message[pos + 1:]
    readable = True
    if encrypted:
        if not account.key:
            raise Dc09Error("encrypted reply for an account without a key")
        try:
            rest = _decrypt(account.key, rest)
        except Dc09Error:
            readable = False
        else:
            readable = bool(_CLEAR.match(rest))
    when = None
    found = _TIME.search(rest) if readable else None
    if found:
        try:
            when = datetime.datetime.strptime(found.group(1), "%H:%M:%S,%m-%d-%Y").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError:
            raise Dc09Error("reply timestamp is not a date") from None
    receiver = fields.get("R")
    return Reply(kind, int(seq) if seq else None, when, raw=data, encrypted=bool(encrypted),
                 receiver=None if receiver == "None" else receiver, line=fields.get("L"),
                 account=fields.get("#"), readable=readable)


def ack_problem(reply, account, sequence):
    """Why `reply` (an ACK) does not acknowledge the message `sequence` sent for `account`, as
    (reason, text), or None when it does. An ACK pairs with its message by echoing the sequence
    number, receiver, line and account; an encrypted message needs an encrypted ACK that
    decrypts with the account's key. A receiver number is checked when we sent one (receivers
    may fill in their own when we did not)."""
    if account.key and not reply.encrypted:
        return "plain_ack", "plain ACK to an encrypted message"
    if reply.encrypted and not reply.readable:
        return "ack_undecryptable", "encrypted ACK does not decrypt with the account's key"
    if reply.sequence != sequence:
        return "ack_sequence", "ACK for sequence %s, not %04d" % (
            "none" if reply.sequence is None else "%04d" % reply.sequence, sequence)
    if reply.account != account.number:
        return "ack_account", "ACK for account %s, not %s" % (reply.account or "none",
                                                              account.number)
    if reply.line != account.line:
        return "ack_line", "ACK for line %s, not %s" % (reply.line or "none", account.line)
    if account.receiver and reply.receiver != account.receiver:
        return "ack_receiver", "ACK from receiver %s, not %s" % (reply.receiver or "none",
                                                                 account.receiver)
    return None
