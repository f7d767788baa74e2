# Replay/retransmission window and counter reservation, on every interpreter.
import unittest

import vigil_protocol as p
from protocol_helpers import rejection

T1 = b"tag-0001"
T2 = b"tag-0002"


class Window(unittest.TestCase):
    def test_new_then_retransmission_then_reuse(self):
        w = p.ReplayWindow(size=8)
        self.assertEqual(w.accept(10, T1), p.NEW)
        self.assertEqual(w.accept(10, T1), p.RETRANSMISSION)
        self.assertEqual(rejection(w.accept, 10, T2), "counter_reuse")

    def test_reordered_counters_inside_the_window_are_new(self):
        w = p.ReplayWindow(size=8)
        w.accept(10, T1)
        self.assertEqual(w.accept(7, T2), p.NEW)
        self.assertEqual(w.accept(7, T2), p.RETRANSMISSION)
        self.assertEqual(w.top, 10)

    def test_counters_below_the_window_are_stale(self):
        w = p.ReplayWindow(size=8)
        w.accept(20, T1)
        self.assertEqual(rejection(w.accept, 12, T1), "stale_counter")
        self.assertEqual(w.accept(13, T1), p.NEW)

    def test_check_changes_nothing_until_recorded(self):
        w = p.ReplayWindow(size=8)
        self.assertEqual(w.check(5, T1), p.NEW)
        self.assertEqual(w.check(5, T1), p.NEW)
        w.record(5, T1)
        self.assertEqual(w.check(5, T1), p.RETRANSMISSION)

    def test_memory_stays_bounded(self):
        w = p.ReplayWindow(size=16)
        for c in range(1, 1000):
            w.accept(c, T1)
        self.assertEqual(len(w.seen()), 16)

    def test_rebuilt_window_behaves_the_same(self):
        w = p.ReplayWindow(size=8)
        for c in (3, 5, 9):
            w.accept(c, T1)
        again = p.ReplayWindow(size=8)
        for c, tag in w.seen():
            again.record(c, tag)
        self.assertEqual(again.accept(5, T1), p.RETRANSMISSION)
        self.assertEqual(again.accept(4, T1), p.NEW)


class Counters(unittest.TestCase):
    def test_nothing_is_handed_out_before_a_limit_is_persisted(self):
        c = p.CounterReservation(0, block=4)
        with self.assertRaises(p.LocalProtocolError):
            c.take()
        self.assertEqual(c.pending_limit, 5)

    def test_no_counter_repeats_across_reboots_at_any_point(self):
        flash = [0]
        used = []

        def persist(limit):
            flash[0] = limit

        for boot in range(20):
            c = p.CounterReservation(flash[0], block=4)
            for _ in range(boot % 7):  # lose power after a varying number of frames
                used.append(c.take_with(persist))
        self.assertEqual(len(used), len(set(used)))
        self.assertEqual(sorted(used), used)

    def test_reboot_jumps_to_the_persisted_limit(self):
        flash = [0]

        def persist(limit):
            flash[0] = limit

        c = p.CounterReservation(0, block=10)
        c.take_with(persist)
        self.assertEqual(flash[0], 11)
        c2 = p.CounterReservation(flash[0], block=10)
        self.assertEqual(c2.take_with(lambda limit: None), 11)

    def test_a_limit_that_covers_nothing_is_refused(self):
        c = p.CounterReservation(5, block=4)
        with self.assertRaises(p.LocalProtocolError):
            c.confirm(5)
