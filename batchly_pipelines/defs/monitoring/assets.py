"""``sync_status``: a per-organisation view of connections and the push queue (its checks: ``checks.py``; kept live by
``sync_status_sensor`` in ``sensors.py``)."""

from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
    in_process_executor,
)

from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.schema import QUEUE_STATES
from batchly_pipelines.store.status import organization_status


def status_frame(database: BatchlyDatabase) -> pd.DataFrame:
    """One row per organisation: QuickBooks connection and queue depth by state."""
    return pd.DataFrame(
        organization_status(database.engine), columns=["organization_id", "name", "quickbooks", *QUEUE_STATES]
    )


def status_metadata(database: BatchlyDatabase) -> dict[str, Any]:
    """What a materialisation of ``sync_status`` records: the per-organisation table and queue totals (the asset
    and ``sync_status_sensor`` both record exactly this)."""
    frame = status_frame(database)
    totals = {state: int(frame[state].sum()) if len(frame) else 0 for state in QUEUE_STATES}
    return {
        "dagster/row_count": len(frame),
        "status": MetadataValue.table(
            records=[TableRecord(row) for row in frame.astype(object).to_dict("records")],
            schema=TableSchema(
                columns=[
                    TableColumn("organization_id", "int"),
                    TableColumn("name", "string"),
                    TableColumn("quickbooks", "string", description="realm (connection status)"),
                    *(TableColumn(state, "int", description=f"queue rows {state}") for state in QUEUE_STATES),
                ]
            ),
        ),
        **{f"queue_{state}": MetadataValue.int(count) for state, count in totals.items()},
    }


@asset(
    group_name="monitoring",
    kinds={"postgres", "sqlite"},
    description="Queue depth by state and QuickBooks connection status for every organisation.",
)
def sync_status(context: AssetExecutionContext, batchly_db: BatchlyDatabase) -> MaterializeResult:
    metadata = status_metadata(batchly_db)
    context.log.info("queue depth: %s", {k: v.value for k, v in metadata.items() if k.startswith("queue_")})
    return MaterializeResult(metadata=metadata)


# one process for the asset and its four checks (sync_status_sensor records the same without a run)
sync_status_job = define_asset_job(
    "sync_status_job",
    selection=[sync_status],
    executor_def=in_process_executor,
    description="Refresh sync_status and its checks by hand (sync_status_sensor keeps them live without runs).",
)
