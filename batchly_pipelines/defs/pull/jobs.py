"""The pull jobs ``pull_customers``, ``pull_items`` and ``pull_payments``: each a mirror asset and its reconciled asset
(one step) over the company partitions, and their checks.

The steps run in the run's own process (``in_process_executor``): the companies are concurrent inside the pull step
already, and a process per step (the default executor) cost each run several seconds of CPU per check for a few
queries.
"""

from dagster import AssetSelection, define_asset_job, in_process_executor

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
    executor_def=in_process_executor,
)
pull_items_job = define_asset_job(
    "pull_items",
    selection=AssetSelection.assets(qbo_items, batchly_items),
    description="Pull items from QuickBooks and reconcile them into Batchly.",
    executor_def=in_process_executor,
)
pull_payments_job = define_asset_job(
    "pull_payments",
    selection=AssetSelection.assets(qbo_payments, batchly_invoice_payments),
    description="Pull payments and invoices from QuickBooks into the invoices' payment columns.",
    executor_def=in_process_executor,
)
