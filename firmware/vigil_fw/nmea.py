# NMEA 0183 from a UART GNSS module: GGA and RMC sentences into the wearable's latest fix
# (latitude, longitude in 1e-7 degrees, an accuracy estimate, and when it was taken), for the
# location extension 0x04 (protocol/SPEC.md section 4). Bytes are fed as the UART gives them;
# sentences are parsed in place in one preallocated buffer (no split(), no floats, no strings).
#
# Rules:
#   a sentence is "$" ... "*" two hex digits, then CR or LF; at most MAX_SENTENCE bytes from
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
from .clock import ticks_diff

_GGA = 1
_RMC = 2
_MAX_FIELDS = 15  # GGA has 14 after the type


class Nmea:
    MAX_SENTENCE = 82
    # metres of error per unit of HDOP, by GGA fix quality: a consumer receiver's ~5 m,
    # differential ~2 m, RTK better than a metre (we claim no less than 1 m)
    UERE_M = (0, 5, 2, 5, 1, 1)
    NO_HDOP_M = 50  # an RMC fix with no GGA of its epoch: no dilution known

    def __init__(self):
        self._buf = bytearray(self.MAX_SENTENCE)
        self._n = -1  # bytes in _buf; -1 between sentences (waiting for "$")
        self._commas = [0] * _MAX_FIELDS  # offsets of the current sentence's commas
        self._count = 0  # how many
        self._star = 0  # offset of its "*"
        self._end = 0  # where the field _field() found ends
        self.lat_e7 = None  # the latest fix; None until there is one
        self.lon_e7 = None
        self.accuracy_m = None
        self.quality = 0  # GGA fix quality of the latest fix (0: from RMC alone)
        self.fix_time = -1  # its UTC time of day in centiseconds
        self.fix_ms = 0  # the caller's ticks when its epoch was first heard
        self._hdop_time = -1  # UTC time (cs) of the last GGA and its HDOP x 100
        self._hdop_x100 = 0
        self.sentences = 0  # counters: good sentences, and what was dropped
        self.bad_checksum = 0
        self.bad_sentence = 0
        self.overflow = 0
        self.ignored = 0

    def feed(self, data, now, n=-1):
        """Take bytes from the UART (the first `n` of `data`, or all of it); `now` is the
        caller's ticks_ms. Returns True when a sentence renewed the fix."""
        renewed = False
        buf = self._buf
        for i in range(len(data) if n < 0 else n):
            b = data[i]
            if b == 0x24:  # "$": a sentence starts (whatever came before is dropped)
                if self._n > 0:
                    self.bad_sentence += 1
                self._n = 0
            elif self._n < 0:
                continue
            elif b == 0x0D or b == 0x0A:
                if self._n and self._sentence(now):
                    renewed = True
                self._n = -1
                continue
            if self._n >= len(buf):
                self.overflow += 1
                self._n = -1
                continue
            buf[self._n] = b
            self._n += 1
        return renewed

    def fix(self, now):
        """(lat_e7, lon_e7, accuracy_m, age_s) of the latest fix, or None: the location the
        protocol's extension 0x04 carries (Alarm(location=...))."""
        if self.lat_e7 is None:
            return None
        age_ms = ticks_diff(now, self.fix_ms)
        return (self.lat_e7, self.lon_e7, self.accuracy_m, (max(age_ms, 0) + 999) // 1000)

    # -- one sentence in _buf[0:_n], "$" first --
    def _sentence(self, now):
        buf = self._buf
        n = self._n
        star = n - 3
        if star < 7 or buf[star] != 0x2A:  # "*"
            self.bad_sentence += 1
            return False
        check = 0
        for i in range(1, star):
            check ^= buf[i]
        if _hex2(buf, star + 1) != check:
            self.bad_checksum += 1
            return False
        kind = self._kind()
        if not kind:
            self.ignored += 1
            return False
        commas = self._commas
        count = 0
        for i in range(6, star):
            if buf[i] == 0x2C:  # ","
                if count == _MAX_FIELDS:
                    break
                commas[count] = i
                count += 1
        if count < (9 if kind == _GGA else 7):
            self.bad_sentence += 1
            return False
        self._count = count
        self._star = star
        try:
            renewed = self._gga(now) if kind == _GGA else self._rmc(now)
        except ValueError:
            self.bad_sentence += 1
            return False
        self.sentences += 1
        return renewed

    def _kind(self):
        buf = self._buf
        if buf[6] != 0x2C:  # "$" talker(2) type(3) ","
            return 0
        if buf[3] == 0x47 and buf[4] == 0x47 and buf[5] == 0x41:  # GGA
            return _GGA
        if buf[3] == 0x52 and buf[4] == 0x4D and buf[5] == 0x43:  # RMC
            return _RMC
        return 0

    def _field(self, index):
        """Where field `index` (1 = the one after the type) starts in _buf; it ends at
        self._end (two values without a tuple: nothing allocated per field)."""
        if index > self._count:
            raise ValueError
        self._end = self._commas[index] if index < self._count else self._star
        return self._commas[index - 1] + 1

    def _gga(self, now):
        time = self._time(1)
        quality = self._int(6)
        if quality < 1 or quality > 5:
            return False
        hdop = self._decimal(8, 2)
        if hdop <= 0:
            raise ValueError
        self._hdop_time = time
        self._hdop_x100 = hdop
        accuracy = (hdop * self.UERE_M[quality] + 99) // 100
        return self._renew(now, time, 2, accuracy if accuracy > 1 else 1, quality)

    def _rmc(self, now):
        time = self._time(1)
        start = self._field(2)
        end = self._end
        if end != start + 1 or self._buf[start] != 0x41:  # "A": valid
            return False
        if self._count >= 12:
            start = self._field(12)
            end = self._end
            if end > start and self._buf[start] == 0x4E:  # mode "N": no fix
                return False
        if time == self.fix_time:  # its GGA came first: same fix, the GGA's accuracy
            return False
        if time == self._hdop_time:
            accuracy = (self._hdop_x100 * self.UERE_M[1] + 99) // 100
        else:
            accuracy = self.NO_HDOP_M
        return self._renew(now, time, 3, accuracy if accuracy > 1 else 1, 0)

    def _renew(self, now, time, lat_field, accuracy, quality):
        lat = self._angle(lat_field, 2, 0x4E, 0x53, 900000000)  # ddmm.mmmm, N/S
        lon = self._angle(lat_field + 2, 3, 0x45, 0x57, 1800000000)  # dddmm.mmmm, E/W
        if time != self.fix_time:
            self.fix_ms = now  # a new epoch; the same one again keeps its first time
        self.fix_time = time
        self.lat_e7 = lat
        self.lon_e7 = lon
        self.accuracy_m = accuracy
        self.quality = quality
        return True

    # -- fields; ValueError for a malformed one --
    def _int(self, index):
        start = self._field(index)
        end = self._end
        if end == start:
            raise ValueError
        value = 0
        for i in range(start, end):
            d = self._buf[i] - 0x30
            if d < 0 or d > 9:
                raise ValueError
            value = value * 10 + d
        return value

    def _decimal(self, index, places, start=-1, end=-1):
        """Field `index` (or _buf[start:end]) as an integer of 10**-places units, extra
        digits dropped."""
        if start < 0:
            start = self._field(index)
            end = self._end
        if end == start:
            raise ValueError
        value = 0
        frac = -1  # digits seen after the point; -1 before it
        for i in range(start, end):
            b = self._buf[i]
            if b == 0x2E and frac < 0:  # "."
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

    def _time(self, index):
        """hhmmss(.ss) as centiseconds of the day."""
        start = self._field(index)
        end = self._end
        if end - start < 6:
            raise ValueError
        hh = self._decimal(0, 0, start, start + 2)
        mm = self._decimal(0, 0, start + 2, start + 4)
        ss = self._decimal(0, 2, start + 4, end)
        if hh > 23 or mm > 59 or ss >= 6100:  # (61 s: a leap second)
            raise ValueError
        return (hh * 3600 + mm * 60) * 100 + ss

    def _angle(self, index, degree_digits, plus, minus, most):
        """(d)ddmm.mmmmm and its hemisphere letter (the next field) in 1e-7 degrees."""
        start = self._field(index)
        end = self._end
        point = start + degree_digits + 2  # after the whole minutes: "." or the end
        if end < point or (point < end and self._buf[point] != 0x2E):
            raise ValueError
        degrees = self._decimal(0, 0, start, start + degree_digits)
        minutes_e5 = self._decimal(0, 5, start + degree_digits, end)  # 1e-5 minute
        if minutes_e5 >= 6000000:
            raise ValueError
        value = degrees * 10000000 + minutes_e5 * 10 // 6  # 1e-5 min = 1e-7 deg x 10/6
        if value > most:
            raise ValueError
        hs = self._field(index + 1)
        he = self._end
        if he != hs + 1:
            raise ValueError
        h = self._buf[hs]
        if h == minus:
            return -value
        if h != plus:
            raise ValueError
        return value


def _hex2(buf, i):
    """Two hex digits (either case) at buf[i:i + 2], or -1."""
    high = _hex1(buf[i])
    low = _hex1(buf[i + 1])
    return -1 if high < 0 or low < 0 else high * 16 + low


def _hex1(b):
    if 0x30 <= b <= 0x39:
        return b - 0x30
    if 0x41 <= b <= 0x46 or 0x61 <= b <= 0x66:
        return (b | 0x20) - 0x57
    return -1
