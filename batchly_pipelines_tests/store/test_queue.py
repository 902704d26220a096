"""The sync queue: leases, fenced acknowledgements, backoff, dead letter, concurrent claims."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.store import schema as s
from batchly_pipelines.store.queue import RetryPolicy, SyncQueue
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f

LEASE = timedelta(minutes=5)


def _customers(engine: Engine, count: int) -> tuple[int, list[int]]:
    with engine.begin() as conn:
        org = f.organization(conn)
        return org, [f.customer(conn, org, display_name=f"Customer {n}") for n in range(count)]


def test_claim_leases_oldest_due_rows_and_an_attempt_counts_only_when_sent(engine: Engine) -> None:
    org, ids = _customers(engine, 5)
    queue = SyncQueue(engine)
    claimed = queue.claim("worker-a", limit=3, lease=LEASE)
    assert [c.entity_id for c in claimed] == ids[:3]
    assert all(c.attempts == 0 and c.lease_owner == "worker-a" for c in claimed)
    assert queue.count_attempts(claimed[:2]) == 2
    with engine.connect() as conn:
        assert [r["attempts"] for r in f.queue_rows(conn)][:3] == [1, 1, 0]
    assert [c.entity_id for c in queue.claim("worker-b", limit=10, lease=LEASE)] == ids[3:]
    assert queue.claim("worker-c", limit=10, lease=LEASE) == []
    assert queue.depth() == {org: {"pending": 0, "in_progress": 5, "done": 0, "dead": 0}}


def test_expired_lease_is_claimable_again_and_the_old_owner_cannot_ack(engine: Engine) -> None:
    _customers(engine, 1)
    queue = SyncQueue(engine)
    [crashed] = queue.claim("crashed-run", limit=1, lease=LEASE)
    assert queue.claim("other", limit=1, lease=LEASE, now=utcnow() + LEASE / 2) == []
    [taken_over] = queue.claim("other", limit=1, lease=LEASE, now=utcnow() + LEASE * 2)
    assert taken_over.id == crashed.id and taken_over.attempts == 0  # the crashed run never sent it
    assert queue.count_attempts([crashed]) == 0  # a lost lease counts nothing
    with engine.begin() as conn:
        assert SyncQueue.ack(conn, [crashed]) == 0
        assert SyncQueue.ack(conn, [taken_over]) == 1
    assert queue.fail(crashed, "late failure") == "lost_lease"
    with engine.connect() as conn:
        assert conn.execute(sa.select(s.sync_queue.c.status)).scalar() == "done"


def test_failure_backs_off_then_dead_letters_after_max_attempts(engine: Engine) -> None:
    _customers(engine, 1)
    policy = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=10), rng=random.Random(7))
    queue = SyncQueue(engine, policy)
    now = utcnow()
    for attempt in (1, 2):
        [item] = queue.claim("w", limit=1, lease=LEASE, now=now)
        assert item.attempts == attempt - 1
        queue.count_attempts([item])
        assert queue.fail(item, f"HTTP 503 on attempt {attempt}", now=now) == "pending"
        with engine.connect() as conn:
            row = conn.execute(sa.select(s.sync_queue)).mappings().one()
        delay = row["next_attempt_at"] - now
        ceiling = timedelta(seconds=10 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        assert queue.claim("w", limit=1, lease=LEASE, now=now) == []  # not due yet
        now = row["next_attempt_at"]
    [item] = queue.claim("w", limit=1, lease=LEASE, now=now)
    queue.count_attempts([item])
    assert queue.fail(item, "HTTP 503 again", now=now) == "dead"
    [dead] = queue.list(status="dead")
    assert dead["last_error"] == "HTTP 503 again" and dead["attempts"] == 3


def test_validation_failure_goes_straight_to_the_dead_letter_and_can_be_retried(engine: Engine) -> None:
    org, [customer_id] = _customers(engine, 1)
    queue = SyncQueue(engine)
    [item] = queue.claim("w", limit=1, lease=LEASE)
    assert queue.fail(item, "customers[1].display_name: too long", retryable=False) == "dead"
    assert queue.claim("w", limit=1, lease=LEASE) == []
    assert queue.retry_dead(organization_id=org) == 1
    [again] = queue.claim("w", limit=1, lease=LEASE)
    assert again.entity_id == customer_id and again.attempts == 0


def test_failed_row_folds_into_a_newer_pending_edit_of_the_same_record(engine: Engine) -> None:
    _, [customer_id] = _customers(engine, 1)
    queue = SyncQueue(engine)
    [item] = queue.claim("w", limit=1, lease=LEASE)
    queue.count_attempts([item])
    with engine.begin() as conn:  # the app edits the customer while the push is in flight
        conn.execute(sa.update(s.customers).where(s.customers.c.id == customer_id).values(notes="edited"))
    assert queue.fail(item, "HTTP 500") == "pending"
    with engine.connect() as conn:
        rows = f.queue_rows(conn)
    assert [(r["status"], r["attempts"], r["change_count"]) for r in rows] == [
        ("done", 1, 1),
        ("pending", 1, 2),
    ]
    assert rows[1]["last_error"] == "HTTP 500"
    assert "superseded by queue row" in rows[0]["last_error"]


def test_due_by_organization_reports_depth_and_high_water_id(engine: Engine) -> None:
    org, _ = _customers(engine, 3)
    with engine.begin() as conn:
        other = f.organization(conn, name="Other")
        f.customer(conn, other)
    due = SyncQueue(engine).due_by_organization()
    assert due[org][0] == 3 and due[other][0] == 1
    assert due[other][1] > due[org][1]


def test_claim_filters_by_organization_type_and_id(engine: Engine) -> None:
    org, ids = _customers(engine, 3)
    with engine.begin() as conn:
        item_id = f.item(conn, org)
    queue = SyncQueue(engine)
    assert [c.entity_id for c in queue.claim("w", limit=10, lease=LEASE, entity_types=["item"])] == [item_id]
    assert [c.entity_id for c in queue.claim("w", limit=10, lease=LEASE, entity_ids=[ids[1]])] == [ids[1]]
    assert queue.claim("w", limit=10, lease=LEASE, organization_id=org + 100) == []


def test_concurrent_claims_never_hand_a_row_to_two_workers(engine: Engine) -> None:
    _, ids = _customers(engine, 200)
    queue = SyncQueue(engine)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(name: str) -> None:
        try:
            start.wait()
            mine = claimed.setdefault(name, [])
            while batch := queue.claim(name, limit=7, lease=LEASE):
                mine += [item.entity_id for item in batch]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"worker-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [entity for batch in claimed.values() for entity in batch]
    assert sorted(every) == sorted(ids), "each row claimed exactly once"
    if engine.dialect.name == "postgresql":
        assert sum(1 for batch in claimed.values() if batch) > 1, "work was shared between workers"


def test_a_stale_worker_cannot_requeue_a_row_another_worker_took_over(engine: Engine) -> None:
    _customers(engine, 1)
    queue = SyncQueue(engine)
    [stale] = queue.claim("old-worker", limit=1, lease=LEASE)
    [current] = queue.claim("new-worker", limit=1, lease=LEASE, now=utcnow() + LEASE * 2)
    assert queue.fail(stale, "HTTP 503 seen by the old worker") == "lost_lease"
    with engine.connect() as conn:
        [row] = f.queue_rows(conn)
    assert (row["status"], row["lease_owner"]) == ("in_progress", "new-worker")
    with engine.begin() as conn:
        assert SyncQueue.ack(conn, [current]) == 1


def test_a_record_is_never_held_by_two_workers_nor_claimed_twice_at_once(engine: Engine) -> None:
    _, [customer_id] = _customers(engine, 1)
    queue = SyncQueue(engine)
    [held] = queue.claim("worker-a", limit=10, lease=LEASE)

    def edit(note: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.update(s.customers).where(s.customers.c.id == customer_id).values(notes=note))

    edit("edited while worker-a pushes")
    assert queue.claim("worker-b", limit=10, lease=LEASE) == [], "the newer edit waits for the held row"
    # worker-a crashes; after its lease the oldest row is taken over, alone
    [taken_over] = queue.claim("worker-b", limit=10, lease=LEASE, now=utcnow() + LEASE * 2)
    assert taken_over.id == held.id
    with engine.begin() as conn:
        SyncQueue.ack(conn, [taken_over])
    [latest] = queue.claim("worker-b", limit=10, lease=LEASE)
    assert latest.entity_id == customer_id and latest.id != held.id and latest.operation == "update"


def test_retrying_a_dead_row_folds_into_a_newer_pending_edit(engine: Engine) -> None:
    _, [customer_id] = _customers(engine, 1)
    queue = SyncQueue(engine)
    [item] = queue.claim("w", limit=1, lease=LEASE)
    queue.count_attempts([item])
    queue.fail(item, "customers.display_name: contains ':'", retryable=False)
    with engine.begin() as conn:
        conn.execute(
            sa.update(s.customers).where(s.customers.c.id == customer_id).values(display_name="Fixed")
        )
    assert queue.retry_dead() == 1
    with engine.connect() as conn:
        rows = f.queue_rows(conn)
    assert [(r["status"], r["attempts"], r["change_count"]) for r in rows] == [
        ("done", 1, 1),
        ("pending", 0, 2),
    ]
    assert queue.depth()[rows[0]["organization_id"]]["dead"] == 0


def test_a_live_worker_renews_its_leases_and_only_its_own(engine: Engine) -> None:
    _customers(engine, 2)
    queue = SyncQueue(engine)
    now = utcnow()
    [mine] = queue.claim("alive", limit=1, lease=LEASE, now=now)
    [theirs] = queue.claim("crashed", limit=1, lease=LEASE, now=now)
    assert queue.renew_leases("alive", LEASE, now=now + LEASE / 2) == 1
    later = now + LEASE + timedelta(seconds=1)
    assert [item.id for item in queue.claim("other", limit=10, lease=LEASE, now=later)] == [theirs.id]
    assert mine.id != theirs.id


def test_expedite_makes_backed_off_rows_due_now(engine: Engine) -> None:
    org, ids = _customers(engine, 2)
    queue = SyncQueue(engine, RetryPolicy(base_delay=timedelta(hours=1)))
    for item in queue.claim("w", limit=2, lease=LEASE):
        queue.fail(item, "HTTP 503")
    assert queue.claim("w", limit=2, lease=LEASE) == []
    assert queue.expedite(org, "customer", [ids[1]]) == 1
    assert [item.entity_id for item in queue.claim("w", limit=2, lease=LEASE)] == [ids[1]]
