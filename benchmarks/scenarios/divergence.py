"""Divergence hunt (issue 10): both systems edited at random through their own interfaces, the real pushes and pulls
in between, then compared field by field by the full reconciliation (the ``reconcile_company`` job's comparison).

A sandbox (in this process, throttling off) holds a company seeded with ``--customers`` customers and ``--items``
items; a fresh Batchly database (PostgreSQL by default) holds one organisation connected to it, which pulls them
first. Each of ``--rounds`` rounds (seeded by ``--seed``) makes 3 to 8 random edits, then pushes
(``services.push.push_organization``) and pulls (``services.pull.pull_organization`` from the cursors):

- Batchly, as the app writes (an ordinary transaction; the outbox queues the push): a customer field set or cleared,
  an item's price (QuickBooks owns it) or description, a customer deactivated, a new customer, a new invoice, an
  invoice voided, an invoice corrected (a new one replacing it);
- QuickBooks, through its API (``Qbo``) and the sandbox's accountant actions: a customer field set or cleared, an
  item's price or description, a customer deactivated, a new customer, a payment (part or all of the balance), a
  payment deleted, a refund receipt of a paid invoice, a credit memo applied through a payment, an invoice voided or
  deleted;
- the same field of one customer changed on both sides in the same round;
- a crowded second: 20 to 40 QuickBooks edits stamped with one second (the sandbox's ``same_second`` fault);
- clock skew: the sandbox's clock starts 2.5 or 5 minutes behind ours and now and then jumps forward (1, 2.5 or 5
  minutes, at most 5 minutes ahead of ours), so it runs from -5 to +5 minutes of ours and never backwards (with
  ``--skew-backwards`` it jumps anywhere within ±5 minutes, backwards too: see docs/reconciliation.md);
- an interrupted pull: the pull's QuickBooks reads fail after a few calls, the pull stops mid-way.

Then everything due is pushed and pulled (``--settle`` times, backoffs skipped) and the full reconciliation compares
the two, without repairing: ``differences`` it lists, ``explained`` (an open conflict, the pull's error list, a
failing or dead push), ``silent_divergences`` = differences - explained, with examples of each.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import QueryPage, QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.pull.organization import pull_organization, window_since_cursor
from batchly_pipelines.services.push.organization import push_organization, worker_name
from batchly_pipelines.services.reconciliation.company import reconcile_company
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.push import make_due
from batchly_pipelines_tests.support.sandbox_client import Qbo
from benchmarks.pull_setup import POSTGRES_URL, fresh_database
from qbo_sandbox.admin_client import SandboxAdmin, SandboxAdminError
from qbo_sandbox.server import SandboxConfig, SandboxServer

SKEW_LIMIT = 300  # seconds QuickBooks' clock may run behind or ahead of ours
SKEW_STEPS = (60, 150, 300)  # how far QuickBooks' clock jumps forward when it is moved
CUSTOMER_FIELDS = {  # Batchly column → how QuickBooks' UI writes it (value "" clears it)
    "email": lambda v: {"PrimaryEmailAddr": {"Address": v}},
    "phone": lambda v: {"PrimaryPhone": {"FreeFormNumber": v}},
    "notes": lambda v: {"Notes": v},
    "company_name": lambda v: {"CompanyName": v},
}
EXAMPLES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--customers", type=int, default=30)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--settle", type=int, default=4, help="push + pull passes after the last round")
    parser.add_argument(
        "--skew-backwards",
        action="store_true",
        help="let QuickBooks' clock jump backwards too (a cursor taken from its clock cannot survive that)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a temporary file)",
    )


class Interrupted(RuntimeError):
    """The pull's connection to QuickBooks went away mid-way (injected)."""


@dataclass
class World:
    """Both systems and what the hunt did to them."""

    engine: Engine
    admin: SandboxAdmin
    qbo: Qbo
    org: int
    client: QuickBooksClient
    rng: random.Random
    skew_backwards: bool = False
    skew: int = 0
    serial: int = 0
    done: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def realm(self) -> str:
        return self.qbo.realm_id

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def text(self) -> str:
        """A value with the characters that broke things before: quotes, backslash, percent, unicode."""
        return (
            self.rng.choice(["O'Brien", "back\\slash", "100% sure", "Zoë ünïcode", "plain"])
            + f" {self.next_serial()}"
        )

    # -- reading either side ----------------------------------------------------------------------------
    def rows(self, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = sa.select(table).where(table.c.organization_id == self.org, *where).order_by(table.c.id)
            return [dict(r) for r in conn.execute(query).mappings()]

    def app_update(self, table: sa.Table, row_id: int, **values: Any) -> None:
        """An edit made in the Batchly app: an ordinary transaction, so the outbox queues its push."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))

    def qbo_all(self, entity: str) -> list[dict[str, Any]]:
        where = " WHERE Active IN (true, false)" if entity in ("Customer", "Item") else ""
        return list(self.qbo.query(f"SELECT * FROM {entity}{where} MAXRESULTS 1000").get(entity, []))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the hunt; ``silent_divergences`` must be 0."""
    started = time.monotonic()
    with _world(args) as world:
        _pull(world)
        pushes = pulls = interrupted = 0
        failures: list[str] = []
        for round_no in range(args.rounds):
            _round(world, round_no)
            failures += _push(world)
            pushes += 1
            if world.rng.random() < 0.25:
                interrupted += _interrupted_pull(world)
            failures += _pull(world)
            pulls += 1
        for _ in range(args.settle):
            make_due(world.engine)
            failures += _push(world)
            failures += _pull(world)
        result = reconcile_company(world.engine, world.client, world.org, repair=False)
    explained = [d for d in result.differences if d.explained_by]
    silent = [d for d in result.differences if not d.explained_by]
    return {
        "seed": args.seed,
        "rounds": args.rounds,
        "records": result.summary()["records"],
        "differences": len(result.differences),
        "explained": len(explained),
        "silent_divergences": len(silent),
        "examples": {
            "silent": [d.as_row() for d in silent[:EXAMPLES]],
            "explained": [d.as_row() for d in explained[:EXAMPLES]],
        },
        "operations": dict(sorted(world.done.items())),
        "refused_by_quickbooks": dict(sorted(world.refused.items())),
        "pushes": pushes,
        "pulls": pulls,
        "interrupted_pulls": interrupted,
        "run_failures": failures[:EXAMPLES],
        "final_clock_skew_s": world.skew,
        "skew_backwards": args.skew_backwards,
        "referee_api_calls": result.api_calls,
        "seconds": round(time.monotonic() - started, 1),
        "database": args.database_url.split("@")[-1],
    }


@contextmanager
def _world(args: argparse.Namespace) -> Iterator[World]:
    with SandboxServer(SandboxConfig(throttle=False)) as sandbox, fresh_database(args.database_url) as engine:
        admin = SandboxAdmin(sandbox.base_url)
        realm = admin.new_realm()
        admin.seed(
            realm, customers=args.customers, items=args.items, invoices=0, payments=0, days=30, seed=args.seed
        )
        settings = Settings.from_env(
            {
                "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
                "QBO_BASE_URL": sandbox.base_url,
                "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
            },
            cwd=Path(tempfile.gettempdir()),
        )
        with engine.begin() as conn:
            org = factories.organization(conn, "Divergence Co", "America/New_York")
        tokens = TokenSet.from_response(admin.tokens(realm))
        ConnectionStore(engine, settings.secret_key).save(org, realm, "local", sandbox.base_url, tokens)
        with client_for_organization(engine, settings, org) as client:
            rng = random.Random(args.seed)
            world = World(engine, admin, Qbo(sandbox, realm), org, client, rng, args.skew_backwards)
            world.skew = -rng.choice((SKEW_LIMIT, SKEW_LIMIT // 2))
            admin.advance_clock(world.skew)
            try:
                yield world
            finally:
                admin.advance_clock(-world.skew)


# -- the real pipeline ----------------------------------------------------------------------------------------
def _push(world: World) -> list[str]:
    try:
        push_organization(world.engine, world.client, world.org, worker=worker_name("divergence"))
    except Exception as exc:
        return [f"push: {type(exc).__name__}: {exc}"]
    return []


def _pull(world: World) -> list[str]:
    try:
        pull_organization(world.engine, world.client, world.org, window_since_cursor(world.engine, world.org))
    except Exception as exc:
        return [f"pull: {type(exc).__name__}: {exc}"]
    return []


def _interrupted_pull(world: World) -> int:
    """A pull whose QuickBooks reads fail after 1 to 8 calls."""
    query, left = world.client.query, world.rng.randint(1, 8)

    def failing(statement: str) -> QueryPage:
        nonlocal left
        left -= 1
        if left < 0:
            raise Interrupted("connection to QuickBooks lost mid-pull (injected)")
        return query(statement)

    world.client.query = failing  # type: ignore[method-assign]
    try:
        pull_organization(world.engine, world.client, world.org, window_since_cursor(world.engine, world.org))
    except Interrupted:
        world.done["pull interrupted"] += 1
        return 1
    finally:
        del world.client.query
    return 0


# -- one round ------------------------------------------------------------------------------------------------
def _round(world: World, round_no: int) -> None:
    rng = world.rng
    if rng.random() < 0.2:
        if world.skew_backwards:
            skew = rng.randint(-SKEW_LIMIT, SKEW_LIMIT)
        else:
            skew = min(world.skew + rng.choice(SKEW_STEPS), SKEW_LIMIT)
        world.admin.advance_clock(skew - world.skew)
        world.skew = skew
        world.done["clock moved"] += 1
    crowded = rng.random() < 0.2
    if crowded:
        world.admin.set_faults(world.realm, same_second=True)
    try:
        for _ in range(rng.randint(3, 8)):
            name, action = rng.choice(ACTIONS)
            try:
                if action(world) is not False:
                    world.done[name] += 1
            except (
                SandboxAdminError,
                AssertionError,
            ) as exc:  # QuickBooks refused it (a void with payments…)
                world.refused[f"{name}: {_gist(exc)}"] += 1
        if crowded:
            _burst(world)
    finally:
        if crowded:
            world.admin.set_faults(world.realm)


def _gist(exc: Exception) -> str:
    text = str(exc)
    for code in ("6240", "6140", "6000", "610", "5010", "2020", "6540"):
        if code in text:
            return code
    return text[:60]


def _burst(world: World) -> None:
    """20 to 40 QuickBooks edits in one second (``same_second`` is on)."""
    customers = world.qbo_all("Customer")
    for customer in world.rng.sample(customers, min(len(customers), world.rng.randint(20, 40))):
        world.admin.action(
            world.realm, "update_customer", customer_id=customer["Id"], fields={"Notes": world.text()}
        )
    world.done["crowded second"] += 1


def _linked(world: World, table: sa.Table) -> list[dict[str, Any]]:
    return world.rows(table, table.c.qbo_id.is_not(None))


def _pushed_invoices(world: World) -> list[dict[str, Any]]:
    return world.rows(s.invoices, s.invoices.c.qbo_id.is_not(None), s.invoices.c.status == "open")


# Batchly, as the app writes
def b_customer_field(world: World) -> bool:
    customers = _linked(world, s.customers)
    if not customers:
        return False
    column = world.rng.choice(list(CUSTOMER_FIELDS))
    value = None if world.rng.random() < 0.3 else world.text()
    if column == "email" and value is not None:
        value = f"b{world.next_serial()}@example.com"
    world.app_update(s.customers, world.rng.choice(customers)["id"], **{column: value})
    return True


def b_item(world: World) -> bool:
    items = _linked(world, s.items)
    if not items:
        return False
    item = world.rng.choice(items)
    if world.rng.random() < 0.5:
        world.app_update(s.items, item["id"], unit_price=Decimal(world.rng.randint(100, 99999)) / 100)
    else:
        world.app_update(s.items, item["id"], description=None if world.rng.random() < 0.3 else world.text())
    return True


def b_deactivate(world: World) -> bool:
    customers = [c for c in _linked(world, s.customers) if c["is_active"]]
    if len(customers) < 5:
        return False
    world.app_update(s.customers, world.rng.choice(customers)["id"], is_active=False)
    return True


def b_new_customer(world: World) -> bool:
    with world.engine.begin() as conn:
        factories.customer(
            conn, world.org, f"Batchly {world.text()}", email=f"n{world.next_serial()}@example.com"
        )
    return True


def b_new_invoice(world: World) -> bool:
    customers, items = world.rows(s.customers), _linked(world, s.items)
    if not customers or not items:
        return False
    lines = []
    for line_no in range(1, world.rng.randint(1, 3) + 1):
        quantity, price = Decimal(world.rng.randint(1, 5)), Decimal(world.rng.randint(500, 20000)) / 100
        lines.append(
            (
                line_no,
                world.rng.choice(items)["id"],
                quantity,
                price,
                (quantity * price).quantize(Decimal("0.01")),
            )
        )
    with world.engine.begin() as conn:
        key = conn.execute(
            sa.insert(s.invoices).values(
                organization_id=world.org,
                customer_id=world.rng.choice(customers)["id"],
                doc_number=f"DV-{world.next_serial()}",
                txn_date=date.today(),
                due_date=date.today() + timedelta(days=world.rng.choice([-10, 0, 15, 30])),
                total_amount=sum(line[4] for line in lines),
            )
        ).inserted_primary_key
        assert key is not None
        conn.execute(
            sa.insert(s.invoice_lines),
            [
                {
                    "invoice_id": key[0],
                    "line_no": n,
                    "item_id": i,
                    "quantity": qn,
                    "unit_price": p,
                    "amount": a,
                }
                for n, i, qn, p, a in lines
            ],
        )
    return True


def b_void_invoice(world: World) -> bool:
    invoices = _pushed_invoices(world)
    if not invoices:
        return False
    world.app_update(s.invoices, world.rng.choice(invoices)["id"], status="void")
    return True


def b_correct_invoice(world: World) -> bool:
    invoices = _pushed_invoices(world)
    if not invoices:
        return False
    with world.engine.begin() as conn:
        factories.correction(conn, world.rng.choice(invoices)["id"], f"DV-{world.next_serial()}")
    return True


# QuickBooks, through its API and the accountant's actions
def q_customer_field(world: World, customer: dict[str, Any] | None = None, column: str | None = None) -> bool:
    customers = world.qbo_all("Customer")
    if not customers:
        return False
    chosen = customer or world.rng.choice(customers)
    column = column or world.rng.choice(list(CUSTOMER_FIELDS))
    value = "" if world.rng.random() < 0.3 else world.text()
    if column == "email" and value:
        value = f"q{world.next_serial()}@example.com"
    world.admin.action(
        world.realm, "update_customer", customer_id=chosen["Id"], fields=CUSTOMER_FIELDS[column](value)
    )
    return True


def q_item(world: World) -> bool:
    items = world.qbo_all("Item")
    if not items:
        return False
    item = world.rng.choice(items)
    if world.rng.random() < 0.5:
        world.admin.action(
            world.realm,
            "set_item_price",
            item_id=item["Id"],
            unit_price=str(Decimal(world.rng.randint(100, 99999)) / 100),
        )
    else:
        description = "" if world.rng.random() < 0.3 else world.text()
        world.admin.action(
            world.realm, "update", entity="Item", id=item["Id"], fields={"Description": description}
        )
    return True


def q_deactivate(world: World) -> bool:
    customers = [c for c in world.qbo_all("Customer") if c.get("Active", True)]
    if len(customers) < 5:
        return False
    world.admin.action(world.realm, "deactivate", entity="Customer", id=world.rng.choice(customers)["Id"])
    return True


def q_new_customer(world: World) -> bool:
    world.qbo.customer(
        f"QuickBooks {world.text()}", PrimaryEmailAddr={"Address": f"qn{world.next_serial()}@example.com"}
    )
    return True


def _open_qbo_invoices(world: World) -> list[dict[str, Any]]:
    linked = {row["qbo_id"] for row in _linked(world, s.invoices)}
    return [i for i in world.qbo_all("Invoice") if i["Id"] in linked and Decimal(str(i["Balance"])) > 0]


def q_payment(world: World) -> bool:
    invoices = _open_qbo_invoices(world)
    if not invoices:
        return False
    invoice = world.rng.choice(invoices)
    balance = Decimal(str(invoice["Balance"]))
    amount = balance if world.rng.random() < 0.5 else (balance / 2).quantize(Decimal("0.01"))
    world.admin.action(world.realm, "record_payment", invoice_id=invoice["Id"], amount=str(amount))
    return True


def q_delete_payment(world: World) -> bool:
    payments = world.qbo_all("Payment")
    if not payments:
        return False
    world.admin.action(world.realm, "delete_payment", payment_id=world.rng.choice(payments)["Id"])
    return True


def q_refund(world: World) -> bool:
    paid = [
        i
        for i in world.qbo_all("Invoice")
        if Decimal(str(i["TotalAmt"])) > Decimal(str(i["Balance"]))
        and not str(i.get("PrivateNote") or "").startswith("Voided")
    ]
    if not paid:
        return False
    invoice = world.rng.choice(paid)
    amount = Decimal(str(invoice["TotalAmt"])) - Decimal(str(invoice["Balance"]))
    item = invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
    world.qbo.create(
        "RefundReceipt",
        {
            "CustomerRef": invoice["CustomerRef"],
            "Line": [
                {
                    "Amount": amount,
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {"ItemRef": item},
                }
            ],
            "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
        },
    )
    return True


def q_credit(world: World) -> bool:
    invoices = _open_qbo_invoices(world)
    if not invoices:
        return False
    invoice = world.rng.choice(invoices)
    amount = min(Decimal(str(invoice["Balance"])), Decimal(world.rng.randint(100, 5000)) / 100)
    item = invoice["Line"][0]["SalesItemLineDetail"]["ItemRef"]
    line = {"Amount": amount, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"ItemRef": item}}
    memo = world.qbo.create("CreditMemo", {"CustomerRef": invoice["CustomerRef"], "Line": [line]})
    world.qbo.create(
        "Payment",
        {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": Decimal("0"),
            "Line": [
                {"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]},
                {"Amount": amount, "LinkedTxn": [{"TxnId": memo["Id"], "TxnType": "CreditMemo"}]},
            ],
        },
    )
    return True


def q_void_or_delete_invoice(world: World) -> bool:
    linked = {row["qbo_id"] for row in _linked(world, s.invoices)}
    invoices = [i for i in world.qbo_all("Invoice") if i["Id"] in linked]
    if not invoices:
        return False
    action = world.rng.choice(["void_invoice", "delete_invoice"])
    world.admin.action(world.realm, action, invoice_id=world.rng.choice(invoices)["Id"])
    return True


def both_sides(world: World) -> bool:
    """One customer's field changed in Batchly and in QuickBooks in the same round, in a random order."""
    customers = _linked(world, s.customers)
    if not customers:
        return False
    customer = world.rng.choice(customers)
    column = world.rng.choice(list(CUSTOMER_FIELDS))
    qbo = {"Id": customer["qbo_id"]}

    def ours() -> None:
        value = None if world.rng.random() < 0.3 else world.text()
        world.app_update(
            s.customers,
            customer["id"],
            **{
                column: value
                if column != "email" or value is None
                else f"bb{world.next_serial()}@example.com"
            },
        )

    sides: list[Callable[[], object]] = [ours, lambda: q_customer_field(world, qbo, column)]
    world.rng.shuffle(sides)
    for side in sides:
        side()
    return True


ACTIONS: list[tuple[str, Callable[[World], bool]]] = [
    ("batchly customer field", b_customer_field),
    ("batchly customer field", b_customer_field),
    ("batchly item", b_item),
    ("batchly deactivate customer", b_deactivate),
    ("batchly new customer", b_new_customer),
    ("batchly new invoice", b_new_invoice),
    ("batchly new invoice", b_new_invoice),
    ("batchly void invoice", b_void_invoice),
    ("batchly correct invoice", b_correct_invoice),
    ("quickbooks customer field", q_customer_field),
    ("quickbooks customer field", q_customer_field),
    ("quickbooks item", q_item),
    ("quickbooks deactivate customer", q_deactivate),
    ("quickbooks new customer", q_new_customer),
    ("quickbooks payment", q_payment),
    ("quickbooks payment", q_payment),
    ("quickbooks delete payment", q_delete_payment),
    ("quickbooks refund", q_refund),
    ("quickbooks credit memo", q_credit),
    ("quickbooks void or delete invoice", q_void_or_delete_invoice),
    ("both sides, one field", both_sides),
    ("both sides, one field", both_sides),
]
