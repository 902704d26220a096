"""One night of a fleet: N organisations, each in its own sandbox realm, pulled by the nightly schedules' runs on a
real deployment — a gRPC code server, the webserver and the daemon as separate processes, Dagster's storage on
PostgreSQL, the Batchly database on PostgreSQL (issue 15).

Set-up (not timed): a throttled sandbox process (Intuit's limits per realm) with N realms of ``--customers`` (20),
``--items`` (10) and ``--invoices`` (20) with payments each; N organisations connected to them; the initial import
done (every company pulled once, its invoices linked as the push leaves them); then the accountant's day in each
company (``--changes`` customers edited and invoices paid). ``--failing`` realms answer 500 to everything.
``--organizations 100,300,1000`` measures each size as its own night, one after the other (a row each).
Every sensor runs, ``webhook_inbox_sensor`` included: with no receiver, no event arrives, and the CDC sweeps it asks
for are batched (``sweep_webhook_realms`` runs of up to ``BATCHLY_WEBHOOK_SWEEP_BATCH`` realms, four runs per
15 minutes at a thousand realms). The first sweeps, due at once when the deployment starts, run before the night and
bring in the accountant's day as the day's sweeps of a deployment would have (the night starts once every realm but
the failing ones was swept and no run is left); the sweeps that come due during the night run beside the nightly runs, in the CPU and ``api_reads`` measured,
and are counted apart (``sweep_runs``, ``failed_sweep_runs``: a ``--failing`` realm fails its sweeps too).

Timed: the deployment starts and the company sensor adds the N company partitions (``sensor_tick_s``: its longest
tick with every company known; ``sensor_adding_tick_s``: the one that added them); the runs the three nightly
schedules ask for (evaluated for tonight, submitted through the webserver) go through the queue until the last ends
(``wall_s``). The night's pushes are in it: when the night starts, the accountant's day in Batchly (a new customer
and ``--new-invoices`` invoices per company) is queued, and ``sync_queue_sensor`` pushes it in batched
``push_to_quickbooks`` runs beside the pulls; ``wall_s`` ends when the last pull run has ended and every company but
the failing ones has pushed everything (``push_runs``, ``failed_push_runs``, ``unpushed_organizations``; ``runs``
counts pulls and pushes). ``cpu_s_per_organization``: CPU seconds of every Dagster process (servers and runs) during the night,
per organisation (``servers_cpu_s``: the webserver's, daemon's and code server's own part); ``sandbox_cpu_s`` apart.
Then, with N companies, the asset page and the partition status of ``qbo_customers`` are timed through GraphQL.
``failed_organizations``: companies not materialised on all six pull assets; ``storage_errors``: database errors in
the deployment's logs; ``max_concurrent_per_realm``: the sandbox's peak of requests in flight in any realm (Intuit
allows 10); ``throttled``: 429s the sandbox answered; ``api_reads``: requests the realms served during the night.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Connection, Engine, make_url

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.fleet import run_fleet
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import EPOCH, pull_organization, reconcile_invoice_payments
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.deployment import LOCATION, Deployment
from benchmarks.pull_setup import POSTGRES_URL, fresh_database
from qbo_sandbox.admin_client import SandboxAdmin, SandboxAdminError

JOBS = ("pull_payments", "pull_customers", "pull_items")  # 02:00, 03:00, 04:00
ASSETS = (
    "qbo_customers",
    "batchly_customers",
    "qbo_items",
    "batchly_items",
    "qbo_payments",
    "batchly_invoice_payments",
)
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
STORAGE_ERRORS = re.compile(
    r"OperationalError|DatabaseError|database is locked|deadlock detected|could not serialize"
)
LAUNCH = """mutation($params: ExecutionParams!) { launchPipelineExecution(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
RUNS = """query($ids: [String!]) { runsOrError(filter: {runIds: $ids}) { ... on Runs { results { runId status
  startTime endTime } } } }"""
SENSOR_TICKS = """{ sensorOrError(sensorSelector: {repositoryLocationName: "batchly_pipelines",
  repositoryName: "__repository__", sensorName: "company_partitions_sensor"}) { ... on Sensor { sensorState {
  ticks(limit: 20) { status timestamp endTimestamp dynamicPartitionsRequestResults { partitionKeys } } } } } }"""
ASSET_PAGE = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { id description
  partitionDefinition { description dimensionTypes { name dynamicPartitionsDefinitionName } }
  partitionStats { numMaterialized numMaterializing numPartitions numFailed }
  assetMaterializations(limit: 1) { runId partition timestamp metadataEntries { label } }
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { status } } } } } } }"""
PARTITION_STATUS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions
  materializingPartitions unmaterializedPartitions } } } } }"""
CATALOG = """{ assetsOrError { ... on AssetConnection { nodes { key { path } } } } }"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument(
        "--organizations",
        type=_sizes,
        default=[100],
        help="organisations; several sizes (100,300,1000) are measured one after the other, a row each",
    )
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--invoices", type=int, default=20)
    parser.add_argument(
        "--changes", type=int, default=2, help="customers edited and invoices paid per company"
    )
    parser.add_argument(
        "--failing", type=int, default=0, help="companies whose QuickBooks answers 500 all night"
    )
    parser.add_argument(
        "--new-invoices",
        type=int,
        default=2,
        help="invoices made in Batchly per company during the day (one for a new customer): the night's pushes",
    )
    parser.add_argument(
        "--batch", type=int, default=250, help="companies per nightly run (BATCHLY_NIGHTLY_BATCH)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="companies at once per run (BATCHLY_COMPANY_WORKERS)"
    )
    parser.add_argument(
        "--database-url", default=POSTGRES_URL, help="the PostgreSQL server of both databases"
    )


def _sizes(text: str) -> list[int]:
    """``100`` or ``100,300,1000``."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("organisations: a positive number, or several separated by commas")
    return sizes


@contextlib.contextmanager
def _sandbox() -> Iterator[tuple[str, psutil.Process]]:
    """A throttled ``qbo-sandbox serve`` process; its base URL and process."""
    command = [sys.executable, "-m", "qbo_sandbox.cli", "serve", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        match = re.search(r"listening on (http://\S+)", process.stdout.readline())
        if match is None:
            raise RuntimeError("qbo-sandbox did not start")
        yield match.group(1), psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Company:
    """One organisation of the fleet, its realm and the QuickBooks ids seeded there."""

    organization_id: int
    realm_id: str
    seeded: dict[str, list[str]]


def _connect_fleet(
    engine: Engine, admin: SandboxAdmin, base_url: str, key: str, args: argparse.Namespace
) -> list[Company]:
    """N seeded realms and N organisations connected to them."""
    plan = {
        "customers": args.customers,
        "items": args.items,
        "invoices": args.invoices,
        "payments": args.invoices,
    }
    store = ConnectionStore(engine, key)
    fleet = []
    for n in range(args.organizations):
        name = f"Fleet Company {n + 1:04d}"
        realm = admin.new_realm(company_name=name)
        seeded = admin.seed(realm, **plan, days=20, seed=n)
        with engine.begin() as conn:
            org = conn.execute(
                sa.insert(s.organizations).values(name=name, timezone="UTC")
            ).inserted_primary_key
        assert org is not None
        store.save(int(org[0]), realm, "local", base_url, TokenSet.from_response(admin.tokens(realm)))
        fleet.append(Company(int(org[0]), realm, seeded))
    return fleet


def _link_invoices(engine: Engine, organization_id: int, invoices: list[dict[str, Any]]) -> None:
    """Batchly twins of the company's QuickBooks invoices, as the push leaves them (nothing is queued)."""
    with engine.connect() as conn:
        customers = dict(
            conn.execute(
                sa.select(s.customers.c.qbo_id, s.customers.c.id).where(
                    s.customers.c.organization_id == organization_id
                )
            ).all()
        )
    rows = [
        {
            "organization_id": organization_id,
            "customer_id": customers[invoice["CustomerRef"]["value"]],
            "doc_number": invoice["DocNumber"],
            "txn_date": date.fromisoformat(invoice["TxnDate"]),
            "due_date": date.fromisoformat(invoice["DueDate"]) if invoice.get("DueDate") else None,
            "total_amount": Decimal(str(invoice["TotalAmt"])),
            "qbo_id": invoice["Id"],
            "sync_status": "synced",
        }
        for invoice in invoices
    ]
    if rows:
        with sync_transaction(engine) as conn:
            conn.execute(sa.insert(s.invoices), rows)


def _initial_import(engine: Engine, settings: Settings, fleet: list[Company]) -> None:
    """Every company pulled once and its invoices linked: the state a fleet is in before any night."""

    def one(org: int) -> None:
        with client_for_organization(engine, settings, org) as client:
            pull_organization(engine, client, org, Window(EPOCH, utcnow().replace(microsecond=0)))
            _link_invoices(engine, org, list(client.query_all("Invoice")))
        reconcile_invoice_payments(engine, org)

    outcomes = run_fleet([c.organization_id for c in fleet], one, workers=8, attempts=1)
    failed = [o for o in outcomes if o.failed]
    if failed:
        raise RuntimeError(f"initial import failed for {len(failed)} companies: {failed[0].error}")


def _accountants_day(admin: SandboxAdmin, fleet: list[Company], changes: int) -> int:
    """In each company, ``changes`` customers edited and ``changes`` invoices paid; how many changes were made."""
    made = 0
    for company in fleet:
        for n, customer_id in enumerate(company.seeded.get("Customer", [])[:changes]):
            admin.action(
                company.realm_id, "update_customer", customer_id=customer_id, fields={"Notes": f"night {n}"}
            )
            made += 1
        paid = 0
        for invoice_id in reversed(company.seeded.get("Invoice", [])):
            if paid == changes:
                break
            with contextlib.suppress(SandboxAdminError):  # already paid in full
                admin.action(company.realm_id, "record_payment", invoice_id=invoice_id)
                paid += 1
        made += paid
    return made


def _first_linked(conn: Connection, table: sa.Table, organization_id: int) -> int:
    """The organisation's first record of ``table`` that is linked to QuickBooks."""
    return conn.execute(
        sa.select(table.c.id)
        .where(table.c.organization_id == organization_id, table.c.qbo_id.is_not(None))
        .order_by(table.c.id)
        .limit(1)
    ).scalar_one()


def _batchly_day(engine: Engine, fleet: list[Company], invoices: int) -> int:
    """In each organisation, what the accountant's day adds in Batchly: a new customer and ``invoices`` new invoices
    (the first for the new customer, the others for a customer already in QuickBooks), each line an item already
    there — the outbox queues them for the night's pushes. How many records were queued."""
    made = 0
    for company in fleet:
        org = company.organization_id
        with engine.begin() as conn:
            linked, item = (_first_linked(conn, table, org) for table in (s.customers, s.items))
            new = factories.customer(conn, org, display_name=f"Night Customer {org}")
            made += 1
            for n in range(invoices):
                factories.invoice(
                    conn, org, new if n == 0 else linked, item, doc_number=f"NIGHT-{org}-{n + 1}"
                )
                made += 1
    return made


def _unpushed(engine: Engine, organization_ids: set[int]) -> dict[int, int]:
    """Queue rows not pushed yet (pending or in progress), per organisation of ``organization_ids``."""
    q = s.sync_queue.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(q.organization_id, sa.func.count())
            .where(q.status.in_(("pending", "in_progress")))
            .group_by(q.organization_id)
        ).all()
    return {org: count for org, count in rows if org in organization_ids}


def _wait_for_pushes(engine: Engine, organization_ids: set[int], timeout: float = 1800.0) -> float:
    """Wait until every organisation of ``organization_ids`` has pushed what the day queued; the time it was seen
    (``time.time()``, polled every 2 s)."""
    deadline = time.monotonic() + timeout
    while _unpushed(engine, organization_ids):
        if time.monotonic() > deadline:
            break
        time.sleep(2.0)
    return time.time()


def _push_runs(since: datetime) -> tuple[int, int, int]:
    """The ``push_to_quickbooks`` runs created since ``since``: how many, how many failed, the most organisations
    one run pushed."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    with DagsterInstance.get() as instance:
        records = instance.get_run_records(RunsFilter(job_name="push_to_quickbooks", created_after=since))
    largest = max((int(r.dagster_run.tags.get("batchly/push_batch", "1")) for r in records), default=0)
    return len(records), sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in records), largest


def _requests(counters: dict[str, Any]) -> int:
    return sum(int(realm.get("requests_total", 0)) for realm in counters["realms"].values())


def _tonights_runs(now: datetime) -> list[tuple[str, dict[str, str]]]:
    """The runs the three nightly schedules ask for tonight: ``(job, tags)`` each."""
    from dagster import DagsterInstance, build_schedule_context

    from batchly_pipelines.definitions import defs

    wanted: list[tuple[str, dict[str, str]]] = []
    with DagsterInstance.get() as instance:
        for name, job in zip(("payments_nightly", "customers_nightly", "items_nightly"), JOBS, strict=True):
            schedule = defs.resolve_schedule_def(name)
            context = build_schedule_context(instance=instance, scheduled_execution_time=now)
            result = schedule.evaluate_tick(context)
            wanted.extend((job, dict(request.tags)) for request in result.run_requests or [])
    return wanted


def _timed(deployment: Deployment, query: str, variables: dict[str, Any] | None = None) -> float:
    started = time.monotonic()
    deployment.graphql(query, variables)
    return round(time.monotonic() - started, 3)


def _sensor_ticks(deployment: Deployment) -> tuple[float, float]:
    """The company sensor's longest tick that added (or removed) companies, and its longest tick with every company
    known. A tick that only adds partitions requests no run, so Dagster records it as SKIPPED like a quiet one: the
    two are told apart by the partition requests the tick made, not by its status."""
    ticks = deployment.graphql(SENSOR_TICKS)["sensorOrError"]["sensorState"]["ticks"]

    def longest(adding: bool) -> float:
        spans = [
            t["endTimestamp"] - t["timestamp"]
            for t in ticks
            if t.get("endTimestamp")
            and t["status"] in ("SUCCESS", "SKIPPED")
            and bool(t.get("dynamicPartitionsRequestResults")) == adding
        ]
        return round(max(spans), 3) if spans else -1.0

    return longest(adding=True), longest(adding=False)


def _wait_for_a_quiet_tick(deployment: Deployment, timeout: float = 120.0) -> None:
    """Wait for a company sensor tick with every company already known (skipped, and no partition added)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks = deployment.graphql(SENSOR_TICKS)["sensorOrError"]["sensorState"]["ticks"]
        if any(
            t["status"] == "SKIPPED"
            and t.get("endTimestamp")
            and not t.get("dynamicPartitionsRequestResults")
            for t in ticks
        ):
            return
        time.sleep(2.0)


def _wait_for_companies(deployment: Deployment, count: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = deployment.graphql(
            """{ assetNodeOrError(assetKey: {path: ["qbo_customers"]}) { ... on AssetNode {
            partitionStats { numPartitions } } } }"""
        )
        if data["assetNodeOrError"]["partitionStats"]["numPartitions"] >= count:
            return
        time.sleep(1.0)
    raise RuntimeError("the company sensor did not add every company in time")


def _night(
    deployment: Deployment, runs: list[tuple[str, dict[str, str]]]
) -> tuple[float, list[dict[str, Any]]]:
    """Submit the night's runs through the webserver and wait for the last; wall seconds and the runs."""
    started = time.time()
    ids = []
    for job, tags in runs:
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": "__repository__",
                "jobName": job,
            },
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            "runConfigData": {},
        }
        launched = deployment.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"could not launch {job}: {launched}")
        ids.append(launched["run"]["runId"])
    while True:
        results = deployment.graphql(RUNS, {"ids": ids})["runsOrError"]["results"]
        if len(results) == len(ids) and all(r["status"] in FINISHED for r in results):
            break
        time.sleep(2.0)
    end = max(float(r["endTime"] or time.time()) for r in results)
    return round(end - started, 1), results


def _settle(deployment: Deployment, timeout: float = 300.0) -> None:
    """Wait until no run is queued or in progress (runs sensors started before the night)."""
    deadline = time.monotonic() + timeout
    query = """{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) { ... on Runs {
      results { runId } } } }"""
    while deployment.graphql(query)["runsOrError"]["results"] and time.monotonic() < deadline:
        time.sleep(1.0)


def _wait_for_first_sweeps(engine: Engine, failing: set[str], timeout: float = 600.0) -> None:
    """Wait until ``webhook_inbox_sensor``'s first sweeps (every realm is due when the deployment starts) have
    swept every realm but the failing ones."""
    from batchly_pipelines.services.webhooks.repair import sweeps_due

    deadline = time.monotonic() + timeout
    while unswept := set(sweeps_due(engine)) - failing:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the first CDC sweeps left {len(unswept)} realm(s) unswept after {timeout:.0f} s"
            )
        time.sleep(2.0)


def _sweep_runs(since: datetime) -> tuple[int, int]:
    """The ``sweep_webhook_realms`` runs created since ``since``, and how many of them failed."""
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    with DagsterInstance.get() as instance:
        records = instance.get_run_records(RunsFilter(job_name="sweep_webhook_realms", created_after=since))
    return len(records), sum(r.dagster_run.status == DagsterRunStatus.FAILURE for r in records)


def _failed_organizations(fleet: list[Company]) -> set[int]:
    from dagster import AssetKey, DagsterInstance

    from batchly_pipelines.defs.partitions import organization_id

    with DagsterInstance.get() as instance:
        done = None
        for asset in ASSETS:
            orgs = {organization_id(key) for key in instance.get_materialized_partitions(AssetKey(asset))}
            done = orgs if done is None else done & orgs
    return {c.organization_id for c in fleet} - (done or set())


@contextlib.contextmanager
def _empty_database(url: str) -> Iterator[str]:
    """A new, empty database on the server of ``url`` for Dagster's own storage (dropped afterwards); its URL."""
    server = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"dagster_bench_{uuid.uuid4().hex[:10]}"
    with server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        server.dispose()


def _storage_errors(home: Path) -> int:
    return sum(len(STORAGE_ERRORS.findall(log.read_text(errors="replace"))) for log in home.glob("*.log"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one night of ``--organizations`` companies; with several sizes, each its own night (a fresh
    sandbox, databases and deployment), one after the other: a row per size."""
    sizes = list(args.organizations)
    rows = [_measure(argparse.Namespace(**{**vars(args), "organizations": n})) for n in sizes]
    if len(rows) == 1:
        return rows[0]
    return {
        "sizes": sizes,
        "rows": rows,
        "wall_s_per_organization": [round(row["wall_s"] / row["organizations"], 3) for row in rows],
    }


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one night of ``args.organizations`` companies."""
    load_before = os.getloadavg()
    key = Fernet.generate_key().decode()
    with (
        _sandbox() as (base_url, sandbox),
        fresh_database(args.database_url) as engine,
        _empty_database(args.database_url) as dagster_url,
    ):
        folder = tempfile.mkdtemp(prefix="night-")  # kept: the deployment's logs are read after a run
        env = {
            "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "BATCHLY_SECRET_KEY": key,
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": base_url,
            "BATCHLY_NIGHTLY_BATCH": str(args.batch),
            "BATCHLY_COMPANY_WORKERS": str(args.workers),
        }
        os.environ.update(env)
        settings = Settings.from_env(env, cwd=Path(folder))
        admin = SandboxAdmin(base_url)
        setup_started = time.monotonic()
        fleet = _connect_fleet(engine, admin, base_url, key, args)
        _initial_import(engine, settings, fleet)
        changes = _accountants_day(admin, fleet, args.changes)
        for company in fleet[: args.failing]:
            admin.set_faults(company.realm_id, error_500=1.0)
        setup_s = round(time.monotonic() - setup_started, 1)
        home = Path(folder) / "dagster_home"
        with Deployment(home, dagster_url, env) as deployment:
            os.environ["DAGSTER_HOME"] = str(home)
            os.environ["DAGSTER_POSTGRES_URL"] = dagster_url
            _wait_for_companies(deployment, len(fleet))
            _wait_for_first_sweeps(engine, {company.realm_id for company in fleet[: args.failing]})
            _settle(deployment)
            _wait_for_a_quiet_tick(deployment)
            admin.reset_counters()
            sandbox_cpu = sum(sandbox.cpu_times()[:2])
            cpu_before, servers_before = deployment.cpu_seconds(), deployment.server_cpu_seconds()
            night_started = datetime.now(UTC)
            queued = _batchly_day(engine, fleet, args.new_invoices)  # sync_queue_sensor pushes them tonight
            runs = _tonights_runs(night_started)
            wall_s, results = _night(deployment, runs)
            pushing = {c.organization_id for c in fleet[args.failing :]}
            pushed_at = _wait_for_pushes(engine, pushing)
            wall_s = max(wall_s, round(pushed_at - night_started.timestamp(), 1))
            unpushed = _unpushed(engine, pushing)
            push_runs, failed_push_runs, largest_push_batch = _push_runs(night_started)
            sweep_runs, failed_sweep_runs = _sweep_runs(night_started)
            time.sleep(1.0)  # a last CPU sample of the run processes
            cpu_s = deployment.cpu_seconds() - cpu_before
            servers_cpu_s = deployment.server_cpu_seconds() - servers_before
            sandbox_cpu = sum(sandbox.cpu_times()[:2]) - sandbox_cpu
            counters = admin.counters()
            asset_page_s = _timed(deployment, ASSET_PAGE, {"key": {"path": ["qbo_customers"]}})
            partition_status_s = _timed(deployment, PARTITION_STATUS, {"key": {"path": ["qbo_customers"]}})
            catalog_s = _timed(deployment, CATALOG)
            failed_pulls = _failed_organizations(fleet)
            failed = len(failed_pulls | set(unpushed))
            adding_tick_s, sensor_tick_s = _sensor_ticks(deployment)
        storage_errors = _storage_errors(home)
    realms = counters["realms"].values()
    return {
        "organizations": len(fleet),
        "wall_s": wall_s,
        "cpu_s_per_organization": round(cpu_s / len(fleet), 3),
        "cpu_s": round(cpu_s, 1),
        "servers_cpu_s": round(servers_cpu_s, 1),
        "sandbox_cpu_s": round(sandbox_cpu, 1),
        "runs": len(results) + push_runs,
        "failed_runs": sum(r["status"] != "SUCCESS" for r in results) + failed_push_runs,
        "pull_runs": len(results),
        "failed_pull_runs": sum(r["status"] != "SUCCESS" for r in results),
        "push_runs": push_runs,
        "failed_push_runs": failed_push_runs,
        "largest_push_batch": largest_push_batch,
        "pushed_records_queued": queued,
        "failed_organizations": failed,
        "failed_pull_organizations": len(failed_pulls),
        "unpushed_organizations": len(unpushed),
        "sweep_runs": sweep_runs,
        "failed_sweep_runs": failed_sweep_runs,
        "failing_on_purpose": args.failing,
        "storage_errors": storage_errors,
        "max_concurrent_per_realm": max((int(r.get("peak_in_flight", 0)) for r in realms), default=0),
        "throttled": sum(int(r.get("throttled", 0)) for r in realms),
        "api_reads": _requests(counters),
        "changes": changes,
        "sensor_tick_s": sensor_tick_s,
        "sensor_adding_tick_s": adding_tick_s,
        "asset_page_s": asset_page_s,
        "partition_status_s": partition_status_s,
        "asset_catalog_s": catalog_s,
        "setup_s": setup_s,
        "logs": str(home),
        "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in os.getloadavg()],
    }
