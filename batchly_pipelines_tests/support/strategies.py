"""Hypothesis strategies and settings shared by the sync tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ITEM_TYPES = ("Service", "NonInventory", "Inventory")

# Raw text as Batchly or QuickBooks may hold it: empty, padded, unicode.
raw_text = st.one_of(st.none(), st.just(""), st.just("  "), st.text(max_size=12))
money = st.decimals(
    min_value=0, max_value=Decimal("999999.99"), places=2, allow_nan=False, allow_infinity=False
)
utc_times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


def customer_rows() -> st.SearchStrategy[dict[str, Any]]:
    """Raw ``customers`` rows (synced columns only)."""
    columns = {name: raw_text for name in CUSTOMER_FIELDS if name != "is_active"}
    return st.fixed_dictionaries({**columns, "is_active": st.one_of(st.none(), st.booleans())})


def item_rows() -> st.SearchStrategy[dict[str, Any]]:
    """Raw ``items`` rows (synced columns only)."""
    return st.fixed_dictionaries(
        {
            "name": raw_text,
            "sku": raw_text,
            "description": raw_text,
            "unit_price": st.one_of(st.none(), money),
            "item_type": st.one_of(st.none(), st.sampled_from(ITEM_TYPES)),
            "is_active": st.booleans(),
        }
    )
