"""The pull jobs ``pull_customers``, ``pull_items`` and ``pull_payments``: each a mirror asset and its reconciled asset
(one step) over the company partitions."""

from dagster import AssetSelection, define_asset_job

from batchly_pipelines.defs.pull.assets import (
    batchly_customers,
    batchly_invoice_payments,
    batchly_items,
    qbo_customers,
    qbo_items,
    qbo_payments,
)

pull_customers_job = define_asset_job(
    "pull_customers",
    selection=AssetSelection.assets(qbo_customers, batchly_customers),
    description="Pull customers from QuickBooks and reconcile them into Batchly.",
)
pull_items_job = define_asset_job(
    "pull_items",
    selection=AssetSelection.assets(qbo_items, batchly_items),
    description="Pull items from QuickBooks and reconcile them into Batchly.",
)
pull_payments_job = define_asset_job(
    "pull_payments",
    selection=AssetSelection.assets(qbo_payments, batchly_invoice_payments),
    description="Pull payments and invoices from QuickBooks into the invoices' payment columns.",
)
