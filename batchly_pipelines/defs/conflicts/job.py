"""``resolve_conflicts``: settle reviewed conflicts from the Dagster UI (run config picks them and the winner).

The config is typed: the launchpad's "Scaffold missing config" writes every field, ``winner`` and ``entity_type`` are
choices it offers, and a wrong value is refused before the run starts. ``sync_status_sensor`` records
``no_open_conflicts`` again as soon as the run has settled them. ``seen_revisions`` names the revision each decision
was made on: a conflict whose values changed since is not resolved and the run fails saying so, after resolving
the others (``services.pull.resolve``).
"""

from enum import Enum

from dagster import Config, Failure, OpExecutionContext, job, op
from pydantic import Field

from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.services.pull.resolve import WINNERS, Resolved, ReviewOutdated, resolve_conflicts

Winner = Enum("Winner", {winner: winner for winner in WINNERS})  # type: ignore[misc]  # the launchpad's choices


class EntityType(Enum):
    customer = "customer"
    item = "item"


class ResolveConflictsConfig(Config):
    """Which open conflicts to settle, and on what."""

    conflict_ids: list[int] = Field(default_factory=list, description="Conflict ids (sync_conflicts.id).")
    organization_id: int | None = Field(
        default=None, description="Or every open conflict of an organisation …"
    )
    entity_type: EntityType | None = Field(default=None, description="… optionally only of this entity …")
    field: str | None = Field(default=None, description="… and this field (or 'link').")
    winner: Winner = Field(
        description="batchly: Batchly's current value; quickbooks: QuickBooks' current value; value: the value below."
    )
    value: str | None = Field(default=None, description="The value to apply when winner is 'value'.")
    resolved_by: str = Field(
        default="", description="Who decided (default: the run's user tag, else 'dagster')."
    )
    seen_revisions: dict[str, int] = Field(
        default_factory=dict,
        description="Conflict id → the revision (sync_conflicts.revision) the decision was made on; a conflict "
        "showing another one is refused.",
    )


@op(description="Apply the chosen side to the losing one and record who resolved each conflict and when.")
def resolve_selected_conflicts(
    context: OpExecutionContext, config: ResolveConflictsConfig, batchly_db: BatchlyDatabase
) -> None:
    if not config.conflict_ids and config.organization_id is None:
        raise Failure("choose conflict_ids or an organization_id (with optional entity_type and field)")
    resolved_by = config.resolved_by or context.run.tags.get("user") or "dagster"
    try:
        seen = {int(conflict_id): revision for conflict_id, revision in config.seen_revisions.items()}
    except ValueError as exc:
        raise Failure(f"seen_revisions: conflict ids are numbers ({exc})", allow_retries=False) from exc
    refused: ReviewOutdated | None = None
    try:
        resolved = resolve_conflicts(
            batchly_db.engine,
            winner=config.winner.value,
            value=config.value,
            resolved_by=resolved_by,
            conflict_ids=config.conflict_ids or None,
            organization_id=config.organization_id,
            entity_type=config.entity_type.value if config.entity_type else None,
            field=config.field,
            run_id=context.run.run_id,
            seen=seen,
        )
    except ReviewOutdated as exc:
        refused, resolved = exc, exc.resolved
    except ValueError as exc:
        raise Failure(str(exc), allow_retries=False) from exc
    _log_resolved(context, resolved, resolved_by)
    if refused is not None:
        raise Failure(str(refused), allow_retries=False)


def _log_resolved(context: OpExecutionContext, resolved: list[Resolved], resolved_by: str) -> None:
    for outcome in resolved:
        context.log.info(
            "conflict %s: %s → %r (Batchly %s, QuickBooks %s)",
            outcome.conflict_id,
            outcome.field,
            outcome.chosen,
            "written" if outcome.to_batchly else "unchanged",
            "queued for the push" if outcome.to_quickbooks else "unchanged",
        )
    context.log.info("%s conflict(s) resolved by %s", len(resolved), resolved_by)


@job(
    name="resolve_conflicts",
    description="Resolve reviewed sync conflicts: winner batchly, quickbooks or an explicit value.",
)
def resolve_conflicts_job() -> None:
    resolve_selected_conflicts()
