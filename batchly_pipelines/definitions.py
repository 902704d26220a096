"""The Dagster definitions of the Batchly ⇄ QuickBooks sync (the one code location).

Each area module exposes its own ``defs`` without resources; they are merged here with the shared resources. Only
``defs`` may be a ``Definitions`` object at this module's scope (Dagster refuses two).
"""

from dagster import Definitions

from batchly_pipelines.assets import status
from batchly_pipelines.resources import BatchlyDatabase

defs = Definitions.merge(
    status.defs,
    Definitions(resources={"batchly_db": BatchlyDatabase()}),
)
