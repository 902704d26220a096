"""The push in the lineage graph: Batchly's tables → the QuickBooks side of what the push writes.

``quickbooks/pushed/<Entity>`` are the customers, items and invoices ``push_to_quickbooks`` writes into each
organisation's QuickBooks company, downstream of the Batchly tables they come from; the push materialises each one it
wrote to (``record_pushed``). They are the same QuickBooks objects the pull reads as ``quickbooks/<Entity>``, under
their own keys because lineage cannot loop (QuickBooks → mirror → Batchly → QuickBooks).
"""

from collections.abc import Mapping

from dagster import AssetKey, AssetMaterialization, AssetSpec, OpExecutionContext

QBO_GROUP = "quickbooks"

batchly_invoices = AssetSpec(
    AssetKey(["batchly", "invoices"]),
    group_name="batchly",
    kinds={"postgres", "sqlite"},
    description="Invoices in Batchly (with their lines), written by the app; the push sends them to QuickBooks "
    "(invoices are never pulled back, only their payments: batchly_invoice_payments).",
)


def _pushed(entity: str, deps: list[AssetKey | AssetSpec | str], description: str) -> AssetSpec:
    return AssetSpec(
        AssetKey(["quickbooks", "pushed", entity]),
        deps=deps,
        group_name=QBO_GROUP,
        kinds={"quickbooks"},
        description=description,
    )


pushed_customers = _pushed(
    "Customer", ["batchly_customers"], "Customers the push created or updated in QuickBooks Online."
)
pushed_items = _pushed("Item", ["batchly_items"], "Items the push created or updated in QuickBooks Online.")
pushed_invoices = _pushed(
    "Invoice",
    [batchly_invoices, pushed_customers, pushed_items],
    "Invoices the push created (or voided) in QuickBooks Online; they reference the pushed customers and items.",
)
PUSHED = {"customer": pushed_customers, "item": pushed_items, "invoice": pushed_invoices}
NOT_WRITTEN = {"failed", "skip"}  # outcomes that changed nothing in QuickBooks


def record_pushed(context: OpExecutionContext, organization_id: int, actions: Mapping[str, int]) -> None:
    """Materialise the QuickBooks side of each entity the push wrote to (``actions``: ``invoice.create`` → count;
    failures and skips wrote nothing)."""
    by_entity: dict[str, dict[str, int]] = {}
    for action, count in actions.items():
        entity, _, verb = action.partition(".")
        if entity in PUSHED and verb not in NOT_WRITTEN and count:
            by_entity.setdefault(entity, {})[verb] = count
    for entity, verbs in sorted(by_entity.items()):
        context.log_event(
            AssetMaterialization(
                asset_key=PUSHED[entity].key,
                description=f"pushed for organisation {organization_id}",
                metadata={"organization_id": organization_id, **verbs},
            )
        )


def record_pushed_batch(context: OpExecutionContext, actions: Mapping[int, Mapping[str, int]]) -> None:
    """:func:`record_pushed` for a batched run: one materialisation per entity written, its counts summed over the
    organisations (``actions``: organisation id → its actions), the organisations that wrote to it counted — not
    one event per organisation and entity."""
    by_entity: dict[str, dict[str, int]] = {}
    writers: dict[str, set[int]] = {}
    for organization_id, counts in actions.items():
        for action, count in counts.items():
            entity, _, verb = action.partition(".")
            if entity in PUSHED and verb not in NOT_WRITTEN and count:
                verbs = by_entity.setdefault(entity, {})
                verbs[verb] = verbs.get(verb, 0) + count
                writers.setdefault(entity, set()).add(organization_id)
    for entity, verbs in sorted(by_entity.items()):
        context.log_event(
            AssetMaterialization(
                asset_key=PUSHED[entity].key,
                description=f"pushed for {len(writers[entity])} organisation(s)",
                metadata={"organizations": len(writers[entity]), **verbs},
            )
        )
