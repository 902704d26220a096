"""``pull_webhook_changes``: one realm's targeted pull of what its webhook events named (launched by
``webhook_inbox_sensor``; by hand from the launchpad with ``realm_id``).

The work is :func:`batchly_pipelines.services.webhooks.drain.drain_realm`: the run claims the realm's pending events
with its run id, reads the named records (``Id IN``), mirrors and reconciles them, and marks the events done once all
of it is committed. A failed run leaves them pending; the sensor starts another run for them.
"""

from typing import Any

from dagster import (
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.errors import AuthError
from batchly_pipelines.services.webhooks.drain import RealmNotConnected, drain_realm
from batchly_pipelines.services.webhooks.repair import sweep_realm

WEBHOOK_REALM_TAG = "batchly/webhook-realm"


class WebhookPullConfig(Config):
    """Which QuickBooks company's pending webhook events to pull."""

    realm_id: str = Field(
        description="The QuickBooks realm (company) whose pending webhook events are pulled."
    )
    sweep: bool = Field(
        default=False,
        description="Also sweep the realm with CDC since its last sweep, pulling whatever no event brought.",
    )


@op(
    pool="qbo_api",
    out=Out(dict, description="What the targeted pull did (events, reads and writes per entity, API calls)."),
    tags={"kind": "quickbooks"},
)
def pull_notified_changes(
    context: OpExecutionContext,
    config: WebhookPullConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
) -> Output[dict[str, Any]]:
    """Claim the realm's pending events, pull the records they name into every organisation connected to it, and
    mark the events done; with ``sweep``, then pull what CDC reports that no event brought."""
    try:
        drain = drain_realm(batchly_db.engine, config.realm_id, context.run.run_id, quickbooks.client_for)
        sweep = (
            sweep_realm(batchly_db.engine, config.realm_id, quickbooks.client_for, run_id=context.run.run_id)
            if config.sweep
            else None
        )
    except (LookupError, AuthError, RealmNotConnected) as exc:  # needs a person; the events stay pending
        raise Failure(description=str(exc), allow_retries=False) from None
    summary = drain.as_dict() | ({"sweep": sweep.as_dict()} if sweep else {})
    context.log.info(f"realm {config.realm_id}: {summary}")
    if sweep and sweep.beyond_horizon:
        context.log.warning(
            f"realm {config.realm_id}: the last sweep is older than CDC's 30 days; changes before "
            f"{sweep.since:%Y-%m-%d %H:%M} UTC are left to the pulls (backfill them if an event may be missing)"
        )
    if sweep and sweep.gaps:
        context.log.info(f"realm {config.realm_id}: the CDC sweep pulled what no event brought: {sweep.gaps}")
    read = {
        entity: sum(pull.read.get(entity, 0) for pull in drain.pulls)
        for entity in sorted({e for pull in drain.pulls for e in pull.read})
    }
    return Output(
        summary,
        metadata={
            "events": drain.events,
            "done": drain.done,
            "ignored": drain.ignored,
            "organizations": len(drain.pulls),
            "api_calls": drain.api_calls,
            "reads_per_event": MetadataValue.float(
                round(drain.api_calls / drain.events, 3) if drain.events else 0.0
            ),
            "read": MetadataValue.json(read),
            "seconds": MetadataValue.float(drain.duration_s),
            **(
                {
                    "sweep_gaps": MetadataValue.json(sweep.gaps),
                    "sweep_api_calls": sweep.api_calls,
                    "repaired_until": MetadataValue.text(
                        sweep.repaired_until.isoformat() if sweep.repaired_until else "-"
                    ),
                }
                if sweep
                else {}
            ),
        },
    )


@job(
    description=(
        "Pull the customers, items, invoices and payments one QuickBooks company's webhook events named, and "
        "(config sweep) what CDC reports that no event brought."
    ),
    tags={"batchly/direction": "pull"},
    # one op: running it in the run's own process spares a step process start per run (seconds on a busy machine,
    # which every event waits for)
    executor_def=in_process_executor,
)
def pull_webhook_changes() -> None:
    pull_notified_changes()
