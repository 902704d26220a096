"""The learned rate budget: a push into a company whose real batch budget is below Intuit's documented 40 per minute.

A demo organisation (``--invoices`` invoices, queued at once) is connected to a fresh realm of an in-process sandbox
with Intuit's limits on, compressed by ``--time-scale``, and ``--batch-budget`` batch calls per minute (default 20,
half the documented budget). One push (``push_organization``, what ``batchly-sync push`` runs) sends everything through
the client the pipeline builds, its rate limiter shared through the Batchly database (a temporary SQLite file unless
``--database-url`` is given). Every answer is noted.

- ``throttled_ratio``: 429s over all requests (a limiter fixed at Intuit's numbers had about 45 % here);
- ``throughput_ratio``: the least time the real budget allowed for the accepted batch calls over the time they took
  (call ``k`` can go no sooner than a window after call ``k - budget``; see ``support/throttle.py``);
- ``writes_per_qbo_minute`` / ``budget_ratio``: entity writes per QuickBooks minute from the first to the last batch
  answer, over the real ceiling of ``budget`` x 30 (the first minute's burst included, as in the push scenario);
- ``learned``: the realm's budget as the limiter left it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet

from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.services.connections import client_for_organization, database_rate_limiter
from batchly_pipelines.services.push.organization import push_organization
from batchly_pipelines.settings import Settings
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines_tests.support.push import Books, connect
from batchly_pipelines_tests.support.throttle import RecordingSession, throttle_figures
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument(
        "--batch-budget", type=int, default=20, help="the company's real batch calls per minute"
    )
    parser.add_argument("--time-scale", type=float, default=5.0, help="QuickBooks minutes last 60/F seconds")
    parser.add_argument(
        "--database-url", default="", help="Batchly database (default: a temporary SQLite file)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario and return its figures."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-budget-") as folder,
        SandboxServer(SandboxConfig(port=0, time_scale=args.time_scale, throttle=True)) as sandbox,
    ):
        engine = create_engine(args.database_url or f"sqlite:///{Path(folder) / 'batchly.sqlite'}")
        migrate.upgrade(engine)
        settings = Settings.from_env(
            {
                "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
                "QBO_BASE_URL": sandbox.base_url,
                "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
            },
            cwd=Path(folder),
        )
        demo = create_demo(engine, customers=args.customers, items=args.items, invoices=args.invoices)
        with engine.begin() as conn:  # the demo retires a few customers; their invoices would be refused
            conn.execute(sa.update(s.customers).values(is_active=True))
        admin = SandboxAdmin(sandbox.base_url)
        realm_id = admin.new_realm()
        admin.settings(realm_id, limits={"batch_per_minute": args.batch_budget})
        connect(engine, settings, demo.organization_id, realm_id)
        session = RecordingSession()
        config = ClientConfig(time_scale=args.time_scale)
        started = time.monotonic()
        with client_for_organization(
            engine, settings, demo.organization_id, config=config, session=session
        ) as client:
            stats = push_organization(engine, client, demo.organization_id, worker="bench-budget")
        learned = database_rate_limiter(engine, realm_id).budget()
        elapsed = time.monotonic() - started
        found = Books(sandbox, realm_id).by_doc_number()
        counters = admin.counters()["realms"].get(realm_id, {})
        engine.dispose()

    window = 60.0 / args.time_scale
    figures = throttle_figures(session.answers, args.batch_budget, window)
    writes = sum(count for action, count in stats.actions.items() if action.endswith((".create", ".update")))
    per_minute = writes / (figures.seconds / window) if figures.seconds else float("nan")
    invoices_in_qbo = sum(len(copies) for copies in found.values())
    return {
        "invoices": args.invoices,
        "batch_budget": args.batch_budget,
        "time_scale": args.time_scale,
        "invoices_in_qbo": invoices_in_qbo,
        "duplicates": invoices_in_qbo - len(found),
        "failed": stats.failed,
        "dead": stats.dead,
        **figures.as_dict(),
        "sandbox_throttled": int(counters.get("throttled", 0)),
        "writes_per_qbo_minute": round(per_minute, 1),
        "budget_ratio": round(per_minute / (args.batch_budget * 30), 3),
        "learned": learned.dump(),
        "wall_seconds": round(elapsed, 1),
    }
