"""The project's Dagster definitions as a code location for an in-process daemon and run launcher (tests of how the
Dagster UI and daemon launch backfills). Only the resources differ: they read ``BATCHLY_DATABASE_URL`` when each run
starts (``EnvVar``), where the project's are built once per process, so one test process can run against several
databases in turn."""

from __future__ import annotations

from dagster import EnvVar
from dagster._record import replace

from batchly_pipelines.definitions import defs as project
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource

defs = replace(
    project,
    resources={
        **(project.resources or {}),
        "batchly_db": BatchlyDatabase(database_url=EnvVar("BATCHLY_DATABASE_URL")),
        "quickbooks": QuickBooksResource(database_url=EnvVar("BATCHLY_DATABASE_URL")),
    },
)
