"""``company_partitions_sensor``: keeps the company partition keys in step with ``qbo_connections``."""

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from batchly_pipelines.defs.partitions import COMPANY, company_key, company_partitions
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.status import connected_organization_ids


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a company partition for every organisation connected to QuickBooks and removes the ones whose "
    "connection is gone. No QuickBooks call; one query per tick.",
)
def company_partitions_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    wanted = {company_key(org) for org in connected_organization_ids(batchly_db.engine)}
    known = set(context.instance.get_dynamic_partitions(COMPANY))
    added, removed = sorted(wanted - known), sorted(known - wanted)
    if not added and not removed:
        return SkipReason(f"{len(known)} company partition(s), all in step with qbo_connections")
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(company_partitions.build_add_request(added))
    if removed:
        requests.append(company_partitions.build_delete_request(removed))
    context.log.info("company partitions: added %s, removed %s", added, removed)
    return SensorResult(dynamic_partitions_requests=requests)
