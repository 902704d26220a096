"""Checks of ``sync_status``: the dead letter."""

from dagster import AssetCheckResult, AssetCheckSeverity, asset_check

from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.resources import BatchlyDatabase


@asset_check(
    asset=sync_status, description="Records in the dead letter need an operator (`batchly-sync queue list`)."
)
def dead_letter_empty(batchly_db: BatchlyDatabase) -> AssetCheckResult:
    dead = sum(d["dead"] for d in batchly_db.queue.depth().values())
    return AssetCheckResult(
        passed=dead == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"dead": dead},
        description=f"{dead} record(s) in the dead letter" if dead else "dead letter empty",
    )
