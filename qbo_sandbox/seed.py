"""New companies (chart of accounts, CompanyInfo) and deterministic, realistic demo data."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from qbo_sandbox.books import Books
from qbo_sandbox.clock import Clock, metadata_time
from qbo_sandbox.state import Event, Realm, SandboxState

DEMO_REALM_ID = "9341453050298760"
DEMO_COMPANY_NAME = "Batchly Demo Company"

CHART_OF_ACCOUNTS = (
    ("Services", "Income", "ServiceFeeIncome"),
    ("Sales of Product Income", "Income", "SalesOfProductIncome"),
    ("Inventory Asset", "Other Current Asset", "Inventory"),
    ("Cost of Goods Sold", "Cost of Goods Sold", "SuppliesMaterialsCogs"),
    ("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
    ("Checking", "Bank", "Checking"),
)

FIRST_NAMES = (
    "María",
    "Zoë",
    "Seán",
    "Chloé",
    "Björn",
    "Renée",
    "José",
    "Amélie",
    "Liam",
    "Aoife",
    "Dmitri",
    "Ngozi",
)
LAST_NAMES = (
    "O'Brien",
    "D'Angelo",
    "Müller",
    "Peña",
    "Ångström",
    "Nguyễn",
    "García",
    "O'Connor",
    "Kowalski",
    "Dubois",
)
COMPANIES = (
    "O'Reilly's Hardware",
    "Café Lumière",
    "Smith & Sons",
    "Bäckerei Köhler",
    "The Baker's Dozen",
    "Niño Textiles",
    "Crêpes & Co.",
    "Zürich Imports",
    "Joe's Garage",
    "Ørsted Lighting",
)
ITEMS = (
    ("Consulting Hour", "Service", "150.00"),
    ("Pallet Delivery", "Service", "85.50"),
    ("Widget Pro", "NonInventory", "49.99"),
    ("On-site Installation", "Service", "95.00"),
    ("Crème Brûlée Kit", "NonInventory", "24.75"),
    ("Maintenance Plan (Annual)", "Service", "1200.00"),
    ("Smith's Premium Bolt", "NonInventory", "0.35"),
    ("Façade Cleaning", "Service", "310.00"),
)
PAYMENT_KINDS = ("full", "partial", "refunded", "voided", "deleted")
PAYMENT_WEIGHTS = (50, 25, 10, 8, 7)
CITIES = (("San José", "CA", "95113"), ("Coeur d'Alene", "ID", "83814"), ("Portland", "OR", "97201"))


def _silent(event: Event) -> None:
    """Set-up and seeded data predate the app: no webhooks, no write counters."""


def new_realm_id() -> str:
    """A random 16-digit realm id, shaped like Intuit's."""
    return "93414" + "".join(str(secrets.randbelow(10)) for _ in range(11))


def create_company(
    state: SandboxState, clock: Clock, realm_id: str | None, company_name: str | None
) -> Realm:
    """Create a realm with a chart of accounts (income accounts for items) and its CompanyInfo."""
    realm = Realm(realm_id or new_realm_id(), company_name or "Sandbox Company_US_1")
    books = Books(realm, clock, _silent)
    for name, account_type, sub_type in CHART_OF_ACCOUNTS:
        books.create("Account", {"Name": name, "AccountType": account_type, "AccountSubType": sub_type})
    stamp = metadata_time(clock.now_dt())
    realm.put(
        "CompanyInfo",
        {
            "Id": "1",
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "CompanyName": realm.company_name,
            "LegalName": realm.company_name,
            "Country": "US",
            "CompanyAddr": {
                "Line1": "2600 Marine Way",
                "City": "Mountain View",
                "CountrySubDivisionCode": "CA",
            },
            "FiscalYearStartMonth": "January",
            "SupportedLanguages": "en",
            "MetaData": {"CreateTime": stamp, "LastUpdatedTime": stamp},
        },
    )
    state.add_realm(realm)
    return realm


def open_company(state: SandboxState, clock: Clock, realm_id: str | None) -> Realm:
    """The realm with this id (created when missing), or the default realm (created when there is none)."""
    with state.lock:
        wanted = realm_id or state.default_realm_id
        existing = state.realm(wanted) if wanted else None
        return existing or create_company(state, clock, wanted, None)


@dataclass
class SeedPlan:
    """How much demo data to create, and over how many days of MetaData times."""

    customers: int = 10
    items: int = 5
    invoices: int = 20
    payments: int = 12
    seed: int = 1
    days: int = 30


DEMO_PLAN = SeedPlan(customers=25, items=8, invoices=60, payments=40, seed=2026, days=60)


class Seeder:
    """Creates demo data through the regular write path, with timestamps spread over the last ``days`` days."""

    def __init__(self, realm: Realm, clock: Clock, plan: SeedPlan) -> None:
        self.realm = realm
        self.clock = clock
        self.plan = plan
        self.created: dict[str, list[str]] = {}
        self.rng = random.Random(plan.seed)
        self.end = clock.now_dt().replace(microsecond=0)
        self.start = self.end - timedelta(days=plan.days)

    def _at(self, low: float, high: float) -> datetime:
        """A random instant between two fractions of the window."""
        span = (self.end - self.start).total_seconds()
        return self.start + timedelta(seconds=int(span * self.rng.uniform(low, high)))

    def _write(self, at: datetime, operation: str, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        books = Books(self.realm, self.clock, _silent, at=at)
        _, obj = getattr(books, operation)(entity, payload)
        if operation == "create":
            self.created.setdefault(entity, []).append(obj["Id"])
        return obj

    def run(self) -> dict[str, list[str]]:
        """Create everything; returns the ids created per entity."""
        with self.realm.lock:
            customers = [self._customer(n) for n in range(self.plan.customers)]
            items = [self._item(n) for n in range(self.plan.items)]
            invoices = [
                self._invoice(customers, items)
                for _ in range(self.plan.invoices if customers and items else 0)
            ]
            paid = self.rng.sample(invoices, min(self.plan.payments, len(invoices)))
            for invoice, kind in zip(paid, self._payment_kinds(len(paid)), strict=True):
                self._payment(invoice, kind)
            for entity in self.created:  # build the query/CDC indexes now rather than on the first query
                self.realm.time_index(entity)
                self.realm.time_index(entity, tombstones=True)
        return self.created

    def _customer(self, n: int) -> dict[str, Any]:
        rng = self.rng
        given, family = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        company = COMPANIES[n % len(COMPANIES)] if rng.random() < 0.5 else None
        base = company or f"{given} {family}"
        round_no = n // len(COMPANIES)
        display = base if round_no == 0 and not self._name_taken(base) else f"{base} {n + 1}"
        city, region, postal = rng.choice(CITIES)
        slug = "".join(ch for ch in display.lower() if ch.isascii() and ch.isalnum())
        payload: dict[str, Any] = {
            "DisplayName": display,
            "GivenName": given,
            "FamilyName": family,
            "PrimaryEmailAddr": {"Address": f"{slug or 'customer'}@example.com"},
            "PrimaryPhone": {"FreeFormNumber": f"(555) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"},
            "BillAddr": {
                "Line1": f"{rng.randint(1, 999)} Main St",
                "City": city,
                "CountrySubDivisionCode": region,
                "PostalCode": postal,
                "Country": "USA",
            },
        }
        if company:
            payload["CompanyName"] = company
        return self._write(self._at(0.0, 0.2), "create", "Customer", payload)

    def _name_taken(self, name: str) -> bool:
        return any(
            c["DisplayName"].casefold() == name.casefold() for c in self.realm.objects["Customer"].values()
        )

    def _item(self, n: int) -> dict[str, Any]:
        name, item_type, price = ITEMS[n % len(ITEMS)]
        if n >= len(ITEMS):
            name = f"{name} #{n + 1}"
        income = next(a for a in self.realm.objects["Account"].values() if a["AccountType"] == "Income")
        payload = {
            "Name": name,
            "Type": item_type,
            "UnitPrice": Decimal(price),
            "Sku": f"SKU-{n + 1:04d}",
            "Description": f"{name}, as quoted",
            "IncomeAccountRef": {"value": income["Id"]},
        }
        return self._write(self._at(0.0, 0.2), "create", "Item", payload)

    def _invoice(self, customers: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = self.rng
        lines = []
        for item in rng.sample(items, rng.randint(1, min(3, len(items)))):
            qty = Decimal(rng.randint(1, 12))
            lines.append(
                {
                    "DetailType": "SalesItemLineDetail",
                    "Amount": (qty * item["UnitPrice"]).quantize(Decimal("0.01")),
                    "Description": item["Description"],
                    "SalesItemLineDetail": {
                        "ItemRef": {"value": item["Id"]},
                        "Qty": qty,
                        "UnitPrice": item["UnitPrice"],
                    },
                }
            )
        at = self._at(0.2, 0.8)
        payload = {
            "CustomerRef": {"value": rng.choice(customers)["Id"]},
            "Line": lines,
            "TxnDate": at.date().isoformat(),
        }
        return self._write(at, "create", "Invoice", payload)

    def _payment_kinds(self, count: int) -> list[str]:
        """Weighted payment kinds, each kind at least once when there are enough payments."""
        guaranteed = list(PAYMENT_KINDS) if count >= len(PAYMENT_KINDS) else []
        kinds = guaranteed + self.rng.choices(
            PAYMENT_KINDS, weights=PAYMENT_WEIGHTS, k=count - len(guaranteed)
        )
        self.rng.shuffle(kinds)
        return kinds

    def _payment(self, invoice: dict[str, Any], kind: str) -> None:
        """A full, partial, refunded, voided or deleted payment of one invoice."""
        rng = self.rng
        total = invoice["Balance"]
        amount = (
            total
            if kind != "partial"
            else (total * Decimal(rng.randint(20, 80)) / 100).quantize(Decimal("0.01"))
        )
        created = datetime.fromisoformat(invoice["MetaData"]["CreateTime"])
        at = created + (self.end - created) * rng.uniform(0.1, 0.6)
        payload = {
            "CustomerRef": invoice["CustomerRef"],
            "TotalAmt": amount,
            "TxnDate": at.date().isoformat(),
            "PaymentRefNum": str(rng.randint(1000, 9999)),
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}],
        }
        payment = self._write(at, "create", "Payment", payload)
        later = at + (self.end - at) * rng.uniform(0.2, 0.9)
        ref = {"Id": payment["Id"], "SyncToken": payment["SyncToken"]}
        if kind == "voided":
            self._write(later, "void", "Payment", ref)
        elif kind == "deleted":
            self._write(later, "delete", "Payment", ref)
        elif kind == "refunded":
            line = invoice["Line"][0]
            refund = {
                "CustomerRef": invoice["CustomerRef"],
                "TxnDate": later.date().isoformat(),
                "PrivateNote": f"Refund of payment {payment['Id']} for invoice {invoice['DocNumber']}",
                "LinkedTxn": [{"TxnId": payment["Id"], "TxnType": "Payment"}],
                "Line": [
                    {
                        "DetailType": "SalesItemLineDetail",
                        "Amount": line["Amount"],
                        "SalesItemLineDetail": {"ItemRef": line["SalesItemLineDetail"]["ItemRef"]},
                    }
                ],
            }
            self._write(later, "create", "RefundReceipt", refund)
