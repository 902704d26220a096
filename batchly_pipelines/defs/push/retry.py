"""``retry_dead_letter``: give dead-lettered queue rows a fresh start from the launchpad (the CLI's `queue retry`).

Pick rows by queue id (the ``queue_id`` column of the ``dead_letter_empty`` check and of failed push runs) or every
dead row of an organisation. Each revived row is due at once with its attempts reset, so ``sync_queue_sensor`` pushes
it within seconds; a record that still fails goes back to the dead letter with its new reason. An id that is no queue
row fails the run (after the others were retried); one that is no longer dead (it synced since) is reported.
"""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, Output, TableColumn, job, op
from pydantic import Field

from batchly_pipelines.defs.monitoring import tables
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.status import dead_letter, queue_row_statuses


class RetryDeadLetterConfig(Config):
    """Which dead rows to retry: by queue row id, by organisation, or both (the ids within that organisation)."""

    ids: list[int] = Field(
        default_factory=list, description="Queue row ids (queue_id in the dead-letter check's table)."
    )
    organization_id: int | None = Field(default=None, description="Or every dead row of this organisation.")


@op(
    description="Requeue the chosen dead rows (attempts reset, due now) and list what was retried and why it had died."
)
def retry_dead_rows(
    context: OpExecutionContext, config: RetryDeadLetterConfig, batchly_db: BatchlyDatabase
) -> Output[int]:
    if not config.ids and config.organization_id is None:
        raise Failure("choose the queue row ids or an organization_id to retry", allow_retries=False)
    engine = batchly_db.engine
    chosen = dead_letter(
        engine, ids=config.ids or None, organization_id=config.organization_id, limit=1_000_000
    )
    revived = batchly_db.queue.retry_dead(ids=[row["id"] for row in chosen]) if chosen else 0
    for row in chosen:
        name = f" ({row['name']})" if row["name"] else ""
        context.log.info(
            f"queue row {row['id']}: {row['entity_type']} {row['entity_id']}{name} of {row['organization']} "
            f"queued again; it had died with: {row['last_error']}"
        )
    found = {row["id"] for row in chosen}
    statuses = queue_row_statuses(engine, [i for i in config.ids if i not in found])
    skipped = [
        {
            "queue_id": row_id,
            "reason": f"not in the dead letter (status {statuses[row_id]})"
            if row_id in statuses
            else "no such queue row",
        }
        for row_id in dict.fromkeys(config.ids)
        if row_id not in found
    ]
    for row in skipped:
        context.log.warning(f"queue row {row['queue_id']}: {row['reason']}")
    context.log.info(f"{revived} dead-lettered row(s) queued again; sync_queue_sensor pushes them")
    metadata = {
        "revived": MetadataValue.int(revived),
        "retried": tables.dead_letter(chosen),
        **(
            {
                "not retried": tables.table(
                    [TableColumn("queue_id", "int"), TableColumn("reason", "string")], skipped
                )
            }
            if skipped
            else {}
        ),
    }
    unknown = [row["queue_id"] for row in skipped if row["reason"] == "no such queue row"]
    if unknown:
        raise Failure(
            description=f"no queue row {', '.join(map(str, unknown))} (the others were retried)",
            metadata=metadata,
            allow_retries=False,
        )
    return Output(revived, metadata=metadata)


@job(
    description="Retry dead-lettered sync queue rows (by queue id or organisation): they are pushed again at once."
)
def retry_dead_letter() -> None:
    retry_dead_rows()
