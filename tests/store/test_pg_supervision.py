# Supervision and downlink counters outside ingest on the PostgreSQL store: every worker may
# claim overdue devices, and each silent device gets one LOST_CONTACT; counters taken for
# DELIVERED acks and actions never collide with ingest's.
import threading

import pytest

from pg_workers import NEW, Worker, alarm


@pytest.fixture
def stores(pg_store_url, tmp_path):
    """make(n, **store options) -> n Workers on the test's database; closed after."""
    made = []

    def make(n=1, **kwargs):
        new = [Worker(pg_store_url, tmp_path / "keys", **kwargs) for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for store in made:
        store.close()


def test_a_device_not_past_its_deadline_is_not_claimed(stores):
    (store,) = stores()  # deadline: 300 s + 60 s after its frame, on the database clock
    store.add(1)
    store.ingest([alarm(1, 1)], now=10.0)
    assert store.store.claim_overdue(now=11.0) == []


def test_workers_claiming_at_once_raise_one_lost_contact_per_silent_device(stores):
    # interval and grace 0: each device is past its deadline as soon as its frame is in
    workers = stores(3, default_interval_s=0, grace_s=0)
    devices = list(range(1, 41))
    for device_id in devices:
        workers[0].add(device_id)
    workers[0].ingest([alarm(d, 1) for d in devices], now=10.0)
    claimed, errors = [[] for _ in workers], []

    def run(index):
        try:
            while True:
                got = workers[index].store.claim_overdue(now=20.0, limit=3)
                if not got:
                    return
                claimed[index].extend(got)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    everything = sorted(c for per_worker in claimed for c in per_worker)
    assert [d for d, _ in everything] == devices  # each device once, none missed
    assert workers[0].store.open_lost_contacts() == everything
    assert workers[1].store.claim_overdue(now=30.0) == []  # one open at a time per device


def test_a_frame_from_a_lost_device_closes_its_lost_contact(stores):
    (store,) = stores(default_interval_s=0, grace_s=0)
    store.add(1)
    store.ingest([alarm(1, 1)], now=10.0)
    [(device_id, incident_id)] = store.store.claim_overdue(now=20.0)
    assert [v.result for v in store.ingest([alarm(1, 2)], now=30.0)] == [NEW]
    assert store.store.open_lost_contacts() == []
    # heard again, then silent again: a new LOST_CONTACT, not the old one reopened
    [(_, again)] = store.store.claim_overdue(now=40.0)
    assert again != incident_id


def test_counters_taken_for_downlinks_and_by_ingest_at_once_never_collide(stores):
    ingester, sender = stores(2)
    ingester.add(7)
    taken, errors = [], []

    def send():
        try:
            for _ in range(200):
                with sender.store.locked([7]):
                    taken.append(sender.store.take_downlink_counter(7))
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    acks = []
    for counter in range(1, 201):
        acks.extend(v.ack_counter for v in ingester.ingest([alarm(7, counter)], now=10.0))
    thread.join(60)
    assert errors == []
    assert sorted(taken + acks) == list(range(1, 401))
    assert ingester.store.downlink_counter(7) == 400


def test_a_device_another_transaction_holds_is_skipped_not_waited_for(stores):
    # A worker ingesting device 1's frames holds its row; another worker's supervision round
    # must not stall behind it (SKIP LOCKED): it raises device 2's LOST_CONTACT at once and
    # leaves device 1 to a later round, which raises it once the batch is over.
    ingesting, supervising = stores(2, default_interval_s=0, grace_s=0)
    for device_id in (1, 2):
        ingesting.add(device_id)
    ingesting.ingest([alarm(1, 1), alarm(2, 1)], now=10.0)  # both past their deadlines
    ingesting.write([alarm(1, 2)], now=11.0)  # device 1's row held, the batch not committed
    try:
        done = []
        thread = threading.Thread(target=lambda: done.append(
            supervising.store.claim_overdue(now=12.0)))
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "supervision waited for a device another worker holds"
        assert [d for d, _ in done[0]] == [2]
    finally:
        ingesting.commit()
    # device 1 was heard at 11.0: its deadline moved (interval 0: past again at once)
    assert [d for d, _ in supervising.store.claim_overdue(now=13.0)] == [1]
