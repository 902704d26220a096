"""Push throughput of the QuickBooks client: invoice creates through /batch against the throttled, time-compressed sandbox.

The sandbox runs as its own process (``qbo-sandbox serve --time-scale S --latency-ms L``, Intuit's limits on). The
client is built the way the pipeline builds it: ``client_for_organization`` over a Batchly database (a temporary SQLite
file unless ``--database-url`` is given) holding the encrypted tokens and the shared rate-limit tables. It creates
``--entities`` invoices in one ``write_batch`` call and the figures compare the rate with the documented ceiling of
40 batch calls x 30 items = 1,200 entity writes per (scaled) minute. Afterwards the invoices are counted through the
API: anything beyond the number sent is a duplicate.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.quickbooks.wire import request_id
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.schema import organizations
from qbo_sandbox.admin_client import SandboxAdmin

CEILING_PER_MINUTE = 1200  # 40 batch calls/min x 30 items, per realm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--entities", type=int, default=5000, help="invoices to create")
    parser.add_argument("--time-scale", type=float, default=10.0, help="the sandbox's --time-scale (S)")
    parser.add_argument(
        "--latency-ms", type=float, default=250.0, help="the sandbox's --latency-ms (scaled by S)"
    )
    parser.add_argument("--drop-rate", type=float, default=0.0, help="connections dropped after the write")
    parser.add_argument("--error-rate", type=float, default=0.0, help="answers replaced by a 503")
    parser.add_argument(
        "--database-url", default="", help="Batchly database (default: a temporary SQLite file)"
    )


@contextmanager
def _sandbox(time_scale: float, latency_ms: float) -> Iterator[str]:
    """``qbo-sandbox serve`` in a child process on a free port; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        "qbo_sandbox.cli",
        "serve",
        "--port",
        "0",
        "--time-scale",
        str(time_scale),
        "--latency-ms",
        str(latency_ms),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        match = re.search(r"listening on (http://\S+)", process.stdout.readline())
        if match is None:
            raise RuntimeError("qbo-sandbox did not start")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _setup(client: QuickBooksClient) -> tuple[str, str]:
    """A customer and an item for the invoices to reference (not timed)."""
    account = next(client.query_all("Account", ["AccountType = 'Income'"]))
    item = {"Name": "Bench Widget", "Type": "Service", "UnitPrice": Decimal("12.50")}
    results = client.write_batch(
        [
            WriteOp("customer", "Customer", "create", {"DisplayName": "Bench O'Mark"}, "bench-customer"),
            WriteOp(
                "item", "Item", "create", {**item, "IncomeAccountRef": {"value": account["Id"]}}, "bench-item"
            ),
        ]
    )
    customer, item_obj = (result.entity_obj for result in results)
    if customer is None or item_obj is None:
        raise RuntimeError(f"setup failed: {[r.error for r in results]}")
    return customer["Id"], item_obj["Id"]


def _invoice(key: int, customer_id: str, item_id: str) -> WriteOp:
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("25.00"),
        "SalesItemLineDetail": {
            "ItemRef": {"value": item_id},
            "Qty": Decimal(2),
            "UnitPrice": Decimal("12.50"),
        },
    }
    body = {"DocNumber": f"B-{key:06d}", "CustomerRef": {"value": customer_id}, "Line": [line]}
    return WriteOp(key, "Invoice", "create", body, request_id("create", "Invoice", key, 1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Push ``--entities`` invoices; report ``throughput_ratio`` (≥ 0.9), ``write_calls_per_1000`` (≤ 35), …"""
    with tempfile.TemporaryDirectory() as tmp, _sandbox(args.time_scale, args.latency_ms) as base_url:
        engine = create_engine(args.database_url or f"sqlite:///{Path(tmp) / 'batchly.sqlite'}")
        migrate.upgrade(engine)
        settings = Settings.from_env(
            {
                "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
                "QBO_BASE_URL": base_url,
                "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
            },
            cwd=Path(tmp),
        )
        admin = SandboxAdmin(base_url)
        realm_id = admin.new_realm()
        with engine.begin() as conn:
            key = conn.execute(sa.insert(organizations).values(name="Bench")).inserted_primary_key
        assert key is not None
        tokens = TokenSet.from_response(admin.tokens(realm_id))
        ConnectionStore(engine, settings.secret_key).save(int(key[0]), realm_id, "local", base_url, tokens)

        config = ClientConfig(time_scale=args.time_scale)
        with client_for_organization(engine, settings, int(key[0]), config=config) as client:
            customer_id, item_id = _setup(client)
            admin.set_faults(realm_id, drop_after_write=args.drop_rate, error_503=args.error_rate, seed=5)
            ops = [_invoice(n, customer_id, item_id) for n in range(args.entities)]
            before = client.stats.as_dict()
            started = time.monotonic()
            results = client.write_batch(ops)
            elapsed = time.monotonic() - started
            after = client.stats.as_dict()
            admin.set_faults(realm_id)
            in_quickbooks = client.count("Invoice")
        engine.dispose()

    ok = [r for r in results if r.ok and r.entity_obj and r.entity_obj["DocNumber"] == f"B-{r.key:06d}"]
    calls = {kind: after["calls"].get(kind, 0) - before["calls"].get(kind, 0) for kind in after["calls"]}
    write_calls = calls.get("batch", 0) + calls.get("write", 0)
    scaled_minutes = elapsed * args.time_scale / 60.0
    per_minute = len(ok) / scaled_minutes if scaled_minutes else 0.0
    return {
        "entities": args.entities,
        "time_scale": args.time_scale,
        "latency_ms": args.latency_ms,
        "elapsed_s": round(elapsed, 2),
        "entities_per_scaled_minute": round(per_minute, 1),
        "throughput_ratio": round(per_minute / CEILING_PER_MINUTE, 3),
        "write_calls": write_calls,
        "write_calls_per_1000": round(write_calls * 1000 / args.entities, 1),
        "mapped_ok": len(ok),
        "failed": args.entities - len(ok),
        "invoices_in_quickbooks": in_quickbooks,
        "duplicates": in_quickbooks - len(ok),
        "throttled": after["throttled"] - before["throttled"],
        "throttle_wait_s": round(after["throttle_wait_seconds"] - before["throttle_wait_seconds"], 2),
        "limit_wait_thread_s": round(
            after["limit_wait_seconds"] - before["limit_wait_seconds"], 2
        ),  # summed over threads
        "retries": after["retries"] - before["retries"],
    }
