"""Dagster resources: thin wrappers over ``store/`` (and, as it lands, ``quickbooks/``)."""

from __future__ import annotations

from dagster import ConfigurableResource, Definitions, ResourceDefinition, definitions
from pydantic import PrivateAttr

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.settings import RuntimeSettings, Settings
from batchly_pipelines.store.db import Engine, create_engine
from batchly_pipelines.store.queue import SyncQueue


class BatchlyDatabase(ConfigurableResource):
    """The Batchly database. ``database_url`` empty means ``BATCHLY_DATABASE_URL`` / the local default."""

    database_url: str = ""
    _engine: Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url or Settings.from_env().database_url)
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
            self._engine = create_engine(self.database_url or settings.database_url)
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
