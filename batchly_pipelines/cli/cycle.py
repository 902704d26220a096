"""The main job behind ``make run`` / ``batchly-sync run``: one whole sync cycle on the configured setup.

Migrate; create demo data in an empty database; in local mode start the QuickBooks sandbox with its demo company;
connect every organisation that is not connected yet (local mode only: the sandbox approves at once); then for each
connected organisation pull everything QuickBooks changed since the last pull, push everything pending, and print
what happened.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import requests

from batchly_pipelines.cli.connect import authorize
from batchly_pipelines.cli.local_sandbox import local_sandbox
from batchly_pipelines.cli.output import progress_bar, section
from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.quickbooks.errors import QboError
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.pull.organization import (
    OrganizationPull,
    pull_organization,
    window_since_cursor,
)
from batchly_pipelines.services.push.organization import PushStats, push_organization, worker_name
from batchly_pipelines.settings import RuntimeSettings, Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import CompanyMismatch
from batchly_pipelines.store.db import Engine, create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.organizations import (
    connected_organizations,
    count_organizations,
    unconnected_organizations,
)
from batchly_pipelines.store.queue import SyncQueue
from qbo_sandbox.admin_client import SandboxAdmin


@dataclass
class CycleSummary:
    """What one cycle did, over every organisation."""

    pulled: Counter[str] = field(default_factory=Counter)
    reconciled: Counter[str] = field(default_factory=Counter)
    pushed: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    failed: int = 0
    dead: int = 0
    api_calls: int = 0
    throttled: int = 0
    errors: list[str] = field(default_factory=list)


def run_main_job(settings: Settings, *, seed: int = 42) -> int:
    """One whole cycle; returns the process exit code (1 when an organisation could not be synced)."""
    started = time.monotonic()
    with prepared(settings, seed=seed) as (engine, summary):
        for organization_id, name in connected_organizations(engine):
            _sync_organization(engine, settings, organization_id, name, summary)
    _print_summary(engine, summary, time.monotonic() - started)
    return 1 if summary.errors else 0


@contextmanager
def prepared(settings: Settings, *, seed: int = 42) -> Iterator[tuple[Engine, CycleSummary]]:
    """The set-up ``make run`` and ``make dev`` share: migrate, demo data in an empty database and, in local mode,
    the sandbox (for the duration of the block) with every organisation connected to it."""
    engine = create_engine(settings.database_url)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    section(
        "database",
        f"{engine.url.render_as_string()} migrated {before or '(empty)'} → {migrate.head_revision()}",
    )
    ensure_demo_data(engine, seed)
    summary = CycleSummary()
    with ExitStack() as stack:
        if settings.is_local:
            sandbox = stack.enter_context(local_sandbox(settings))
            how = "started" if sandbox.started_here else "already running"
            section("quickbooks", f"local sandbox {how} at {sandbox.base_url}")
            connect_unconnected(engine, settings, summary)
        else:
            section("quickbooks", f"Intuit {settings.qbo_environment} at {settings.qbo_base_url}")
        yield engine, summary


def ensure_demo_data(engine: Engine, seed: int) -> None:
    organisations = count_organizations(engine)
    if organisations:
        section("batchly data", f"kept the {organisations} existing organisation(s)")
        return
    demo = create_demo(engine, customers=50, items=20, invoices=100, seed=seed)
    section("batchly data", f"created demo {demo}")


def connect_unconnected(engine: Engine, settings: Settings, summary: CycleSummary) -> None:
    """Local mode: connect organisations without a QuickBooks connection to the sandbox's demo company."""
    already, missing = unconnected_organizations(engine)  # read and closed before connecting (SQLite's lock)
    for organization_id, name in missing:
        try:
            # the first organisation gets the sandbox's demo company, every other one a company of its own
            realm = _new_sandbox_company(settings, name) if already else None
            record = authorize(
                engine,
                settings,
                organization_id,
                auto_approve=True,
                timeout=60,
                say=lambda _: None,
                sandbox_realm_id=realm,
            )
            already += 1
        except (
            QboError,
            OSError,
            TimeoutError,
            PermissionError,
            requests.RequestException,
            CompanyMismatch,
        ) as exc:
            summary.errors.append(f"organisation {organization_id}: connect failed: {exc}")
            continue
        section("connected", f"organisation {organization_id} → realm {record.realm_id} (OAuth code flow)")


def _new_sandbox_company(settings: Settings, name: str) -> str:
    """A new, empty company in the local sandbox (its admin API), for one more Batchly organisation."""
    return SandboxAdmin(settings.qbo_base_url, timeout=10).new_realm(name)


def _sync_organization(
    engine: Engine, settings: Settings, organization_id: int, name: str, summary: CycleSummary
) -> None:
    """Pull, then push, one organisation; a failure is recorded and the next organisation still runs."""
    config = ClientConfig(time_scale=RuntimeSettings.from_env().qbo_time_scale)
    try:
        with client_for_organization(engine, settings, organization_id, config=config) as client:
            window = window_since_cursor(engine, organization_id)
            pulled = pull_organization(engine, client, organization_id, window, run_id="make-run")
            _count_pull(pulled, summary)
            with progress_bar(f"push {name[:24]}", leave=False) as show:
                pushed = push_organization(
                    engine, client, organization_id, worker=worker_name("make-run"), progress=show
                )
            _count_push(pushed, summary)
            summary.api_calls += sum(client.stats.calls.values())
            summary.throttled += client.stats.throttled
    except QboError as exc:
        summary.errors.append(f"organisation {organization_id} ({name}): {exc}")


def _count_pull(pulled: OrganizationPull, summary: CycleSummary) -> None:
    summary.pulled.update(
        customers=pulled.customers.pulled, items=pulled.items.pulled, payments=pulled.payments.pulled
    )
    for reconciled in (pulled.batchly_customers, pulled.batchly_items):
        for action in ("created", "updated", "linked", "deactivated"):
            summary.reconciled[f"{reconciled.entity} {action}"] += getattr(reconciled, action)
        summary.conflicts += reconciled.conflicts
    summary.reconciled["invoice payments updated"] += pulled.batchly_invoices.updated


def _count_push(pushed: PushStats, summary: CycleSummary) -> None:
    summary.pushed.update(pushed.actions)
    summary.failed += pushed.failed
    summary.dead += pushed.dead


def _print_summary(engine: Engine, summary: CycleSummary, elapsed: float) -> None:
    def listing(counts: Counter[str]) -> str:
        return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()) if count) or "nothing"

    section("pulled", listing(summary.pulled))
    section("into batchly", listing(summary.reconciled))
    section("pushed", listing(summary.pushed))
    section("conflicts", f"{summary.conflicts} (review: `batchly-sync conflicts list`)")
    section(
        "errors",
        f"{summary.failed} record(s) failed, {summary.dead} in the dead letter (`batchly-sync queue list --status dead`)",
    )
    for error in summary.errors:
        section("error", error)
    section("api calls", f"{summary.api_calls} to QuickBooks, {summary.throttled} throttled")
    pending = sum(d["pending"] for d in SyncQueue(engine).depth().values())
    section("still queued", f"{pending} record(s)")
    section("time", f"{elapsed:.1f}s")
