"""Deterministic, realistic demo data for a Batchly organisation (the app's writes: they enqueue pushes).

The same seed and ``today`` always produce the same rows: names with apostrophes and accents, multi-line invoices,
sales orders of which only part has been invoiced.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from batchly_pipelines.store import schema as s

FIRST_NAMES = (
    "Zoë", "José", "Siobhán", "François", "Renée", "Björn", "Łukasz", "Chloé", "Seán", "Ana", "Mary", "Jürgen",
    "Aoife", "Nuno", "Priya", "Kenji", "Olu", "Inés", "Mateo", "Grace",
)  # fmt: skip
LAST_NAMES = (
    "O'Brien", "D'Angelo", "Müller", "Núñez", "García", "Smith", "O'Neil", "Kowalski", "Dubois", "Ng",
    "van der Berg", "Okafor", "Sørensen", "Łaski", "Brontë", "MacDonald", "Nakamura", "Ó Súilleabháin",
)  # fmt: skip
COMPANY_PATTERNS = ("{last} & Sons", "{last}'s Bakery", "Café {last}", "{last} Landscaping", "{first}'s Deli")
CITIES = (
    ("Portland", "OR", "97201"), ("San José", "CA", "95113"), ("Québec", "QC", "G1R 4P5"),
    ("Austin", "TX", "73301"), ("Coeur d'Alene", "ID", "83814"), ("Boise", "ID", "83702"),
)  # fmt: skip
STREETS = ("Main St", "Rue Saint-Jean", "O'Farrell St", "Elm Ave", "Calle Ñandú", "King's Rd")
PRODUCTS = (
    ("Espresso beans", "NonInventory", "18.50"), ("Delivery", "Service", "12.00"),
    ("Oat milk 1L", "NonInventory", "2.79"), ("Barista training (hour)", "Service", "65.00"),
    ("Croissant box", "NonInventory", "24.00"), ("Crème brûlée tray", "NonInventory", "31.25"),
    ("Equipment rental", "Service", "120.00"), ("Jalapeño relish", "NonInventory", "6.40"),
)  # fmt: skip
CENT = Decimal("0.01")


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`create_demo` wrote."""

    organization_id: int
    customers: int
    items: int
    sales_orders: int
    invoices: int
    invoice_lines: int

    def __str__(self) -> str:
        return (
            f"organisation {self.organization_id}: {self.customers} customers, {self.items} items, "
            f"{self.sales_orders} sales orders, {self.invoices} invoices ({self.invoice_lines} lines)"
        )


def create_demo(
    engine: Engine,
    *,
    customers: int,
    items: int,
    invoices: int,
    seed: int = 42,
    today: date | None = None,
    name: str = "Batchly Demo Company",
    timezone: str = "America/Los_Angeles",
) -> DemoSummary:
    """Create one demo organisation with the given number of customers, items and invoices."""
    if min(customers, items) < 1 and invoices > 0:
        raise ValueError("invoices need at least one customer and one item (--customers and --items ≥ 1)")
    rng = random.Random(seed)
    today = today or date.today()
    with engine.begin() as conn:
        org = _insert_one(conn, s.organizations, name=name, timezone=timezone)
        customer_ids = _insert_many(conn, s.customers, [_customer(rng, org, n) for n in range(customers)])
        item_rows = [_item(rng, org, n) for n in range(items)]
        item_ids = _insert_many(conn, s.items, item_rows)
        prices = {item_id: row["unit_price"] for item_id, row in zip(item_ids, item_rows, strict=True)}
        orders, lines = _sales_and_invoices(conn, rng, org, customer_ids, prices, invoices, today)
    return DemoSummary(org, customers, items, orders, invoices, lines)


def _customer(rng: random.Random, org: int, n: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    company = rng.choice(COMPANY_PATTERNS).format(first=first, last=last) if rng.random() < 0.6 else None
    city, region, postal = rng.choice(CITIES)
    ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}".lower().replace("ł", "l").replace("ø", "o"))
    handle = "".join(ch for ch in ascii_name if ch.isascii() and (ch.isalnum() or ch == "."))
    return {
        "organization_id": org,
        "display_name": f"{company or f'{first} {last}'} #{n + 1}",
        "company_name": company,
        "given_name": first,
        "family_name": last,
        "email": f"{handle}{n + 1}@example.com",
        "phone": f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
        "bill_line1": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
        "bill_city": city,
        "bill_region": region,
        "bill_postal_code": postal,
        "bill_country": "CA" if region == "QC" else "US",
        "notes": "Prefers delivery before 9 o'clock" if rng.random() < 0.2 else None,
        "is_active": rng.random() > 0.03,
    }


def _item(rng: random.Random, org: int, n: int) -> dict[str, Any]:
    product, kind, price = PRODUCTS[n % len(PRODUCTS)]
    series = n // len(PRODUCTS)
    markup = Decimal(1 + series % 5) / 4 if series else Decimal(1)
    return {
        "organization_id": org,
        "name": product if not series else f"{product} ({series + 1})",
        "sku": f"SKU-{n + 1:05d}",
        "description": f"{product} — house standard",
        "unit_price": (Decimal(price) * markup).quantize(CENT, ROUND_HALF_UP),
        "item_type": kind,
        "is_active": True,
    }


def _sales_and_invoices(
    conn: Connection,
    rng: random.Random,
    org: int,
    customer_ids: list[int],
    prices: dict[int, Decimal],
    count: int,
    today: date,
) -> tuple[int, int]:
    """One sales order per invoice; about a third of the orders are only partly invoiced."""
    item_ids = list(prices)
    order_rows, invoice_rows, plans = [], [], []
    for n in range(count):
        customer = rng.choice(customer_ids)
        txn_date = today - timedelta(days=rng.randrange(0, 90))
        partial = rng.random() < 0.33
        plan = []
        for line_no in range(1, rng.randint(1, 5) + 1):
            item = rng.choice(item_ids)
            ordered = Decimal(rng.randint(1, 12))
            invoiced = max(Decimal(1), (ordered / 2).to_integral_value()) if partial else ordered
            plan.append((line_no, item, ordered, invoiced, prices[item]))
        plans.append(plan)
        order_rows.append(
            {
                "organization_id": org,
                "customer_id": customer,
                "order_number": f"SO-{n + 1:05d}",
                "status": "open" if any(p[3] < p[2] for p in plan) else "invoiced",
                "delivery_date": txn_date,
            }
        )
        invoice_rows.append(
            {
                "organization_id": org,
                "customer_id": customer,
                "doc_number": f"INV-{n + 1:05d}",
                "txn_date": txn_date,
                "due_date": txn_date + timedelta(days=30),
                "total_amount": sum(((p[3] * p[4]).quantize(CENT, ROUND_HALF_UP) for p in plan), Decimal(0)),
                "status": "open",
            }
        )
    order_ids = _insert_many(conn, s.sales_orders, order_rows)
    for order_id, row in zip(order_ids, invoice_rows, strict=True):
        row["sales_order_id"] = order_id
    invoice_ids = _insert_many(conn, s.invoices, invoice_rows)
    order_lines, invoice_lines = [], []
    for order_id, invoice_id, plan in zip(order_ids, invoice_ids, plans, strict=True):
        for line_no, item, ordered, invoiced, price in plan:
            common = {"line_no": line_no, "item_id": item, "unit_price": price, "description": None}
            order_lines.append(
                {**common, "sales_order_id": order_id, "quantity": ordered, "quantity_invoiced": invoiced}
            )
            amount = (invoiced * price).quantize(CENT, ROUND_HALF_UP)
            invoice_lines.append({**common, "invoice_id": invoice_id, "quantity": invoiced, "amount": amount})
    _insert_many(conn, s.sales_order_lines, order_lines)
    _insert_many(conn, s.invoice_lines, invoice_lines)
    return len(order_ids), len(invoice_lines)


def _insert_one(conn: Connection, table: sa.Table, **values: Any) -> int:
    key = conn.execute(sa.insert(table).values(**values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def _insert_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows and return their ids in order (RETURNING keeps the order on both backends)."""
    if not rows:
        return []
    statement = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(conn.execute(statement, rows).scalars())
