"""Dagster resources: thin wrappers over ``store/`` (and, as it lands, ``quickbooks/``)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from batchly_pipelines.settings import Settings
from batchly_pipelines.store.db import create_engine
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
