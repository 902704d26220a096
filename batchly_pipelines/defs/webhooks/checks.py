"""Checks of ``sync_status`` for the webhooks and the read budget, recorded by ``webhook_checks_sensor`` (and run with
``sync_status_job``):

- ``webhooks_flowing`` fails when a connected QuickBooks company has sent no event for longer than
  ``BATCHLY_WEBHOOK_SILENCE_HOURS`` (24 by default; WARN), or when no CDC sweep has covered it for 25 days — 5 days
  before CDC's 30-day horizon, past which only a backfill of the pulls repairs a missed event (ERROR);
- ``read_budget`` warns at 80 % of ``BATCHLY_READ_QUOTA`` (500,000 by default) QuickBooks reads this month, is an
  ERROR once the quota is used up (Intuit blocks the app's reads until next month), and always shows the forecast for
  the month at the current rate and the reads per company.
"""

from __future__ import annotations

from collections.abc import Callable

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset_check,
)

from batchly_pipelines.defs.monitoring.assets import sync_status
from batchly_pipelines.defs.monitoring.checks import Verdict
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.defs.webhooks.config import app_id, read_quota, silence_limit
from batchly_pipelines.services.read_budget import percent, read_budget
from batchly_pipelines.services.webhooks.repair import webhook_health

NAMED = 5
REALMS_LISTED = 50


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 1)


def webhooks_flowing_verdict(batchly_db: BatchlyDatabase) -> Verdict:
    """Every connected realm sends events and is swept well within CDC's reach."""
    health = webhook_health(batchly_db.engine, silence_limit())
    failing = [realm for realm in health if realm.problems]
    beyond = any("CDC sweep" in problem for realm in failing for problem in realm.problems)
    table = MetadataValue.table(
        records=[
            TableRecord(
                {
                    "realm_id": realm.realm_id,
                    "last_event_at": realm.last_event_at.isoformat() if realm.last_event_at else "never",
                    "silent_hours": _hours(realm.silent_for.total_seconds()),
                    "repaired_until": realm.repaired_until.isoformat()
                    if realm.repaired_until
                    else "never swept",
                    "unrepaired_hours": _hours(realm.unrepaired_for.total_seconds()),
                    "problem": "; ".join(realm.problems) or "-",
                }
            )
            for realm in sorted(health, key=lambda realm: (not realm.problems, realm.realm_id))[
                :REALMS_LISTED
            ]
        ],
        schema=TableSchema(
            columns=[
                TableColumn("realm_id", "string"),
                TableColumn("last_event_at", "string", description="when its last webhook event arrived"),
                TableColumn("silent_hours", "float"),
                TableColumn("repaired_until", "string", description="every change up to here is in Batchly"),
                TableColumn("unrepaired_hours", "float"),
                TableColumn("problem", "string"),
            ]
        ),
    )
    named = "; ".join(f"realm {realm.realm_id} {' and '.join(realm.problems)}" for realm in failing[:NAMED])
    more = f"; and {len(failing) - NAMED} more" if len(failing) > NAMED else ""
    return Verdict(
        passed=not failing,
        severity=AssetCheckSeverity.ERROR if beyond else AssetCheckSeverity.WARN,
        metadata={"realms": len(health), "failing": len(failing), "realms_table": table},
        description=(
            f"{len(failing)} of {len(health)} connected QuickBooks companies: {named}{more}"
            if failing
            else f"all {len(health)} connected QuickBooks companies send events and are swept by CDC"
        ),
    )


def read_budget_verdict(batchly_db: BatchlyDatabase) -> Verdict:
    """This month's QuickBooks reads against the app's quota, with the month's forecast."""
    budget = read_budget(batchly_db.engine, app_id(), read_quota())
    top = sorted(budget.by_realm.items(), key=lambda item: (-item[1], item[0]))[:REALMS_LISTED]
    return Verdict(
        passed=budget.level == "ok",
        severity=AssetCheckSeverity.ERROR if budget.level == "exhausted" else AssetCheckSeverity.WARN,
        metadata={
            "month": budget.month,
            "reads": budget.reads,
            "quota": budget.quota,
            "used": MetadataValue.text(percent(budget.used, 1)),
            "forecast": budget.forecast,
            "forecast_used": MetadataValue.text(percent(budget.forecast / budget.quota, 1)),
            "reads_by_realm": MetadataValue.table(
                records=[TableRecord({"realm_id": realm, "reads": reads}) for realm, reads in top],
                schema=TableSchema(columns=[TableColumn("realm_id", "string"), TableColumn("reads", "int")]),
            ),
        },
        description=budget.sentence(),
    )


# what webhook_checks_sensor records: check name → verdict
WEBHOOK_VERDICTS: dict[str, Callable[[BatchlyDatabase], Verdict]] = {
    "webhooks_flowing": webhooks_flowing_verdict,
    "read_budget": read_budget_verdict,
}


@asset_check(
    asset=sync_status,
    name="webhooks_flowing",
    description=(
        "Every connected QuickBooks company sends webhook events (within BATCHLY_WEBHOOK_SILENCE_HOURS, 24 by "
        "default) and was swept by CDC within the last 25 days (CDC reaches back 30)."
    ),
)
def webhooks_flowing(batchly_db: BatchlyDatabase) -> AssetCheckResult:
    return webhooks_flowing_verdict(batchly_db).result()


@asset_check(
    asset=sync_status,
    name="read_budget",
    description=(
        "QuickBooks reads this month against the app's quota (BATCHLY_READ_QUOTA, 500,000 by default): warns at "
        "80 %, fails once it is used up (Intuit blocks reads until next month); shows the month's forecast."
    ),
)
def read_budget_check(batchly_db: BatchlyDatabase) -> AssetCheckResult:
    return read_budget_verdict(batchly_db).result()
