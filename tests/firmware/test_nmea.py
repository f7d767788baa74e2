# The NMEA 0183 parser (vigil_fw.nmea), run by pytest on CPython and on the MicroPython unix
# port (test_location_micropython.py): GGA and RMC fixes in 1e-7 degrees, the checksum, the
# fix quality, HDOP to an accuracy estimate, the fix's age (a stale fix stays stale), bytes
# in any chunks, every fault dropping one sentence alone, and no allocation per byte.
import gc
import unittest

from vigil_fw.nmea import NO_HDOP_M, Nmea


def sentence(body, checksum=None):
    """$body*CS CR LF, with the right checksum unless one is given."""
    c = 0
    for b in body.encode():
        c ^= b
    return ("$%s*%02X\r\n" % (body, c if checksum is None else checksum)).encode()


def got(gps, *names):
    """The parser's figures by name (Nmea.stats()), as a tuple."""
    stats = gps.stats()
    return tuple([stats[name] for name in names])


# Real receivers' sentences (u-blox style, GN talker for a multi-constellation fix).
GGA = "GPGGA,181715.00,3748.8604,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,"
RMC = "GNRMC,181716.00,A,5130.0468,N,00007.6542,W,0.02,,011226,,,A"
LAT_GGA = 378143400  # 37 deg 48.8604 min
LON_GGA = -836492316  # -(83 deg 38.9539 min), 1e-7 degrees truncated


class Fixes(unittest.TestCase):
    def test_gga_gives_position_quality_and_accuracy(self):
        gps = Nmea()
        self.assertTrue(gps.feed(sentence(GGA), 1000))
        self.assertEqual(got(gps, "lat_e7", "lon_e7"), (LAT_GGA, LON_GGA))
        self.assertEqual(gps.stats()["quality"], 1)
        self.assertEqual(gps.stats()["accuracy_m"], 5)  # HDOP 0.9 x 5 m, rounded up
        self.assertEqual(gps.fix(1000), (LAT_GGA, LON_GGA, 5, 0))

    def test_rmc_gives_a_fix_in_every_quadrant(self):
        for ns, ew, sign_lat, sign_lon in (("N", "W", 1, -1), ("S", "E", -1, 1)):
            gps = Nmea()
            body = RMC.replace(",N,", "," + ns + ",").replace(",W,", "," + ew + ",")
            self.assertTrue(gps.feed(sentence(body), 0))
            self.assertEqual(gps.stats()["lat_e7"], sign_lat * 515007800)
            self.assertEqual(gps.stats()["lon_e7"], sign_lon * 1275700)
            self.assertEqual(gps.stats()["accuracy_m"], NO_HDOP_M)  # no GGA of its epoch

    def test_far_longitudes_and_latitudes(self):
        gps = Nmea()
        body = "GPRMC,000000,A,8959.99999,S,17959.99999,E,,,010126,,"
        self.assertTrue(gps.feed(sentence(body), 0))
        self.assertEqual(got(gps, "lat_e7", "lon_e7"), (-899999998, 1799999998))

    def test_rmc_of_the_ggas_epoch_keeps_the_ggas_accuracy(self):
        gps = Nmea()
        gps.feed(sentence("GPGGA,120000.00,5130.0468,N,00007.6542,W,2,12,1.3,20,M,47,M,,"), 0)
        self.assertEqual(gps.stats()["accuracy_m"], 3)  # DGPS: 1.3 x 2 m, rounded up
        gps.feed(sentence("GPRMC,120000.00,A,5130.0468,N,00007.6542,W,0,,011226,,"), 10)
        self.assertEqual(gps.stats()["accuracy_m"], 3)
        gps.feed(sentence("GPRMC,120001.00,A,5130.0470,N,00007.6542,W,0,,011226,,"), 1000)
        self.assertEqual(gps.stats()["accuracy_m"], NO_HDOP_M)

    def test_a_large_hdop_is_a_large_accuracy_and_rtk_claims_at_least_a_metre(self):
        gps = Nmea()
        gps.feed(sentence(GGA.replace(",1,09,0.9,", ",1,04,12.5,")), 0)
        self.assertEqual(gps.stats()["accuracy_m"], 63)
        gps.feed(sentence(GGA.replace("181715.00", "181716.00").replace(",1,09,0.9,",
                                                                           ",4,20,0.6,")), 0)
        self.assertEqual(got(gps, "quality", "accuracy_m"), (4, 1))

    def test_sentences_without_a_fix_change_nothing(self):
        gps = Nmea()
        for body in (GGA.replace(",1,09,", ",0,00,"),  # quality 0: invalid
                     GGA.replace(",1,09,", ",6,09,"),  # dead reckoning: an estimate
                     RMC.replace(",A,", ",V,"),  # status V: void
                     RMC[:-1] + "N",  # mode N: no fix
                     "GPGGA,181715.00,,,,,1,09,0.9,,M,,M,,"):  # no position
            self.assertFalse(gps.feed(sentence(body), 0), body)
        self.assertEqual(gps.fix(0), None)

    def test_other_sentences_are_counted_and_ignored(self):
        gps = Nmea()
        gps.feed(sentence("GPGSV,3,1,12,28,76,017,38,17,56,282,38,01,46,055,40,08,38,183,47"), 0)
        gps.feed(sentence("GPGSA,A,3,07,11,28,24,26,08,04,17,20,,,,1.7,0.9,1.4"), 0)
        self.assertEqual(got(gps, "ignored", "sentences"), (2, 0))


class Age(unittest.TestCase):
    def test_the_age_counts_from_the_epoch_and_rounds_up(self):
        gps = Nmea()
        gps.feed(sentence(GGA), 5000)
        self.assertEqual(gps.fix(5000)[3], 0)
        self.assertEqual(gps.fix(5001)[3], 1)
        self.assertEqual(gps.fix(65000)[3], 60)

    def test_a_lost_fix_keeps_its_position_and_grows_old(self):
        gps = Nmea()
        gps.feed(sentence(GGA), 0)
        gps.feed(sentence(GGA.replace("181715.00", "181716.00").replace(",1,09,", ",0,00,")),
                 1000)
        gps.feed(sentence(RMC.replace(",A,", ",V,")), 2000)
        self.assertEqual(gps.fix(120000), (LAT_GGA, LON_GGA, 5, 120))

    def test_a_receiver_repeating_an_old_fix_does_not_make_it_new(self):
        gps = Nmea()
        gps.feed(sentence(GGA), 0)
        gps.feed(sentence(GGA), 30000)  # the same UTC time again, 30 s later
        self.assertEqual(gps.fix(30000)[3], 30)
        gps.feed(sentence(GGA.replace("181715.00", "181745.00")), 30000)
        self.assertEqual(gps.fix(30000)[3], 0)

    def test_ticks_that_wrap_still_give_the_age(self):
        from vigil_fw.clock import ticks_add
        gps = Nmea()
        start = ticks_add(0, -1500)  # just before the ticks wrap
        gps.feed(sentence(GGA), start)
        self.assertEqual(gps.fix(ticks_add(start, 4000))[3], 4)


class Faults(unittest.TestCase):
    def test_a_bad_checksum_drops_the_sentence(self):
        gps = Nmea()
        good = sentence(GGA)
        bad = sentence(GGA, checksum=(int(good[-4:-2], 16) ^ 1))
        self.assertFalse(gps.feed(bad, 0))
        self.assertEqual((gps.stats()["bad_checksum"], gps.fix(0)), (1, None))
        self.assertTrue(gps.feed(good, 0))

    def test_hex_digits_of_either_case(self):
        gps = Nmea()
        upper = sentence(RMC)  # its checksum has a letter
        self.assertTrue(any(0x41 <= b <= 0x46 for b in upper[-4:-2]))
        self.assertTrue(gps.feed(upper[:-4] + upper[-4:-2].lower() + b"\r\n", 0))

    def test_malformed_fields_are_dropped_and_counted(self):
        gps = Nmea()
        for body in ("GPGGA,181715.00,3748.8604,X,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3748.86a4,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3760.0000,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,9100.0000,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3748.8604,N,18038.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,48.8604,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,251715.00,3748.8604,N,08338.9539,W,1,09,0.9,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3748.8604,N,08338.9539,W,1,09,,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3748.8604,N,08338.9539,W,1,09,0.0,371.4,M,-32.5,M,,",
                     "GPGGA,181715.00,3748.8604,N,08338.9539,W,1",
                     "GPRMC,181716.00,A,5130.0468,N"):
            self.assertFalse(gps.feed(sentence(body), 0), body)
        self.assertEqual(got(gps, "bad_sentence", "sentences") + (gps.fix(0),), (11, 0, None))

    def test_noise_overflow_and_cut_sentences_lose_only_themselves(self):
        gps = Nmea()
        stream = (b"\x00\xff garbage $GPGGA,1817" + b"$" + b"X" * 200 + b"\r\n"
                  + b"$GPGGA,no star\r\n" + sentence(GGA))
        self.assertTrue(gps.feed(stream, 0))
        self.assertEqual(gps.fix(0), (LAT_GGA, LON_GGA, 5, 0))
        self.assertEqual(got(gps, "bad_sentence", "overflow"), (2, 1))

    def test_bytes_in_any_chunks_give_the_same_fix(self):
        data = sentence(GGA) + sentence(RMC)
        for size in (1, 2, 7, 64):
            gps = Nmea()
            for i in range(0, len(data), size):
                gps.feed(data[i:i + size], 0)
            self.assertEqual(got(gps, "lat_e7", "lon_e7", "sentences"), (515007800, -1275700, 2))

    def test_the_first_n_bytes_of_a_reused_buffer(self):
        # As read_uart() feeds it: each read into one buffer, what is past n left over
        # from the read before.
        data = sentence(GGA) + sentence(RMC)
        buf = bytearray(b"$" * 16)
        gps = Nmea()
        for i in range(0, len(data), 16):
            chunk = data[i:i + 16]
            buf[0:len(chunk)] = chunk
            gps.feed(buf, 0, len(chunk))
        self.assertEqual(got(gps, "lat_e7", "lon_e7", "sentences", "bad_sentence"),
                         (515007800, -1275700, 2, 0))


class Allocation(unittest.TestCase):
    def test_feeding_sentences_allocates_nothing(self):
        if not hasattr(gc, "mem_alloc"):
            self.skipTest("CPython has no gc.mem_alloc (MicroPython only)")
        # west of -107 degrees a 32-bit port's longitude is a big int: use one east of it
        data = (sentence(GGA) + sentence("GPGSV,3,1,12,28,76,017,38") + sentence(RMC)
                + sentence(RMC.replace(",A,", ",V,")) + sentence(GGA, checksum=0) + b"$junk\r\n")
        gps = Nmea()
        gps.feed(data, 0)  # warm up
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for now in range(10):
            gps.feed(data, now * 1000)
        used = gc.mem_alloc() - before
        gc.enable()
        self.assertEqual(used, 0)
        # the GGA, the RMC and the void RMC, 11 times
        self.assertEqual(gps.stats()["sentences"], 33)
