"""The wire format: QuickBooks timestamps, deterministic ``requestid`` idempotency keys and batch item ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.quickbooks.wire import (
    BATCH_MAX,
    assign_batch_ids,
    batch_request_id,
    format_qbo_time,
    qbo_last_updated,
    qbo_time,
    request_id,
)
from batchly_pipelines_tests.support.strategies import SETTINGS, utc_times

parts = st.tuples(
    st.sampled_from(["create", "update", "void"]),
    st.sampled_from(["customer", "item", "invoice"]),
    st.one_of(st.integers(), st.text(max_size=8)),
    st.one_of(st.integers(), st.text(max_size=8)),
)


@pytest.mark.parametrize(
    "text",
    [
        "2014-09-18T12:49:42-07:00",
        "2014-09-18T19:49:42Z",
        "2014-09-18T21:49:42+02:00",
        "2014-09-18T12:49:42.000-07:00",
    ],
)
def test_qbo_time_returns_utc(text: str) -> None:
    parsed = qbo_time(text)
    assert parsed == datetime(2014, 9, 18, 19, 49, 42, tzinfo=UTC)
    assert parsed.utcoffset() is not None and parsed.tzinfo is UTC


def test_qbo_time_refuses_naive_timestamps() -> None:
    with pytest.raises(ValueError):
        qbo_time("2014-09-18T12:49:42")
    with pytest.raises(ValueError):
        format_qbo_time(datetime(2014, 9, 18))


def test_qbo_last_updated() -> None:
    customer = {"Id": "58", "MetaData": {"LastUpdatedTime": "2014-09-18T12:49:42-07:00"}}
    assert qbo_last_updated(customer) == datetime(2014, 9, 18, 19, 49, 42, tzinfo=UTC)


@SETTINGS
@given(utc_times)
def test_format_qbo_time_round_trips_at_second_precision(moment: datetime) -> None:
    assert qbo_time(format_qbo_time(moment)) == moment.replace(microsecond=0)


@SETTINGS
@given(parts, parts)
def test_request_ids_are_stable_short_and_distinct_per_logical_write(
    a: tuple[str, str, object, object], b: tuple[str, str, object, object]
) -> None:
    assert request_id(*a) == request_id(*a)
    assert len(request_id(*a)) <= 36
    if tuple(map(str, a)) != tuple(map(str, b)):
        assert request_id(*a) != request_id(*b)


def test_request_id_is_pinned_across_releases() -> None:
    # A retry after an upgrade must still reuse the id the first attempt sent.
    assert request_id("create", "invoice", 42, 1) == "1d8a79fa-06a8-555b-b1c5-9ca67b7f7d75"


def test_a_new_version_gets_a_new_id() -> None:
    assert request_id("update", "customer", 1, 3) != request_id("update", "customer", 1, 4)


def test_separators_cannot_make_two_writes_collide() -> None:
    assert request_id("create", "invoice", "1:2", "3") != request_id("create", "invoice", "1", "2:3")


def test_batch_request_id_depends_on_the_items_and_their_order() -> None:
    ids = [request_id("create", "invoice", n, 1) for n in range(3)]
    assert batch_request_id(ids) == batch_request_id(list(ids))
    assert batch_request_id(ids) != batch_request_id(ids[::-1])
    assert batch_request_id(ids) != batch_request_id(ids[:2])
    assert len(batch_request_id(ids)) <= 36


def test_batch_ids() -> None:
    keys = [("invoice", n) for n in range(BATCH_MAX)]
    bids = assign_batch_ids(keys)
    assert list(bids.values()) == keys
    assert all(len(bid) <= 10 for bid in bids)
    with pytest.raises(ValueError, match="at most 30"):
        assign_batch_ids([*keys, ("invoice", 99)])
    with pytest.raises(ValueError, match="twice"):
        assign_batch_ids([("invoice", 1), ("invoice", 1)])
