"""Dagster resources: thin wrappers over ``store/`` (and, as it lands, ``quickbooks/``).

The Batchly database's connections are bounded per process (a run's, the daemon's, the code server's): the two
resources share one engine per database URL, whose pool holds ``BATCHLY_COMPANY_WORKERS + 2`` connections and opens
at most ``BATCHLY_COMPANY_WORKERS`` more at a peak (a company in flight may hold two at once: its transaction and
the rate limiter's); a thread that finds the pool exhausted waits for a connection (``POOL_TIMEOUT_S``) instead of
opening another. So a run never holds more than twice ``BATCHLY_COMPANY_WORKERS`` plus 2 Batchly connections, and
``max_connections`` is sized from the run limit (docs/deployment.md, *PostgreSQL connections*).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from dagster import ConfigurableResource, Definitions, ResourceDefinition, definitions
from pydantic import PrivateAttr

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.settings import RuntimeSettings, Settings
from batchly_pipelines.store.db import Engine, create_engine
from batchly_pipelines.store.queue import SyncQueue

POOL_TIMEOUT_S = 120.0
KEPT_ENGINES = (
    4  # engines kept per process, the least recently used disposed (a deployment has one URL; tests many)
)
_ENGINES: OrderedDict[str, Engine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


def shared_engine(url: str) -> Engine:
    """This process's engine for ``url``, its pool bounded by the company workers of a run (one per URL, shared
    by every resource and thread of the process)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            _ENGINES.move_to_end(url)
        else:
            workers = RuntimeSettings.from_env().company_workers
            pooled = (
                {}
                if url.startswith("sqlite")
                else {
                    "pool_size": workers + 2,
                    "max_overflow": workers,
                    "pool_timeout": POOL_TIMEOUT_S,
                }
            )
            engine = _ENGINES[url] = create_engine(url, **pooled)
            while len(_ENGINES) > KEPT_ENGINES:
                _, old = _ENGINES.popitem(last=False)
                old.dispose()  # its idle connections closed; one still checked out is closed when returned
        return engine


class BatchlyDatabase(ConfigurableResource):
    """The Batchly database. ``database_url`` empty means ``BATCHLY_DATABASE_URL`` / the local default."""

    database_url: str = ""
    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = shared_engine(self.database_url or Settings.from_env().database_url)
        return self._engine

    @property
    def queue(self) -> SyncQueue:
        return SyncQueue(self.engine)


class QuickBooksResource(ConfigurableResource):
    """QuickBooks clients per organisation; tokens and rate limits are shared through the Batchly database.

    ``time_scale`` must match the sandbox's ``--time-scale`` (1 against Intuit). Settings (client id and secret,
    ``BATCHLY_SECRET_KEY``) come from the environment, never from run config.
    """

    database_url: str = ""
    time_scale: float = 1.0
    _engine: Engine | None = PrivateAttr(default=None)

    def client_for(self, organization_id: int, realm_id: str | None = None) -> QuickBooksClient:
        """A client for the organisation's realm — its connection to ``realm_id`` if given, LookupError if it has
        none (any more) — (close it when done); raises ReauthorizationRequired if needed."""
        settings = Settings.from_env()
        if self._engine is None:
            self._engine = shared_engine(self.database_url or settings.database_url)
        config = ClientConfig(time_scale=self.time_scale)
        return client_for_organization(
            self._engine, settings, organization_id, realm_id=realm_id, config=config
        )


def from_environment(resource: ConfigurableResource, description: str) -> ResourceDefinition:
    """``resource`` as a resource without run config: nothing about databases, credentials or time scales can be
    set (or overridden) from a launchpad, only by the deployment's environment."""
    return ResourceDefinition(resource_fn=lambda _: resource, config_schema={}, description=description)


@definitions
def resources() -> Definitions:
    """The shared resources of every area; configured from the environment only."""
    return Definitions(
        resources={
            "batchly_db": from_environment(
                BatchlyDatabase(), "The Batchly database (BATCHLY_DATABASE_URL; no run config)."
            ),
            # QBO_TIME_SCALE: the local sandbox's --time-scale (benchmarks compress QuickBooks' minutes); 1 for Intuit
            "quickbooks": from_environment(
                QuickBooksResource(time_scale=RuntimeSettings.from_env().qbo_time_scale),
                "QuickBooks clients per organisation (QBO_* settings and BATCHLY_SECRET_KEY; no run config).",
            ),
        }
    )
