"""The synced QuickBooks name lists (Customer, Item): one spec each, used by the pull and the push alike."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from batchly_pipelines.rules.mapping import CUSTOMER_MAPPING, ITEM_MAPPING, EntityMapping
from batchly_pipelines.rules.matching import Match, match_customer, match_item
from batchly_pipelines.rules.merge import CUSTOMER_POLICY, ITEM_POLICY, MergePolicy
from batchly_pipelines.rules.validation import ValidationIssue, validate_customer, validate_item

Candidates = Mapping[Hashable, Mapping[str, Any]]
Matcher = Callable[[Mapping[str, Any], Candidates], Match | None]


@dataclass(frozen=True)
class NameList:
    """How one QuickBooks name list is named on both sides, mapped, merged, matched and validated."""

    entity_type: str  # Batchly: customer | item
    qbo_entity: str  # QuickBooks: Customer | Item
    name_field: str  # the QuickBooks field that must be unique
    mapping: EntityMapping
    policy: MergePolicy
    matcher: Matcher  # a pulled record against unlinked Batchly records of the same name
    validate: Callable[[Mapping[str, Any]], list[ValidationIssue]]

    @property
    def name_column(self) -> str:
        """The Batchly column that ``name_field`` maps to."""
        return next(spec.column for spec in self.mapping.specs if spec.path == (self.name_field,))


CUSTOMERS = NameList(
    "customer",
    "Customer",
    "DisplayName",
    CUSTOMER_MAPPING,
    CUSTOMER_POLICY,
    match_customer,
    validate_customer,
)
ITEMS = NameList("item", "Item", "Name", ITEM_MAPPING, ITEM_POLICY, match_item, validate_item)
NAME_LISTS: Mapping[str, NameList] = {kind.entity_type: kind for kind in (CUSTOMERS, ITEMS)}
