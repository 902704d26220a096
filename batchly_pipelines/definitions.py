"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Each area module exposes its own ``defs`` without resources; they are merged here with the shared resources. Only
``defs`` may be a ``Definitions`` object at this module's scope (Dagster refuses two).
"""

from dagster import Definitions

from batchly_pipelines import pull_definitions, push_definitions
from batchly_pipelines.assets import status
from batchly_pipelines.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.settings import RuntimeSettings

defs = Definitions.merge(
    status.defs,
    push_definitions.defs,
    pull_definitions.defs,
    Definitions(
        resources={
            "batchly_db": BatchlyDatabase(),
            # QBO_TIME_SCALE: the local sandbox's --time-scale (benchmarks compress QuickBooks' minutes); 1 for Intuit
            "quickbooks": QuickBooksResource(time_scale=RuntimeSettings.from_env().qbo_time_scale),
        }
    ),
)
