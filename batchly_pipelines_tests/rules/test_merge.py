from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS
from batchly_pipelines.rules.merge import (
    CUSTOMER_POLICY,
    ITEM_POLICY,
    Conflict,
    ConflictReason,
    MergePolicy,
    MergeResult,
    Resolution,
    Rule,
    changes_to_push,
    merge,
    owned_reverts,
    resolve_field,
)
from batchly_pipelines_tests.support.strategies import SETTINGS, utc_times

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
FIELDS = ("a", "b", "c", "d")
VALUES = st.sampled_from([None, "x", "y", "z"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """A policy with random per-field rules, a (possibly partial or missing) base and both sides."""
    rules = {name: draw(st.sampled_from(list(Rule))) for name in FIELDS}
    policy = MergePolicy("thing", FIELDS, overrides=rules)
    base = draw(st.none() | st.dictionaries(st.sampled_from(FIELDS), VALUES))
    batchly = {name: draw(VALUES) for name in FIELDS}
    qbo = {name: draw(VALUES) for name in FIELDS}
    return policy, base, batchly, qbo


def run(
    base: Mapping[str, Any] | None,
    batchly: dict[str, Any],
    qbo: dict[str, Any],
    *,
    policy: MergePolicy = CUSTOMER_POLICY,
    batchly_at: datetime = T0,
    qbo_at: datetime = T0,
) -> MergeResult:
    return merge(base, batchly, qbo, batchly_updated_at=batchly_at, qbo_updated_at=qbo_at, policy=policy)


def customer(**values: Any) -> dict[str, Any]:
    return dict.fromkeys(CUSTOMER_FIELDS) | {"is_active": True} | values


@SETTINGS
@given(scenarios(), utc_times, utc_times, utc_times, utc_times)
def test_merging_the_produced_state_again_changes_nothing(
    scenario: tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]],
    batchly_at: datetime,
    qbo_at: datetime,
    batchly_at_2: datetime,
    qbo_at_2: datetime,
) -> None:
    policy, base, batchly, qbo = scenario
    first = run(base, batchly, qbo, policy=policy, batchly_at=batchly_at, qbo_at=qbo_at)
    batchly_after, qbo_after = batchly | dict(first.to_batchly), qbo | dict(first.to_qbo)
    second = run(
        first.base, batchly_after, qbo_after, policy=policy, batchly_at=batchly_at_2, qbo_at=qbo_at_2
    )
    assert not second.changed
    assert second.base == first.base
    assert all(c.resolution is Resolution.PENDING_REVIEW for c in second.conflicts)
    assert second.pending_fields == first.pending_fields


@SETTINGS
@given(scenarios(), utc_times, utc_times)
def test_after_applying_both_sides_agree_with_the_new_base_except_pending_fields(
    scenario: tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]],
    batchly_at: datetime,
    qbo_at: datetime,
) -> None:
    policy, base, batchly, qbo = scenario
    result = run(base, batchly, qbo, policy=policy, batchly_at=batchly_at, qbo_at=qbo_at)
    batchly_after, qbo_after = batchly | dict(result.to_batchly), qbo | dict(result.to_qbo)
    for name in FIELDS:
        if name in result.pending_fields:
            assert name not in result.to_batchly and name not in result.to_qbo
            assert result.base.get(name, "<none>") == (base or {}).get(name, "<none>")
        else:
            assert batchly_after[name] == qbo_after[name] == result.base[name]
    # Updates are minimal: only real differences, never to both sides.
    assert all(batchly[name] != value for name, value in result.to_batchly.items())
    assert all(qbo[name] != value for name, value in result.to_qbo.items())
    assert not set(result.to_batchly) & set(result.to_qbo)
    # Nothing is invented: Batchly only receives QuickBooks values and vice versa.
    assert all(value == qbo[name] for name, value in result.to_batchly.items())
    assert all(value == batchly[name] for name, value in result.to_qbo.items())
    assert len({c.field for c in result.conflicts}) == len(result.conflicts)


@SETTINGS
@given(scenarios(), utc_times, utc_times)
def test_a_one_sided_edit_is_never_lost(
    scenario: tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]],
    batchly_at: datetime,
    qbo_at: datetime,
) -> None:
    policy, base, batchly, qbo = scenario
    result = run(base, batchly, qbo, policy=policy, batchly_at=batchly_at, qbo_at=qbo_at)
    for name in FIELDS:
        if base is None or name not in base:
            continue
        rule = policy.rule_for(name)
        batchly_only = batchly[name] != base[name] and qbo[name] == base[name]
        qbo_only = qbo[name] != base[name] and batchly[name] == base[name]
        if batchly_only and rule is not Rule.QBO_OWNS:
            assert result.to_qbo[name] == batchly[name] == result.base[name]
        if qbo_only and rule is not Rule.BATCHLY_OWNS:
            assert result.to_batchly[name] == qbo[name] == result.base[name]
        if (batchly_only or qbo_only) and rule in (Rule.NEWEST_WINS, Rule.NEEDS_REVIEW):
            assert name not in {c.field for c in result.conflicts}


@SETTINGS
@given(scenarios())
def test_fields_equal_on_both_sides_never_conflict(
    scenario: tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]],
) -> None:
    policy, base, batchly, _ = scenario
    result = run(base, batchly, dict(batchly), policy=policy)
    assert not result.changed and not result.conflicts
    assert result.base == batchly


def test_different_fields_edited_on_each_side_are_both_kept() -> None:
    base = customer(display_name="Acme", email="old@acme.test", phone="1")
    result = run(
        base,
        base | {"email": "new@acme.test"},
        base | {"phone": "2"},
        batchly_at=T0,
        qbo_at=T0 + timedelta(hours=1),
    )
    assert result.to_qbo == {"email": "new@acme.test"}
    assert result.to_batchly == {"phone": "2"}
    assert result.conflicts == ()
    assert result.base == base | {"email": "new@acme.test", "phone": "2"}


def test_same_field_changed_on_both_sides_goes_to_the_newer_and_is_logged() -> None:
    base = customer(display_name="Acme", notes="base")
    result = run(
        base,
        base | {"notes": "batchly"},
        base | {"notes": "qbo"},
        batchly_at=T0 + timedelta(seconds=5),
        qbo_at=T0,
    )
    assert result.to_qbo == {"notes": "batchly"} and result.to_batchly == {}
    assert result.conflicts == (
        Conflict(
            "customer", "notes", "base", "batchly", "qbo", Resolution.BATCHLY, ConflictReason.BOTH_CHANGED
        ),
    )
    assert result.base["notes"] == "batchly"


def test_qbo_newer_wins() -> None:
    base = customer(notes="base")
    result = run(
        base, base | {"notes": "b"}, base | {"notes": "q"}, batchly_at=T0, qbo_at=T0 + timedelta(seconds=1)
    )
    assert result.to_batchly == {"notes": "q"}
    assert result.conflicts[0].resolution is Resolution.QUICKBOOKS


def test_a_tie_within_the_same_second_goes_to_quickbooks() -> None:
    base = customer(notes="base")
    batchly_at = T0 + timedelta(microseconds=900_000)  # QuickBooks cannot say anything finer than T0
    result = run(base, base | {"notes": "b"}, base | {"notes": "q"}, batchly_at=batchly_at, qbo_at=T0)
    assert result.to_batchly == {"notes": "q"} and result.to_qbo == {}
    assert result.conflicts[0].resolution is Resolution.QUICKBOOKS


def test_timestamps_in_other_offsets_compare_as_instants() -> None:
    from zoneinfo import ZoneInfo

    base = customer(notes="base")
    qbo_at = datetime(2026, 5, 1, 6, 0, 1, tzinfo=ZoneInfo("America/Chicago"))  # 11:00:01 UTC
    result = run(base, base | {"notes": "b"}, base | {"notes": "q"}, batchly_at=T0, qbo_at=qbo_at)
    assert result.to_qbo == {"notes": "b"}


def test_needs_review_changes_neither_side_and_keeps_the_base() -> None:
    policy = CUSTOMER_POLICY.with_rules(notes="needs_review")
    base = customer(notes="base")
    result = run(
        base, base | {"notes": "b"}, base | {"notes": "q"}, policy=policy, batchly_at=T0 + timedelta(1)
    )
    assert not result.changed
    assert result.base["notes"] == "base"
    assert result.conflicts == (
        Conflict(
            "customer", "notes", "base", "b", "q", Resolution.PENDING_REVIEW, ConflictReason.BOTH_CHANGED
        ),
    )
    assert result.pending_fields == {"notes"}
    assert CUSTOMER_POLICY.rule_for("notes") is Rule.NEWEST_WINS  # with_rules made a copy


def test_first_link_gives_each_differing_field_to_the_newer_side_with_conflicts() -> None:
    """Issue 10 failure 8: the first link used to give every difference to QuickBooks, wiping Batchly-only values
    (phone, notes, city) even when Batchly was newer."""
    batchly = customer(display_name="Acme", phone="555", notes="ours", bill_city="Boise")
    qbo = customer(display_name="Acme", notes="theirs")
    newer_in_batchly = run(None, batchly, qbo, batchly_at=T0 + timedelta(days=1))
    assert newer_in_batchly.to_qbo == {"phone": "555", "notes": "ours", "bill_city": "Boise"}
    assert newer_in_batchly.to_batchly == {}
    assert {(c.field, c.base_value, c.resolution, c.reason) for c in newer_in_batchly.conflicts} == {
        ("phone", None, Resolution.BATCHLY, ConflictReason.FIRST_LINK),
        ("notes", None, Resolution.BATCHLY, ConflictReason.FIRST_LINK),
        ("bill_city", None, Resolution.BATCHLY, ConflictReason.FIRST_LINK),
    }
    assert newer_in_batchly.base == batchly
    newer_in_qbo = run(None, batchly, qbo, qbo_at=T0 + timedelta(days=1))
    assert newer_in_qbo.to_batchly == {"phone": None, "notes": "theirs", "bill_city": None}
    assert newer_in_qbo.base == qbo


def test_first_link_decides_per_field_by_when_each_side_changed_it() -> None:
    batchly = customer(display_name="Acme", phone="555", notes="ours")
    qbo = customer(display_name="Acme", notes="theirs")
    result = merge(
        None,
        batchly,
        qbo,
        batchly_updated_at=T0 + timedelta(days=2),
        qbo_updated_at=T0 + timedelta(days=1),
        batchly_changed_at={"phone": T0 + timedelta(days=2), "notes": T0},
        policy=CUSTOMER_POLICY,
    )
    assert result.to_qbo == {"phone": "555"} and result.to_batchly == {"notes": "theirs"}


def test_newest_wins_per_field_not_by_the_records_last_update() -> None:
    """Batchly edited notes first, QuickBooks then edited notes, then Batchly edited the phone: the record is newer
    in Batchly, but QuickBooks' notes are the newer notes."""
    base = customer(notes="base", phone="1")
    batchly, qbo = base | {"notes": "b", "phone": "2"}, base | {"notes": "q"}
    times = {"notes": T0, "phone": T0 + timedelta(minutes=10)}
    result = merge(
        base,
        batchly,
        qbo,
        batchly_updated_at=T0 + timedelta(minutes=10),
        qbo_updated_at=T0 + timedelta(minutes=5),
        batchly_changed_at=times,
        policy=CUSTOMER_POLICY,
    )
    assert result.to_batchly == {"notes": "q"} and result.to_qbo == {"phone": "2"}
    assert [(c.field, c.resolution) for c in result.conflicts] == [("notes", Resolution.QUICKBOOKS)]
    by_qbo_field_time = merge(
        base,
        batchly,
        qbo,
        batchly_updated_at=T0 + timedelta(minutes=10),
        qbo_updated_at=T0 + timedelta(minutes=5),
        batchly_changed_at=times | {"notes": T0 + timedelta(minutes=3)},
        qbo_changed_at={"notes": T0 + timedelta(minutes=1)},
        policy=CUSTOMER_POLICY,
    )
    assert by_qbo_field_time.to_qbo == {"notes": "b", "phone": "2"}


def test_a_value_cleared_on_one_side_is_a_change_like_any_other() -> None:
    base = customer(notes="base", phone="555")
    cleared_in_qbo = run(base, base | {"notes": "new"}, base | {"phone": None})
    assert cleared_in_qbo.to_batchly == {"phone": None} and cleared_in_qbo.to_qbo == {"notes": "new"}
    assert cleared_in_qbo.base["phone"] is None
    cleared_in_batchly = run(base, base | {"phone": None}, base)
    assert cleared_in_batchly.to_qbo == {"phone": None}


def test_owned_reverts_put_batchly_edits_of_quickbooks_fields_back() -> None:
    base: dict[str, Any] = {"name": "Hose", "sku": "H-1", "description": "d", "unit_price": Decimal("10.00")}
    base |= {"item_type": "Service", "is_active": True}
    edited = base | {"name": "Hose XL", "sku": None, "unit_price": Decimal("1.00"), "description": "new"}
    qbo = base | {"unit_price": Decimal("11.00"), "is_active": False}  # QuickBooks moved on meanwhile
    result = owned_reverts(base, edited, qbo, policy=ITEM_POLICY)
    assert result.to_batchly == {"name": "Hose", "sku": "H-1", "unit_price": Decimal("11.00")}
    assert (
        result.to_qbo == {} and result.base == result.to_batchly
    )  # is_active: QuickBooks' change, no conflict
    assert {(c.field, c.batchly_value, c.qbo_value, c.resolution, c.reason) for c in result.conflicts} == {
        ("name", "Hose XL", "Hose", Resolution.QUICKBOOKS, ConflictReason.OWNED_FIELD),
        ("sku", None, "H-1", Resolution.QUICKBOOKS, ConflictReason.OWNED_FIELD),
        ("unit_price", Decimal("1.00"), Decimal("11.00"), Resolution.QUICKBOOKS, ConflictReason.OWNED_FIELD),
    }
    assert not owned_reverts(base, base, base, policy=ITEM_POLICY).conflicts
    assert not owned_reverts(None, customer(notes="x"), customer(), policy=CUSTOMER_POLICY).conflicts


def test_first_link_with_review_leaves_the_field_without_a_base() -> None:
    policy = CUSTOMER_POLICY.with_rules(notes=Rule.NEEDS_REVIEW)
    result = run(None, customer(notes="ours"), customer(notes="theirs"), policy=policy)
    assert not result.changed
    assert "notes" not in result.base
    assert result.pending_fields == {"notes"}


def test_item_price_from_quickbooks_and_description_from_batchly_merge_without_conflict() -> None:
    base = {
        "name": "Hose",
        "sku": "H-1",
        "description": "Green",
        "unit_price": Decimal("10.00"),
        "item_type": "NonInventory",
        "is_active": True,
    }
    result = run(
        base,
        base | {"description": "Green, 20 m"},
        base | {"unit_price": Decimal("12.50")},
        policy=ITEM_POLICY,
        batchly_at=T0 + timedelta(hours=2),
    )
    assert result.to_batchly == {"unit_price": Decimal("12.50")}
    assert result.to_qbo == {"description": "Green, 20 m"}
    assert result.conflicts == ()


@pytest.mark.parametrize(
    ("field", "edited", "owner"),
    [("unit_price", Decimal("1.00"), Resolution.QUICKBOOKS), ("is_active", False, Resolution.QUICKBOOKS)],
)
def test_a_batchly_edit_of_a_quickbooks_owned_item_field_is_reverted(
    field: str, edited: Any, owner: Resolution
) -> None:
    base: dict[str, Any] = {"name": "Hose", "sku": None, "description": None, "unit_price": Decimal("10.00")}
    base |= {"item_type": "Service", "is_active": True}
    result = run(base, base | {field: edited}, base, policy=ITEM_POLICY, batchly_at=T0 + timedelta(days=1))
    assert result.to_batchly == {field: base[field]} and result.to_qbo == {}
    (conflict,) = result.conflicts
    assert (conflict.field, conflict.resolution, conflict.reason) == (
        field,
        owner,
        ConflictReason.OWNED_FIELD,
    )


def test_a_quickbooks_edit_of_the_batchly_owned_description_is_reverted() -> None:
    base: dict[str, Any] = {"name": "Hose", "sku": None, "description": "ours", "unit_price": None}
    base |= {"item_type": "Service", "is_active": True}
    result = run(
        base, base, base | {"description": "theirs"}, policy=ITEM_POLICY, qbo_at=T0 + timedelta(days=1)
    )
    assert result.to_qbo == {"description": "ours"} and result.to_batchly == {}
    assert result.conflicts[0].resolution is Resolution.BATCHLY


def test_item_policy_ownership() -> None:
    owned_by_qbo = {name for name in ITEM_POLICY.fields if ITEM_POLICY.rule_for(name) is Rule.QBO_OWNS}
    assert owned_by_qbo == {"name", "sku", "unit_price", "is_active", "item_type"}
    assert ITEM_POLICY.rule_for("description") is Rule.BATCHLY_OWNS
    assert {CUSTOMER_POLICY.rule_for(name) for name in CUSTOMER_FIELDS} == {Rule.NEWEST_WINS}


def test_policy_refuses_rules_for_unknown_fields_and_unknown_rules() -> None:
    with pytest.raises(ValueError, match="balance"):
        CUSTOMER_POLICY.with_rules(balance="needs_review")
    with pytest.raises(ValueError):
        CUSTOMER_POLICY.with_rules(notes="coin_flip")


def test_merge_refuses_naive_times_and_incomplete_sides() -> None:
    with pytest.raises(ValueError, match="timezone"):
        run(None, customer(), customer(), batchly_at=datetime(2026, 1, 1))
    incomplete = customer()
    del incomplete["notes"]
    with pytest.raises(KeyError, match="notes"):
        run(None, customer(), incomplete)


def test_resolve_field_writes_the_choice_to_the_sides_that_differ() -> None:
    chosen = resolve_field("notes", "b", batchly_value="b", qbo_value="q")
    assert chosen.to_batchly == {} and chosen.to_qbo == {"notes": "b"} and chosen.base == {"notes": "b"}
    explicit = resolve_field("notes", "agreed", batchly_value="b", qbo_value="q")
    assert explicit.to_batchly == {"notes": "agreed"} == explicit.to_qbo


def test_a_resolved_review_field_stops_being_pending() -> None:
    policy = CUSTOMER_POLICY.with_rules(notes="needs_review")
    base = customer(notes="base")
    batchly, qbo = base | {"notes": "b"}, base | {"notes": "q"}
    pending = run(base, batchly, qbo, policy=policy)
    resolved = resolve_field("notes", "q", batchly_value="b", qbo_value="q")
    after = run(
        dict(pending.base) | dict(resolved.base),
        batchly | dict(resolved.to_batchly),
        qbo | dict(resolved.to_qbo),
        policy=policy,
    )
    assert not after.changed and not after.conflicts


@SETTINGS
@given(scenarios(), st.data())
def test_changes_to_push_are_what_a_merge_would_send_if_quickbooks_had_not_changed(
    scenario: tuple[MergePolicy, dict[str, Any] | None, dict[str, Any], dict[str, Any]], data: st.DataObject
) -> None:
    policy, _, batchly, _ = scenario
    base = {name: data.draw(VALUES) for name in FIELDS}
    assert changes_to_push(base, batchly, policy=policy) == run(base, batchly, base, policy=policy).to_qbo


def test_changes_to_push_creates_with_every_field() -> None:
    fields = customer(display_name="Acme")
    assert changes_to_push(None, fields, policy=CUSTOMER_POLICY) == fields


def test_changes_to_push_skips_owned_pending_and_unagreed_fields() -> None:
    item: dict[str, Any] = {"name": "Hose", "sku": None, "description": "new", "unit_price": Decimal("9.00")}
    item |= {"item_type": "Service", "is_active": True}
    base = item | {"description": "old", "unit_price": Decimal("10.00")}
    assert changes_to_push(base, item, policy=ITEM_POLICY) == {"description": "new"}
    edited = customer(notes="new", email="new@x.test", phone="2")
    agreed = customer(notes="old", email="old@x.test")
    del agreed["phone"]
    assert changes_to_push(agreed, edited, policy=CUSTOMER_POLICY, pending=["notes"]) == {
        "email": "new@x.test"
    }
