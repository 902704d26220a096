"""Field-level three-way merge of a Batchly record and its QuickBooks twin against their last agreed state.

For each synced field, with ``base`` the last agreed value, ``b`` the Batchly and ``q`` the QuickBooks value:

- ``b == q``: nothing to do; the base moves to that value (the same change on both sides is no conflict);
- ``newest_wins`` / ``needs_review``: a field changed on one side only is taken from that side. Changed on
  both sides, ``newest_wins`` takes the side that changed *that field* later — per-field change times
  (``batchly_changed_at``, ``qbo_changed_at``; a field without one falls back to its record's update time) —
  compared at second precision (QuickBooks times have no fractions), a tie going to QuickBooks;
  ``needs_review`` changes neither side, reports a pending conflict and keeps the old base for that field;
- ``batchly_owns`` / ``qbo_owns``: the owner's value always prevails; an edit made on the other side is
  reverted and reported as a conflict resolved for the owner.

A cleared value (``None``) is a value like any other: clearing a field is a change of it.

Without an agreed value (first link, or a field pending since the first link) a difference counts as a
change on both sides and is settled like any other: ``newest_wins`` gives it to the side that changed the
field later, ``needs_review`` leaves it pending, ownership gives it to the owner; each is reported as a
``first_link`` conflict.

Pending conflicts are reported again by every merge until resolved (see :func:`resolve_field`); the caller
keeps one open conflict row per record and field. Values must be normalised (``sync.mapping``) so that
equal means equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS, ITEM_FIELDS


class Rule(StrEnum):
    """How a field is settled when the two sides disagree."""

    NEWEST_WINS = "newest_wins"
    NEEDS_REVIEW = "needs_review"
    BATCHLY_OWNS = "batchly_owns"
    QBO_OWNS = "qbo_owns"


class Resolution(StrEnum):
    """Which side a conflict was settled for."""

    BATCHLY = "batchly"
    QUICKBOOKS = "quickbooks"
    PENDING_REVIEW = "pending_review"


class ConflictReason(StrEnum):
    """Why a conflict was reported."""

    BOTH_CHANGED = "both_changed"
    FIRST_LINK = "first_link"
    OWNED_FIELD = "owned_field"


@dataclass(frozen=True)
class MergePolicy:
    """The synced fields of an entity and the rule for each (``default`` unless overridden)."""

    entity: str
    fields: tuple[str, ...]
    default: Rule = Rule.NEWEST_WINS
    overrides: Mapping[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.overrides) - set(self.fields)
        if unknown:
            raise ValueError(f"{self.entity} does not sync fields {sorted(unknown)}")
        rules = {name: Rule(rule) for name, rule in self.overrides.items()}
        object.__setattr__(self, "default", Rule(self.default))
        object.__setattr__(self, "overrides", MappingProxyType(rules))

    def rule_for(self, name: str) -> Rule:
        """The rule for field ``name``."""
        return self.overrides.get(name, self.default)

    def with_rules(self, **rules: Rule | str) -> MergePolicy:
        """A copy of this policy with the given per-field rules, e.g. ``with_rules(notes="needs_review")``."""
        overrides = {**self.overrides, **{name: Rule(rule) for name, rule in rules.items()}}
        return MergePolicy(self.entity, self.fields, self.default, overrides)


CUSTOMER_POLICY = MergePolicy("customer", CUSTOMER_FIELDS)
ITEM_POLICY = MergePolicy("item", ITEM_FIELDS, Rule.QBO_OWNS, {"description": Rule.BATCHLY_OWNS})


@dataclass(frozen=True)
class Conflict:
    """A field on which the two sides disagreed, with the values seen and how it was settled."""

    entity: str
    field: str
    base_value: Any
    batchly_value: Any
    qbo_value: Any
    resolution: Resolution
    reason: ConflictReason


@dataclass(frozen=True)
class MergeResult:
    """What a merge decided: changes to write to Batchly, a sparse update for QuickBooks, the new base."""

    to_batchly: Mapping[str, Any]
    to_qbo: Mapping[str, Any]
    base: Mapping[str, Any]
    conflicts: tuple[Conflict, ...] = ()

    @property
    def changed(self) -> bool:
        """True when either side has something to apply."""
        return bool(self.to_batchly or self.to_qbo)

    @property
    def pending_fields(self) -> frozenset[str]:
        """Fields left for manual review."""
        return frozenset(c.field for c in self.conflicts if c.resolution is Resolution.PENDING_REVIEW)


_NO_BASE: Any = object()


def merge(
    base: Mapping[str, Any] | None,
    batchly: Mapping[str, Any],
    qbo: Mapping[str, Any],
    *,
    batchly_updated_at: datetime,
    qbo_updated_at: datetime,
    policy: MergePolicy,
    batchly_changed_at: Mapping[str, datetime] | None = None,
    qbo_changed_at: Mapping[str, datetime] | None = None,
) -> MergeResult:
    """Three-way merge of the synced fields of one linked record (``base`` is ``None`` before any sync).

    ``batchly`` and ``qbo`` must hold every field of the policy; ``base`` may lack fields never agreed on.
    ``batchly_changed_at`` / ``qbo_changed_at`` say when each field last changed on that side; a field they
    lack changed when its record was last updated (``batchly_updated_at`` / ``qbo_updated_at``).
    """
    _seconds(batchly_updated_at), _seconds(qbo_updated_at)  # both must be timezone-aware
    batchly_times, qbo_times = batchly_changed_at or {}, qbo_changed_at or {}
    base = base or {}
    to_batchly: dict[str, Any] = {}
    to_qbo: dict[str, Any] = {}
    new_base: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    for name in policy.fields:
        was = base.get(name, _NO_BASE)
        batchly_value, qbo_value = _value(batchly, name, "Batchly"), _value(qbo, name, "QuickBooks")
        if batchly_value == qbo_value:
            new_base[name] = batchly_value
            continue
        rule = policy.rule_for(name)
        first_link = was is _NO_BASE
        batchly_changed, qbo_changed = batchly_value != was, qbo_value != was  # nothing equals _NO_BASE
        reason = ConflictReason.FIRST_LINK if first_link else ConflictReason.BOTH_CHANGED
        if rule in (Rule.BATCHLY_OWNS, Rule.QBO_OWNS):
            resolution = Resolution.BATCHLY if rule is Rule.BATCHLY_OWNS else Resolution.QUICKBOOKS
            conflicted = qbo_changed if resolution is Resolution.BATCHLY else batchly_changed
            reason = reason if first_link else ConflictReason.OWNED_FIELD
        elif not (batchly_changed and qbo_changed):
            resolution = Resolution.BATCHLY if batchly_changed else Resolution.QUICKBOOKS
            conflicted = False
        elif rule is Rule.NEEDS_REVIEW:
            resolution, conflicted = Resolution.PENDING_REVIEW, True
        else:
            batchly_at = _seconds(batchly_times.get(name, batchly_updated_at))
            qbo_at = _seconds(qbo_times.get(name, qbo_updated_at))
            resolution = Resolution.BATCHLY if batchly_at > qbo_at else Resolution.QUICKBOOKS
            conflicted = True
        if conflicted:
            conflicts.append(
                Conflict(
                    policy.entity,
                    name,
                    None if first_link else was,
                    batchly_value,
                    qbo_value,
                    resolution,
                    reason,
                )
            )
        if resolution is Resolution.BATCHLY:
            to_qbo[name] = new_base[name] = batchly_value
        elif resolution is Resolution.QUICKBOOKS:
            to_batchly[name] = new_base[name] = qbo_value
        elif not first_link:
            new_base[name] = was
    return MergeResult(
        MappingProxyType(to_batchly), MappingProxyType(to_qbo), MappingProxyType(new_base), tuple(conflicts)
    )


def changes_to_push(
    base: Mapping[str, Any] | None,
    batchly: Mapping[str, Any],
    *,
    policy: MergePolicy,
    pending: Iterable[str] = (),
) -> dict[str, Any]:
    """What Batchly sends without reading QuickBooks first: every field for a create (no base), else a sparse
    update of the fields changed since the base, except fields QuickBooks owns and fields awaiting review
    (``pending``, or without an agreed value). Send it with the base's SyncToken: a 5010 means QuickBooks
    changed meanwhile, so re-read and :func:`merge`."""
    if base is None:
        return {name: batchly[name] for name in policy.fields}
    held = set(pending)
    return {
        name: batchly[name]
        for name in policy.fields
        if policy.rule_for(name) is not Rule.QBO_OWNS
        and name in base
        and name not in held
        and batchly[name] != base[name]
    }


def owned_reverts(
    base: Mapping[str, Any] | None,
    batchly: Mapping[str, Any],
    qbo: Mapping[str, Any],
    *,
    policy: MergePolicy,
) -> MergeResult:
    """Batchly edits of fields QuickBooks owns, put back to QuickBooks' value (``qbo``; the push, which does
    not read QuickBooks, passes the base). Each is an ``owned_field`` conflict settled for QuickBooks: the
    push never sends such an edit and the pull reverts it, whether or not QuickBooks changed meanwhile.
    ``base`` is a patch (the reverted fields at QuickBooks' value); fields ``qbo`` lacks are left alone."""
    base = base or {}
    to_batchly: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    for name in policy.fields:
        if policy.rule_for(name) is not Rule.QBO_OWNS or name not in qbo or batchly[name] == qbo[name]:
            continue
        if name in base and batchly[name] == base[name]:
            continue  # QuickBooks changed it, Batchly did not: the merge takes it, no conflict
        to_batchly[name] = qbo[name]
        conflicts.append(
            Conflict(
                policy.entity,
                name,
                base.get(name),
                batchly[name],
                qbo[name],
                Resolution.QUICKBOOKS,
                ConflictReason.OWNED_FIELD,
            )
        )
    return MergeResult(
        MappingProxyType(to_batchly),
        MappingProxyType({}),
        MappingProxyType(dict(to_batchly)),
        tuple(conflicts),
    )


def resolve_field(name: str, chosen: Any, *, batchly_value: Any, qbo_value: Any) -> MergeResult:
    """Settle a reviewed field on ``chosen``: write it to each side that differs; ``base`` is a patch."""
    return MergeResult(
        MappingProxyType({name: chosen} if batchly_value != chosen else {}),
        MappingProxyType({name: chosen} if qbo_value != chosen else {}),
        MappingProxyType({name: chosen}),
    )


def _value(fields: Mapping[str, Any], name: str, side: str) -> Any:
    try:
        return fields[name]
    except KeyError:
        raise KeyError(f"{side} fields lack synced field {name!r}") from None


def _seconds(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("merge timestamps must be timezone-aware")
    return moment.replace(microsecond=0)
