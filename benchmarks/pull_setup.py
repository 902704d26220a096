"""Shared set-up of the pull benchmarks: a fresh Batchly database, an organisation connected to a fresh sandbox realm,
and a peak-memory sampler."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine, make_url

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.schema import organizations
from benchmarks.scenarios.push_client import _sandbox
from qbo_sandbox.admin_client import SandboxAdmin

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
SEED_TIMEOUT_S = 1800.0


@contextmanager
def fresh_database(url: str) -> Iterator[Engine]:
    """A migrated, empty Batchly database: a new database on the PostgreSQL server of ``url`` (dropped afterwards),
    or a temporary SQLite file when ``url`` is ``sqlite``."""
    if url == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            engine = create_engine(f"sqlite:///{Path(folder) / 'batchly.sqlite'}")
            migrate.upgrade(engine)
            yield engine
            engine.dispose()
        return
    server = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"batchly_bench_{uuid.uuid4().hex[:10]}"
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = create_engine(make_url(url).set(database=name).render_as_string(hide_password=False))
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Connected:
    """An organisation connected to a seeded realm, and a client built the way the pipeline builds it."""

    engine: Engine
    base_url: str
    realm_id: str
    organization_id: int
    client: QuickBooksClient
    seeded: dict[str, list[str]]  # ids created per QuickBooks entity
    env: dict[str, str]  # the settings the pipeline's processes (CLI, Dagster) need to reach both

    @property
    def admin(self) -> SandboxAdmin:
        """The sandbox's admin API."""
        return SandboxAdmin(self.base_url)


@contextmanager
def connected_company(
    database_url: str, seed: dict[str, int], *, latency_ms: float = 0.0, time_scale: float = 1.0
) -> Iterator[Connected]:
    """A sandbox process with a realm seeded by ``seed``, and a fresh database whose organisation is connected."""
    with _sandbox(time_scale, latency_ms) as base_url, fresh_database(database_url) as engine:
        admin = SandboxAdmin(base_url, timeout=SEED_TIMEOUT_S)  # seeding 300,000 customers takes a while
        realm_id = admin.new_realm()
        seeded = admin.seed(realm_id, **seed)
        env = {
            "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": base_url,
            "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
        }
        settings = Settings.from_env(env, cwd=Path(tempfile.gettempdir()))
        with engine.begin() as conn:
            key = conn.execute(
                sa.insert(organizations).values(name="Bench Co", timezone="UTC")
            ).inserted_primary_key
        assert key is not None
        tokens = TokenSet.from_response(admin.tokens(realm_id))
        ConnectionStore(engine, settings.secret_key).save(int(key[0]), realm_id, "local", base_url, tokens)
        with client_for_organization(engine, settings, int(key[0])) as client:
            yield Connected(engine, base_url, realm_id, int(key[0]), client, seeded, env)


class PeakMemory:
    """Samples this process's resident memory every few milliseconds while in use; ``peak_mb`` is the highest."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.process = psutil.Process()
        self.baseline_mb = self._rss_mb()
        self.peak_mb = self.baseline_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss_mb(self) -> float:
        return float(self.process.memory_info().rss) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


class CpuSeconds:
    """CPU seconds (user + system) spent while in use by this process, by its children (the sandbox) and by the
    PostgreSQL backends serving ``engine``'s database (found by their process title, sampled every
    :attr:`interval` seconds so that the connections the pool opens and closes meanwhile are counted too). On a
    machine of two cores the three share them: the import cannot run faster than their sum allows."""

    def __init__(self, engine: Engine, interval: float = 0.2) -> None:
        self.engine, self.interval = engine, interval
        self.process = psutil.Process()
        self.own = self.children = self.database = 0.0
        self._start: dict[str, float] = {}
        self._first: dict[int, float] = {}  # backend pid → CPU when first seen
        self._last: dict[int, float] = {}  # backend pid → CPU when last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def _children(self) -> float:
        total = 0.0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += self._cpu(child)
        return total

    def _backends(self, first: bool = False) -> None:
        name = self.engine.url.database
        if self.engine.dialect.name != "postgresql" or not name:
            return
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                title = " ".join(process.info["cmdline"] or [])
                if title.startswith("postgres:") and f" {name} " in f"{title} ":
                    cpu = self._cpu(process)
                    # a backend born after the start counts from zero
                    self._first.setdefault(process.pid, cpu if first else 0.0)
                    self._last[process.pid] = cpu

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._backends()

    def __enter__(self) -> CpuSeconds:
        self._backends(first=True)
        self._start = {"own": self._cpu(self.process), "children": self._children()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._backends()
        self.own = self._cpu(self.process) - self._start["own"]
        self.children = self._children() - self._start["children"]
        self.database = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())

    def numbers(self) -> dict[str, float]:
        """The three, rounded, as JSON fields."""
        return {
            "process_cpu_seconds": round(self.own, 1),
            "sandbox_cpu_seconds": round(self.children, 1),
            "database_cpu_seconds": round(self.database, 1),
        }
