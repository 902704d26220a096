"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Each area module exposes its own ``defs`` without resources; they are merged here with the shared resources. Only
``defs`` may be a ``Definitions`` object at this module's scope (Dagster refuses two).
"""

import os

from dagster import Definitions

from batchly_pipelines import pull_definitions, push_definitions
from batchly_pipelines.assets import status
from batchly_pipelines.resources import BatchlyDatabase, QuickBooksResource

defs = Definitions.merge(
    status.defs,
    push_definitions.defs,
    pull_definitions.defs,
    Definitions(
        resources={
            "batchly_db": BatchlyDatabase(),
            # QBO_TIME_SCALE: the local sandbox's --time-scale (benchmarks compress QuickBooks' minutes); 1 for Intuit
            "quickbooks": QuickBooksResource(time_scale=float(os.environ.get("QBO_TIME_SCALE", "1"))),
        }
    ),
)
