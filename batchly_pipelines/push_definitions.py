"""The push area's Dagster definitions: job ``push_to_quickbooks`` and sensor ``sync_queue_sensor`` (no resources)."""

from dagster import Definitions

from batchly_pipelines.push_job import push_to_quickbooks
from batchly_pipelines.push_sensor import sync_queue_sensor

defs = Definitions(jobs=[push_to_quickbooks], sensors=[sync_queue_sensor])
