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

from batchly_pipelines.defs.partitions import COMPANY, company_key, company_partitions, keys_by_organization
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.organizations import organizations_with_connection


@sensor(
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a company partition, named after the organisation, for every organisation connected to "
    "QuickBooks and removes the ones whose connection is gone. No QuickBooks call; one query per tick.",
)
def company_partitions_sensor(
    context: SensorEvaluationContext, batchly_db: BatchlyDatabase
) -> SensorResult | SkipReason:
    wanted = dict(organizations_with_connection(batchly_db.engine))
    known = keys_by_organization(context.instance.get_dynamic_partitions(COMPANY))
    # a known organisation keeps its key (a rename does not move its history to a new key)
    added = [company_key(org, wanted[org]) for org in sorted(wanted.keys() - known.keys())]
    removed = [known[org] for org in sorted(known.keys() - wanted.keys())]
    if not added and not removed:
        return SkipReason(f"{len(known)} company partition(s), all in step with qbo_connections")
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(company_partitions.build_add_request(added))
    if removed:
        requests.append(company_partitions.build_delete_request(removed))
    context.log.info("company partitions: added %d %s, removed %s", len(added), added[:20], removed)
    return SensorResult(dynamic_partitions_requests=requests)
