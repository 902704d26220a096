"""``pull_webhook_changes``: one realm's targeted pull of what its webhook events named (launched by
``webhook_inbox_sensor``; by hand from the launchpad with ``realm_id``); ``sweep_webhook_realms``: the CDC sweeps
of many realms in one run (the realms whose sweep is due and that have no events pending; by hand with
``realm_ids``).

The pull's work is :func:`batchly_pipelines.services.webhooks.drain.drain_realm`: the run claims the realm's pending
events with its run id, reads the named records (``Id IN``), mirrors and reconciles them, and marks the events done
once all of it is committed. A failed run leaves them pending; the sensor starts another run for them.

The sweeps' work is :func:`batchly_pipelines.services.webhooks.repair.sweep_realms`: ``BATCHLY_COMPANY_WORKERS``
realms at a time, each realm's sweep in its own transactions and through its own clients (the per-realm limits are
the clients' shared limiter, as in every other run). A realm whose sweep still fails after
``BATCHLY_COMPANY_RETRY_S`` pauses and three attempts keeps its ``repaired_until`` (it is due again) and is named in
the run's failure; the other realms' sweeps are committed and stay.
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

from batchly_pipelines.defs.partitions import RUNTIME
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.quickbooks.errors import AuthError
from batchly_pipelines.services.fleet import Outcome
from batchly_pipelines.services.webhooks.drain import RealmNotConnected, drain_realm
from batchly_pipelines.services.webhooks.repair import Sweep, sweep_realm, sweep_realms

WEBHOOK_REALM_TAG = "batchly/webhook-realm"
WEBHOOK_SWEEP_TAG = "batchly/webhook-sweep"  # on sweep_webhook_realms runs: how many realms the run sweeps


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


class WebhookSweepConfig(Config):
    """Which QuickBooks companies to sweep with CDC."""

    realm_ids: list[str] = Field(description="The QuickBooks realms (companies) to sweep, each on its own.")


def _sweep_row(outcome: Outcome[str, Sweep]) -> dict[str, Any]:
    sweep = outcome.result
    return {
        "realm": outcome.key,
        "gaps": sum(sweep.gaps.values()) if sweep else 0,
        "api_calls": sweep.api_calls if sweep else 0,
        "attempts": outcome.attempts,
        "seconds": round(outcome.duration_s, 2),
        "error": outcome.error or "",
    }


@op(
    pool="qbo_api",
    out=Out(dict, description="Per realm: the gaps the sweep pulled, its API calls, its error if it failed."),
    tags={"kind": "quickbooks"},
)
def sweep_cdc_realms(
    context: OpExecutionContext,
    config: WebhookSweepConfig,
    batchly_db: BatchlyDatabase,
    quickbooks: QuickBooksResource,
) -> Output[dict[str, Any]]:
    """Sweep every given realm with CDC (``BATCHLY_COMPANY_WORKERS`` at a time, each in its own transactions) and
    pull what no event brought; a realm that still fails after its retries is named in the failure, the others'
    sweeps are kept."""
    done = 0

    def report(outcome: Outcome[str, Sweep]) -> None:
        nonlocal done
        done += 1
        sweep = outcome.result
        if outcome.failed:
            context.log.error(
                f"realm {outcome.key}: sweep failed after {outcome.attempts} attempt(s): {outcome.error}"
            )
        elif sweep is not None and sweep.gaps:
            context.log.info(f"realm {outcome.key}: the CDC sweep pulled what no event brought: {sweep.gaps}")
        if sweep is not None and sweep.beyond_horizon and sweep.since is not None:
            context.log.warning(
                f"realm {outcome.key}: the last sweep is older than CDC's 30 days; changes before "
                f"{sweep.since:%Y-%m-%d %H:%M} UTC are left to the pulls (backfill them if an event may be missing)"
            )
        if done % 100 == 0:
            context.log.info(f"swept {done} of {len(config.realm_ids)} realm(s)")

    outcomes = sweep_realms(
        batchly_db.engine,
        config.realm_ids,
        quickbooks.client_for,
        run_id=context.run.run_id,
        workers=RUNTIME.company_workers,
        retry_delay_s=RUNTIME.company_retry_s,
        on_outcome=report,
    )
    rows = [_sweep_row(outcome) for outcome in outcomes]
    failed = {row["realm"]: row["error"] for row in rows if row["error"]}
    summary = {"realms": len(rows), "swept": len(rows) - len(failed), "failed": failed, "per_realm": rows}
    metadata: dict[str, Any] = {
        "realms": len(rows),
        "swept": len(rows) - len(failed),
        "failed_realms": MetadataValue.json(failed),
        "gaps": sum(row["gaps"] for row in rows),
        "api_calls": sum(row["api_calls"] for row in rows),
        "realms_with_gaps": MetadataValue.json({row["realm"]: row["gaps"] for row in rows if row["gaps"]}),
    }
    if failed:
        names = ", ".join(f"{realm} ({error})" for realm, error in sorted(failed.items())[:20])
        raise Failure(
            description=(
                f"the CDC sweep of {len(failed)} of {len(rows)} realm(s) failed after retries (their repaired_until "
                f"stays, they are swept again): {names}" + (" …" if len(failed) > 20 else "")
            ),
            metadata=metadata,
            allow_retries=False,
        )
    return Output(summary, metadata=metadata)


@job(
    description=(
        "CDC sweeps of many QuickBooks companies in one run: for each, pull what CDC reports that no webhook "
        "event brought (one read per company when nothing was missed)."
    ),
    tags={"batchly/direction": "pull"},
    executor_def=in_process_executor,
)
def sweep_webhook_realms() -> None:
    sweep_cdc_realms()
