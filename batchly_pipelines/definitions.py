"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location)."""

from __future__ import annotations

from dagster import Definitions, define_asset_job

from batchly_pipelines.assets.status import dead_letter_empty, sync_status
from batchly_pipelines.resources import BatchlyDatabase

sync_status_job = define_asset_job("sync_status_job", selection=[sync_status])

defs = Definitions(
    assets=[sync_status],
    asset_checks=[dead_letter_empty],
    jobs=[sync_status_job],
    resources={"batchly_db": BatchlyDatabase()},
)
