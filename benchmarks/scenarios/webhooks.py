"""Webhooks end to end: QuickBooks-side changes reach Batchly through the receiver, Dagster's sensor and CDC repair.

Everything really runs: the sandbox (in this process, throttled as Intuit is, time scale 1) delivers signed webhooks
(CloudEvents by default; one delivery mixes the ``--realms`` companies) to ``batchly-sync webhooks serve`` (a child
process), and ``dagster dev`` runs the project's definitions, whose ``webhook_inbox_sensor`` starts the targeted pulls
and CDC sweeps. Nothing is pulled or launched by hand after the baseline pull.

``--changes`` accountant actions (customer edits, item prices, payments recorded, a payment deleted, a customer
deactivated, an invoice voided) are spread evenly over ``--spread-seconds`` across the companies. For each, the time
from the action in QuickBooks until Batchly shows it (or a later change of the same record) is measured:
``latency_p50_s`` / ``latency_p95_s``. ``reads_per_event`` is the metered QuickBooks reads counted in Batchly's
``qbo_read_meter`` from the first change to the end (targeted pulls and sweeps alike) over the changes made;
``lost_events`` the changes Batchly never showed within ``--deadline-seconds`` after the last one (or after the
receiver came back).

``--receiver-down-seconds N`` stops the receiver (SIGTERM) ``--down-at-seconds`` into the changes and starts it again
N seconds later: the sandbox's deliveries fail meanwhile and the notification that failed holds back the later ones
(Intuit's retry schedule 10 s, 20 s, 30 s, 5 min …), so what happened while it was down reaches Batchly through the
CDC sweep that the receiver's restart makes due at once. ``repair_s`` is the time from the restart until every
change made so far shows in Batchly.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.services.pull.organization import pull_organization
from batchly_pipelines.settings import LOCAL_CLIENT_ID
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import create_engine
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.dagster_stack import DagsterStack, free_port
from batchly_pipelines_tests.support.databases import fresh_database_url
from batchly_pipelines_tests.support.pull import Company, link_invoices_as_pushed
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import connect
from qbo_sandbox.server import SandboxConfig, SandboxServer

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
VERIFIER = "benchmark-verifier-token"
SERVE = [str(Path(sys.executable).with_name("batchly-sync")), "webhooks", "serve"]
POLL_S = 0.5
LIMITS = {
    "per_minute": 500,
    "per_second": 10,
    "concurrent": 10,
    "batch_per_minute": 40,
}  # Intuit's, per realm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--spread-seconds", type=float, default=120.0)
    parser.add_argument("--realms", type=int, default=2, help="QuickBooks companies (one organisation each)")
    parser.add_argument("--format", choices=("cloudevents", "legacy"), default="cloudevents")
    parser.add_argument("--aggregation-seconds", type=float, default=1.0, help="the sandbox's window")
    parser.add_argument("--receiver-down-seconds", type=float, default=0.0)
    parser.add_argument("--down-at-seconds", type=float, default=30.0, help="into the changes")
    parser.add_argument("--deadline-seconds", type=float, default=120.0)
    parser.add_argument("--database", default=POSTGRES_URL, help="a PostgreSQL server URL, or sqlite")
    parser.add_argument("--seed", type=int, default=12)


@dataclass
class Change:
    """One accountant action and the Batchly value that shows it (``key``: the record; ``value``: what it reads
    once this change arrived; a later change of the same key supersedes it)."""

    name: str
    act: Callable[[], Any]
    key: tuple[int, str, str]  # organisation, table, QuickBooks id
    value: Any
    made: float | None = None
    seen: float | None = None


@dataclass
class Tenant:
    """A benchmark organisation: its company and the QuickBooks records the changes act on."""

    company: Company
    customers: list[dict[str, Any]]
    items: list[dict[str, Any]]
    invoices: list[dict[str, Any]]


class Receiver:
    """``batchly-sync webhooks serve`` as a child process on a fixed port (restartable)."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*SERVE, "--port", str(self.port)],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "receiving at " not in line:
            raise RuntimeError(f"the receiver did not start; see {self.log}")
        self.url = line.split("receiving at ", 1)[1].split()[0]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhooks-") as folder,
        fresh_database_url(args.database, Path(folder)) as database_url,
    ):
        engine = create_engine(database_url)
        migrate.upgrade(engine)
        secret_key = Fernet.generate_key().decode()
        config = SandboxConfig(port=0, throttle=True, webhook_aggregation_seconds=args.aggregation_seconds)
        with SandboxServer(config) as sandbox:
            tenants = [_tenant(engine, sandbox, secret_key, n) for n in range(args.realms)]
            changes = _plan(tenants, args.changes, rng)
            admin = tenants[0].company.qbo.admin
            env = {
                **os.environ,
                "BATCHLY_DATABASE_URL": database_url,
                "BATCHLY_SECRET_KEY": secret_key,
                "QBO_ENVIRONMENT": "local",
                "QBO_BASE_URL": sandbox.base_url,
                "QBO_WEBHOOK_VERIFIER_TOKEN": VERIFIER,
            }
            receiver = Receiver(env, free_port(), Path(folder) / "receiver.log")
            receiver.start()
            try:
                with DagsterStack(Path(folder) / "dagster_home", env) as dagster:
                    admin.configure_webhooks(
                        receiver.url, VERIFIER, args.format, aggregation_seconds=args.aggregation_seconds
                    )
                    _warm_up(engine, tenants)
                    reads_before = _reads(engine)
                    figures = _measure(engine, changes, receiver, args)
                    figures["reads"] = _reads(engine) - reads_before
                    dagster.settled_runs()
                    runs = _runs(dagster)
            finally:
                admin.configure_webhooks(None)
                receiver.stop()
            for tenant in tenants:
                tenant.company.client.close()
        figures |= _inbox_and_runs(engine, runs)
        engine.dispose()
    made = [c for c in changes if c.made is not None]
    latencies = sorted(c.seen - c.made for c in made if c.seen is not None and c.made is not None)
    return {
        "changes": len(made),
        "latency_p50_s": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        "latency_max_s": round(latencies[-1], 1) if latencies else None,
        "reads_per_event": round(figures["reads"] / len(made), 3) if made else None,
        "lost_events": sum(1 for c in made if c.seen is None),
        "lost": [c.name for c in made if c.seen is None][:20],
        **figures,
        "database": "sqlite" if args.database == "sqlite" else "postgresql",
        "format": args.format,
        "realms": args.realms,
        "receiver_down_s": args.receiver_down_seconds,
    }


def _tenant(engine: Engine, sandbox: SandboxServer, secret_key: str, n: int) -> Tenant:
    """An organisation connected to a fresh company with customers, items and invoices (linked as pushed), some
    paid, pulled into Batchly as the nightly pulls leave it."""
    qbo = Qbo(sandbox)
    qbo.admin.settings(qbo.realm_id, limits=dict.fromkeys(LIMITS, 0))  # the set-up is not what is measured
    with engine.begin() as conn:
        org = factories.organization(conn, name=f"Webhook Bench {n}")
    connect(engine, org, qbo.realm_id, sandbox.base_url, secret_key)
    client = QuickBooksClient(qbo.realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, qbo.realm_id))
    customers = [qbo.customer(f"Bench {n}-{i}") for i in range(60)]
    items = [qbo.item(f"Service {n}-{i}", "50.00") for i in range(10)]
    invoices = [
        qbo.invoice(customers[i % len(customers)], items[i % len(items)], "100.00", DueDate="2099-01-01")
        for i in range(70)
    ]
    company = Company(engine, sandbox, org, qbo, client)
    for invoice in invoices[:5]:  # paid before: their payments can be deleted
        company.act("record_payment", invoice_id=invoice["Id"])
    pull_organization(engine, client, org, Company.window())
    link_invoices_as_pushed(engine, org, invoices)
    pull_organization(engine, client, org, Company.window())
    qbo.admin.settings(qbo.realm_id, limits=LIMITS)  # Intuit's limits from here on
    return Tenant(company, customers, items, invoices)


def _plan(tenants: list[Tenant], count: int, rng: random.Random) -> list[Change]:
    """``count`` changes across the companies: one payment deleted, one customer deactivated and one invoice voided
    per company, the rest customer edits (40 %), item prices (20 %) and payments (40 %)."""
    plans: list[list[Change]] = []
    shares = [count // len(tenants) + (1 if i < count % len(tenants) else 0) for i in range(len(tenants))]
    for tenant, total in zip(tenants, shares, strict=True):
        company, first = tenant.company, tenant.customers[0]
        customers = iter(tenant.customers[1:-1])  # the last one is the warm-up's
        open_invoices = iter(tenant.invoices[6:])
        paid = tenant.invoices[:5]
        voided = tenant.invoices[5]
        org = company.org
        special = [
            _delete_payment(company, paid[0]),
            Change(
                f"org {org}: customer {first['Id']} deactivated",
                _act(company, "deactivate", entity="Customer", id=first["Id"]),
                (org, "customers.is_active", first["Id"]),
                False,
            ),
            Change(
                f"org {org}: invoice {voided['Id']} voided",
                _act(company, "void_invoice", invoice_id=voided["Id"]),
                (org, "invoices.payment_status", voided["Id"]),
                "voided",
            ),
        ]
        ordinary: list[Change] = []
        for n in range(total - len(special)):
            kind = rng.random()
            if kind < 0.4:
                customer = next(customers)
                notes = f"edited in QuickBooks {org}-{n}"
                ordinary.append(
                    Change(
                        f"org {org}: customer {customer['Id']} notes",
                        _act(company, "update_customer", customer_id=customer["Id"], fields={"Notes": notes}),
                        (org, "customers.notes", customer["Id"]),
                        notes,
                    )
                )
            elif kind < 0.6:
                item = rng.choice(tenant.items)
                price = Decimal(60 + n) + Decimal("0.25")
                ordinary.append(
                    Change(
                        f"org {org}: item {item['Id']} price {price}",
                        _act(company, "set_item_price", item_id=item["Id"], unit_price=str(price)),
                        (org, "items.unit_price", item["Id"]),
                        price,
                    )
                )
            else:
                invoice = next(open_invoices)
                ordinary.append(
                    Change(
                        f"org {org}: payment on invoice {invoice['Id']}",
                        _act(company, "record_payment", invoice_id=invoice["Id"], amount="40.00"),
                        (org, "invoices.amount_paid", invoice["Id"]),
                        Decimal("40.00"),
                    )
                )
        for change in special:  # spread among the ordinary ones
            ordinary.insert(rng.randrange(len(ordinary) + 1), change)
        plans.append(ordinary)
    # interleave the companies so that one delivery mixes them
    mixed: list[Change] = []
    for i in range(max(len(plan) for plan in plans)):
        mixed += [plan[i] for plan in plans if i < len(plan)]
    return mixed


def _act(company: Company, action: str, **payload: Any) -> Callable[[], Any]:
    return lambda: company.act(action, **payload)


def _delete_payment(company: Company, invoice: dict[str, Any]) -> Change:
    def act() -> Any:
        current = company.qbo.read("Invoice", invoice["Id"])
        [payment_id] = [
            link["TxnId"] for link in current.get("LinkedTxn", []) if link["TxnType"] == "Payment"
        ]
        return company.act("delete_payment", payment_id=payment_id)

    return Change(
        f"org {company.org}: payment of invoice {invoice['Id']} deleted",
        act,
        (company.org, "invoices.payment_status", invoice["Id"]),
        "unpaid",
    )


def _warm_up(engine: Engine, tenants: list[Tenant]) -> None:
    """One change per company, not measured: the daemon's first sensor ticks come a while after the webserver is up
    (and the realms' first sweeps run)."""
    keys = [(t.company.org, "customers.notes", t.customers[-1]["Id"]) for t in tenants]
    for tenant in tenants:
        tenant.company.act(
            "update_customer", customer_id=tenant.customers[-1]["Id"], fields={"Notes": "warm-up"}
        )
    deadline = time.monotonic() + 300
    while True:
        values = _values(engine)
        if all(values.get(key) == "warm-up" for key in keys):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up changes never reached Batchly")
        time.sleep(POLL_S)


def _measure(
    engine: Engine, changes: list[Change], receiver: Receiver, args: argparse.Namespace
) -> dict[str, Any]:
    """Make the changes on schedule, note when each shows in Batchly; stop and restart the receiver if asked."""
    spacing = args.spread_seconds / max(len(changes), 1)
    start = time.monotonic()
    down_at = start + args.down_at_seconds if args.receiver_down_seconds else None
    up_at = down_at + args.receiver_down_seconds if down_at is not None else None
    restarted: float | None = None
    repaired: float | None = None
    later: dict[tuple[int, str, str], list[Any]] = {}
    pending = list(changes)
    while True:
        now = time.monotonic()
        stopping = down_at is not None and now >= down_at and restarted is None
        if stopping and receiver.process is not None and receiver.process.poll() is None:
            receiver.stop()
        if up_at is not None and now >= up_at and restarted is None:
            receiver.start()
            restarted = time.monotonic()
        due = [c for c in pending if c.made is None][:1]
        if due and now >= start + spacing * changes.index(due[0]):
            change = due[0]
            change.act()
            change.made = time.monotonic()
            later.setdefault(change.key, []).append(change.value)
        values = _values(engine)
        now = time.monotonic()
        for change in changes:
            if change.made is not None and change.seen is None:
                values_since = later[change.key][later[change.key].index(change.value) :]
                if values.get(change.key) in values_since:
                    change.seen = now
        made_all = all(c.made is not None for c in changes)
        if (
            restarted is not None
            and repaired is None
            and all(c.seen is not None for c in changes if c.made is not None and c.made < restarted)
        ):
            repaired = now
        last = max((c.made for c in changes if c.made is not None), default=start)
        waiting_from = max(last, restarted or 0.0)
        settled = all(c.seen is not None for c in changes) or now > waiting_from + args.deadline_seconds
        if made_all and settled and (up_at is None or restarted is not None):
            break
        time.sleep(POLL_S if made_all else min(POLL_S, spacing / 2))
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "repair_s": round(repaired - restarted, 1)
        if repaired is not None and restarted is not None
        else None,
    }


def _values(engine: Engine) -> dict[tuple[int, str, str], Any]:
    """What Batchly shows now, per (organisation, table.column, QuickBooks id)."""
    values: dict[tuple[int, str, str], Any] = {}
    with engine.connect() as conn:
        for row in conn.execute(
            sa.select(
                s.customers.c.organization_id,
                s.customers.c.qbo_id,
                s.customers.c.notes,
                s.customers.c.is_active,
            )
        ):
            values[(row.organization_id, "customers.notes", row.qbo_id)] = row.notes
            values[(row.organization_id, "customers.is_active", row.qbo_id)] = row.is_active
        items = sa.select(s.items.c.organization_id, s.items.c.qbo_id, s.items.c.unit_price)
        for item in conn.execute(items):
            values[(item.organization_id, "items.unit_price", item.qbo_id)] = item.unit_price
        invoices = sa.select(
            s.invoices.c.organization_id,
            s.invoices.c.qbo_id,
            s.invoices.c.payment_status,
            s.invoices.c.amount_paid,
        )
        for row in conn.execute(invoices):
            values[(row.organization_id, "invoices.payment_status", row.qbo_id)] = row.payment_status
            values[(row.organization_id, "invoices.amount_paid", row.qbo_id)] = row.amount_paid
    return values


def _reads(engine: Engine) -> int:
    meter = s.qbo_read_meter
    with engine.connect() as conn:
        total = conn.execute(
            sa.select(sa.func.sum(meter.c.reads)).where(meter.c.app_id == LOCAL_CLIENT_ID)
        ).scalar()
    return int(total or 0)


def _runs(dagster: DagsterStack) -> list[dict[str, Any]]:
    data = dagster.graphql(
        "{ runsOrError { ... on Runs { results { runId status creationTime startTime endTime "
        "tags { key value } } } } }"
    )
    return list(data["runsOrError"]["results"])


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _inbox_and_runs(engine: Engine, runs: list[dict[str, Any]]) -> dict[str, Any]:
    events = s.qbo_webhook_events
    with engine.connect() as conn:
        states: dict[str, int] = dict(
            conn.execute(sa.select(events.c.status, sa.func.count()).group_by(events.c.status)).all()
        )
        gaps = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(s.qbo_webhook_realms.c.gaps), 0))).scalar()
    pulls = [run for run in runs if any(tag["key"] == "batchly/webhook-realm" for tag in run["tags"])]
    return {
        "inbox_events": sum(states.values()),
        "inbox_pending": states.get("pending", 0),
        "pull_runs": len(pulls),
        "failed_runs": sum(1 for run in pulls if run["status"] != "SUCCESS"),
        # from the sensor's request until the run started, and the run itself (a loaded machine shows here)
        "run_start_wait_p50_s": _median(
            [
                run["startTime"] - run["creationTime"]
                for run in pulls
                if run["startTime"] and run["creationTime"]
            ]
        ),
        "run_duration_p50_s": _median(
            [run["endTime"] - run["startTime"] for run in pulls if run["endTime"] and run["startTime"]]
        ),
        "last_sweep_gaps": int(gaps or 0),
    }
