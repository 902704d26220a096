"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Each area exposes its own ``Definitions`` without resources; they are merged here with the shared resources.
"""

from dagster import Definitions, define_asset_job

from batchly_pipelines.assets.status import dead_letter_empty, sync_status
from batchly_pipelines.resources import BatchlyDatabase

sync_status_job = define_asset_job("sync_status_job", selection=[sync_status])

status_defs = Definitions(assets=[sync_status], asset_checks=[dead_letter_empty], jobs=[sync_status_job])

defs = Definitions.merge(
    status_defs,
    Definitions(resources={"batchly_db": BatchlyDatabase()}),
)
