# `vigil bench ble`'s figures: p99 is the nearest-rank percentile (of 100 alarms the 99th, not
# the slowest one), and the slowest alarm is reported on its own, with its place in the run.
from vigil_tools.bench_ble import _figures, _percentile


def test_p99_of_a_hundred_is_the_99th_value_not_the_largest():
    values = list(range(100, 0, -1))  # 1..100 ms, in any order
    assert _percentile(values, 0.99) == 99
    assert _percentile(values, 0.50) == 50
    assert _percentile(values, 1.0) == 100
    assert _percentile(list(range(1, 1001)), 0.99) == 990
    assert _percentile([7.0], 0.99) == 7.0


def test_figures_report_the_slowest_alarm_and_where_it_came():
    latencies = [15.0] + [3.0] * 98 + [5.0]
    f = _figures(8, 8, 1.0, latencies, 0, 0.5)
    assert f["ack_max_ms"] == 15.0 and f["ack_max_alarm"] == 1
    assert f["ack_p99_ms"] == 5.0  # the first (slowest) alarm alone does not make the p99
    assert f["alarms_timed"] == 100
