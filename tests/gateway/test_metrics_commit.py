# vigil_gateway_commit_seconds on the SQLite gateway: a histogram on /metrics, one observation
# per batch committed (as many as vigil_gateway_commits_total), for the COMMIT made inline (a
# small batch) and for the one the writer thread makes (a batch of 32 or more: alarms that
# waited at the broker while the gateway was stopped arrive together).
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from gateway_harness import key_for

A = 0x0000000A


def _commits(gw):
    """(commits_total, the histogram's count, its sum, its cumulative buckets)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gw.http_port, timeout=5) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    histogram = families["vigil_gateway_commit_seconds"]
    assert histogram.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.samples}
    buckets = sorted((float(le), v) for (name, le), v in samples.items()
                     if name.endswith("_bucket"))
    total = [s.value for s in families["vigil_gateway_commits"].samples
             if s.name == "vigil_gateway_commits_total"][0]
    return (total, samples[("vigil_gateway_commit_seconds_count", None)],
            samples[("vigil_gateway_commit_seconds_sum", None)], buckets)


def test_each_commit_is_observed_inline_and_in_the_writer_thread(gateway_factory, devices,
                                                                  mosquitto_factory):
    broker = mosquitto_factory()
    gw = gateway_factory(broker.port)
    gw.add_device(A, key_for(A))
    gw.start()
    assert _commits(gw)[:2] == (0, 0)
    device = devices(broker.port, A, key_for(A))
    for _ in range(3):  # one at a time: three batches of one, committed inline
        counter = device.counter + 1
        device.publish(device.alarm())
        device.wait_acked([counter])
    total, count, seconds, buckets = _commits(gw)
    assert total == count == 3 and seconds > 0
    assert buckets[-1] == (float("inf"), 3)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative

    # Stopped, 400 alarms wait at the broker (the gateway's session keeps them); started
    # again, they come in batches of up to 500, and the new process counts from 0.
    gw.stop()
    first = device.counter + 1
    for _ in range(400):
        device.publish(device.alarm(), wait=False)
    device.publish(device.alarm())
    gw.start()
    device.wait_acked(range(first, device.counter + 1), timeout=60)
    total, count, seconds, buckets = _commits(gw)
    assert total == count and seconds > 0 and buckets[-1] == (float("inf"), count)
    # 401 frames in at most 12 commits: some batch held 32 or more (the writer thread's)
    assert 1 <= count <= 12, count
