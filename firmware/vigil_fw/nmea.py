# NMEA 0183 from a UART GNSS module: GGA and RMC sentences into the wearable's latest fix
# (latitude, longitude in 1e-7 degrees, an accuracy estimate, and when it was taken), for the
# location extension 0x04 (protocol/SPEC.md section 4). Bytes are fed as the UART gives them;
# sentences are parsed in place in one preallocated buffer (no split(), no floats, no strings).
#
# Rules:
#   a sentence is "$" ... "*" two hex digits, then CR or LF; at most 82 bytes (_MAX) from
#     "$" (NMEA's 82 with CR LF); the checksum (XOR of the bytes between "$" and "*") must match
#   any talker (GP, GN, GL, GA, GB, BD...); only GGA and RMC are read, others are counted
#   GGA gives a fix when its quality is 1..5 (GPS, DGPS, PPS, RTK, float RTK) and its HDOP;
#     RMC when its status is A and its mode (NMEA 2.3+) is not N; both need lat and lon
#   accuracy (m) = HDOP x UERE_M of the fix quality, rounded up, at least 1 (the usual
#     horizontal estimate); an RMC fix takes the HDOP of the GGA of the same epoch, or
#     NO_HDOP_M when there was none
#   the fix is renewed only by a sentence whose UTC time differs from the fix's: a receiver
#     that repeats an old fix does not make it look new; age(now) counts from the first
#     sentence of the fix's epoch, in whole seconds rounded up
#   a fault (checksum, field, overflow) drops that sentence alone and counts it; the last good
#     fix stays, growing older (SPEC: a stale fix is sent as stale, never as current)
# On a 32-bit port a longitude past +/-107.37 degrees is a big int (2**30 * 1e-7): a few bytes
# per fix, never per byte.
#
# Why not micropyGPS (github inmcm/micropyGPS, MIT), the best known MicroPython NMEA parser:
# it is not on PyPI or micropython-lib (only a git clone or a copied file), it builds each
# sentence as a string a character at a time and splits it (allocations per byte and per
# field), keeps positions as floats, parses a dozen sentence types we do not use (code and
# heap on a 45 KB budget) and gives no accuracy estimate; pynmea2 (PyPI) needs CPython's re
# and datetime. GGA and RMC alone are small enough to own, with tests
# (tests/firmware/test_nmea.py).
#
# Heap (a 45 KB budget, firmware/README.md Budgets): the parser's numbers live in one array and
# the comma offsets at the end of the sentence buffer, not in ~20 attributes (an instance's
# attribute table is a hash map of 8 bytes a slot; fix_ms alone stays one); the UART task is a
# plain coroutine here, read_uart(), not an object of its own.
from array import array

from vigil_protocol._compat import const

from .clock import ticks_diff, ticks_ms

_GGA = const(1)
_RMC = const(2)
_MAX_FIELDS = const(15)  # GGA has 14 after the type
_MAX = const(82)  # a sentence's bytes at most; the buffer holds its comma offsets after
_READ = const(64)  # bytes read_uart() takes from the UART at a time
# Nmea._v: the parser's numbers, by index
_N = const(0)  # bytes in the buffer; -1 between sentences (waiting for "$")
_COUNT = const(1)  # commas in the current sentence
_STAR = const(2)  # offset of its "*"
_END = const(3)  # where the field _field() found ends
_HAVE = const(4)  # 1 once there is a fix
_LAT = const(5)  # the latest fix (1e-7 degrees, metres)
_LON = const(6)
_ACC = const(7)
_QUALITY = const(8)  # GGA fix quality of the latest fix (0: from RMC alone)
_FIX_TIME = const(9)  # its UTC time of day in centiseconds
_HDOP_TIME = const(10)  # UTC time (cs) of the last GGA, and its HDOP x 100
_HDOP = const(11)
_SENTENCES = const(12)  # counters: good sentences, and what was dropped
_BAD_CHECKSUM = const(13)
_BAD_SENTENCE = const(14)
_OVERFLOW = const(15)
_IGNORED = const(16)
_SLOTS = const(17)


# metres of error per unit of HDOP, by GGA fix quality: a consumer receiver's ~5 m,
# differential ~2 m, RTK better than a metre (we claim no less than 1 m)
_UERE_M = b"\x00\x05\x02\x05\x01\x01"
NO_HDOP_M = const(50)  # an RMC fix with no GGA of its epoch: no dilution known


class Nmea:

    def __init__(self):
        # the sentence in [0:_MAX], then the offsets of its commas (each below _MAX)
        self._buf = bytearray(_MAX + _MAX_FIELDS)
        v = array("i", bytes(4 * _SLOTS))
        v[_N] = -1
        v[_FIX_TIME] = -1
        v[_HDOP_TIME] = -1
        self._v = v
        # the caller's ticks when the fix's epoch was first heard: an attribute, as CPython's
        # ticks (the simulator's) outgrow a 32-bit array slot
        self.fix_ms = 0

    def feed(self, data, now, n=-1):
        """Take bytes from the UART (the first `n` of `data`, or all of it); `now` is the
        caller's ticks_ms. Returns True when a sentence renewed the fix."""
        renewed = False
        buf = self._buf
        v = self._v
        for i in range(len(data) if n < 0 else n):
            b = data[i]
            if b == 0x24:  # "$": a sentence starts (whatever came before is dropped)
                if v[_N] > 0:
                    v[_BAD_SENTENCE] += 1
                v[_N] = 0
            elif v[_N] < 0:
                continue
            elif b == 0x0D or b == 0x0A:
                if v[_N] and self._sentence(now):
                    renewed = True
                v[_N] = -1
                continue
            if v[_N] >= _MAX:
                v[_OVERFLOW] += 1
                v[_N] = -1
                continue
            buf[v[_N]] = b
            v[_N] += 1
        return renewed

    def fix(self, now):
        """(lat_e7, lon_e7, accuracy_m, age_s) of the latest fix, or None: the location the
        protocol's extension 0x04 carries (Alarm(location=...))."""
        v = self._v
        if not v[_HAVE]:
            return None
        age_ms = ticks_diff(now, self.fix_ms)
        return (v[_LAT], v[_LON], v[_ACC], (max(age_ms, 0) + 999) // 1000)

    def stats(self):
        """The latest fix (None before one), its quality and when its epoch was first heard
        (the caller's ticks), and the counters: good sentences, and those dropped by reason
        (for tests and the console; made when asked)."""
        v = self._v
        have = v[_HAVE]
        return {"lat_e7": v[_LAT] if have else None, "lon_e7": v[_LON] if have else None,
                "accuracy_m": v[_ACC] if have else None,
                "quality": v[_QUALITY], "fix_ms": self.fix_ms, "sentences": v[_SENTENCES],
                "bad_checksum": v[_BAD_CHECKSUM], "bad_sentence": v[_BAD_SENTENCE],
                "overflow": v[_OVERFLOW], "ignored": v[_IGNORED]}

    # -- one sentence in _buf[0:n], "$" first --
    def _sentence(self, now):
        buf = self._buf
        v = self._v
        star = v[_N] - 3
        if star < 7 or buf[star] != 0x2A:  # "*"
            v[_BAD_SENTENCE] += 1
            return False
        check = 0
        for i in range(1, star):
            check ^= buf[i]
        shift = 4
        for i in range(star + 1, star + 3):  # two hex digits, either case
            b = buf[i]
            if 0x30 <= b <= 0x39:
                b -= 0x30
            elif 0x61 <= b | 0x20 <= 0x66:
                b = (b | 0x20) - 0x57
            else:
                check = -1  # never a sum
                break
            check ^= b << shift
            shift = 0
        if check:  # the digits XORed into the sum: 0 when they match
            v[_BAD_CHECKSUM] += 1
            return False
        # "$" talker(2) type(3) ",": only GGA and RMC are read
        kind = 0
        if buf[6] == 0x2C:
            if buf[3] == 0x47 and buf[4] == 0x47 and buf[5] == 0x41:  # GGA
                kind = _GGA
            elif buf[3] == 0x52 and buf[4] == 0x4D and buf[5] == 0x43:  # RMC
                kind = _RMC
        if not kind:
            v[_IGNORED] += 1
            return False
        count = 0
        for i in range(6, star):
            if buf[i] == 0x2C:  # ","
                if count == _MAX_FIELDS:
                    break
                buf[_MAX + count] = i
                count += 1
        if count < (9 if kind == _GGA else 7):
            v[_BAD_SENTENCE] += 1
            return False
        v[_COUNT] = count
        v[_STAR] = star
        try:
            renewed = self._fix(kind, now)
        except ValueError:
            v[_BAD_SENTENCE] += 1
            return False
        v[_SENTENCES] += 1
        return renewed

    def _field(self, index):
        """Where field `index` (1 = the one after the type) starts in _buf; it ends at
        _v[_END] (two values without a tuple: nothing allocated per field)."""
        v = self._v
        count = v[_COUNT]
        if index > count:
            raise ValueError
        buf = self._buf
        v[_END] = buf[_MAX + index] if index < count else v[_STAR]
        return buf[_MAX + index - 1] + 1

    def _fix(self, kind, now):
        """A GGA or RMC sentence (fields checked, ValueError if one is malformed): True if it
        renewed the fix. One method for both: each function is a heap object (see above)."""
        v = self._v
        buf = self._buf
        # its UTC time, hhmmss(.ss), as centiseconds of the day
        start = self._field(1)
        end = v[_END]
        if end - start < 6:
            raise ValueError
        hh = self._decimal(0, 0, start, start + 2)
        mm = self._decimal(0, 0, start + 2, start + 4)
        ss = self._decimal(0, 2, start + 4, end)
        if hh > 23 or mm > 59 or ss >= 6100:  # (61 s: a leap second)
            raise ValueError
        time = (hh * 3600 + mm * 60) * 100 + ss
        if kind == _GGA:
            quality = self._decimal(6, 0)
            if quality < 1 or quality > 5:
                return False
            hdop = self._decimal(8, 2)
            if hdop <= 0:
                raise ValueError
            v[_HDOP_TIME] = time
            v[_HDOP] = hdop
            accuracy = (hdop * _UERE_M[quality] + 99) // 100
            lat_field = 2
        else:
            quality = 0
            start = self._field(2)
            if v[_END] != start + 1 or buf[start] != 0x41:  # "A": valid
                return False
            if v[_COUNT] >= 12:
                start = self._field(12)
                if v[_END] > start and buf[start] == 0x4E:  # mode "N": no fix
                    return False
            if time == v[_FIX_TIME]:  # its GGA came first: same fix, the GGA's accuracy
                return False
            if time == v[_HDOP_TIME]:
                accuracy = (v[_HDOP] * _UERE_M[1] + 99) // 100
            else:
                accuracy = NO_HDOP_M
            lat_field = 3
        lat = self._angle(lat_field, 2, 0x4E, 0x53, 900000000)  # ddmm.mmmm, N/S
        lon = self._angle(lat_field + 2, 3, 0x45, 0x57, 1800000000)  # dddmm.mmmm, E/W
        if time != v[_FIX_TIME]:
            self.fix_ms = now  # a new epoch; the same one again keeps its first time
        v[_FIX_TIME] = time
        v[_LAT] = lat
        v[_LON] = lon
        v[_ACC] = accuracy if accuracy > 1 else 1
        v[_QUALITY] = quality
        v[_HAVE] = 1
        return True

    # -- fields; ValueError for a malformed one --
    def _decimal(self, index, places, start=-1, end=-1):
        """Field `index` (or _buf[start:end]) as an integer of 10**-places units, extra
        digits dropped (places 0: a whole number, no point allowed)."""
        if start < 0:
            start = self._field(index)
            end = self._v[_END]
        if end == start:
            raise ValueError
        value = 0
        frac = -1  # digits seen after the point; -1 before it
        buf = self._buf
        for i in range(start, end):
            b = buf[i]
            if b == 0x2E and frac < 0 and places:  # "."
                frac = 0
                continue
            d = b - 0x30
            if d < 0 or d > 9:
                raise ValueError
            if frac < places:
                value = value * 10 + d
                if frac >= 0:
                    frac += 1
        for _ in range(places - max(frac, 0)):
            value *= 10
        return value

    def _angle(self, index, degree_digits, plus, minus, most):
        """(d)ddmm.mmmmm and its hemisphere letter (the next field) in 1e-7 degrees."""
        start = self._field(index)
        end = self._v[_END]
        buf = self._buf
        point = start + degree_digits + 2  # after the whole minutes: "." or the end
        if end < point or (point < end and buf[point] != 0x2E):
            raise ValueError
        degrees = self._decimal(0, 0, start, start + degree_digits)
        minutes_e5 = self._decimal(0, 5, start + degree_digits, end)  # 1e-5 minute
        if minutes_e5 >= 6000000:
            raise ValueError
        value = degrees * 10000000 + minutes_e5 * 10 // 6  # 1e-5 min = 1e-7 deg x 10/6
        if value > most:
            raise ValueError
        hs = self._field(index + 1)
        if self._v[_END] != hs + 1:
            raise ValueError
        h = buf[hs]
        if h == minus:
            return -value
        if h != plus:
            raise ValueError
        return value


async def read_uart(uart, parser, app):
    """The gnss task: whatever the module sends, as it comes, into `parser`. It parks in the
    UART stream's readinto() (the scheduler wakes it when bytes have come: nothing polls);
    `app` keeps its heartbeat for the supervisor. A plain coroutine: no object of its own."""
    buf = bytearray(_READ)
    while True:
        app._park("gnss")
        n = await uart.readinto(buf)
        app._busy("gnss")
        if n:
            parser.feed(buf, ticks_ms(), n)
