"""``batchly-sync``: the operator command line (migrations, demo data, queue, status, the main job)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date

import requests
from cryptography.fernet import Fernet

from batchly_pipelines.cli.connect import authorize
from batchly_pipelines.cli.pull import add_pull_commands
from batchly_pipelines.cli.push import add_push_commands
from batchly_pipelines.cli.reconcile import add_reconcile_commands
from batchly_pipelines.cli.webhooks import add_webhook_commands
from batchly_pipelines.quickbooks.errors import QboError
from batchly_pipelines.settings import Settings, SettingsError
from batchly_pipelines.store import migrate
from batchly_pipelines.store.connections import CompanyMismatch, ConnectionStore, unlink_organization
from batchly_pipelines.store.db import Engine, create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines.store.organizations import organization_name
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines.store.schema import QUEUE_STATES
from batchly_pipelines.store.status import organization_status
from qbo_sandbox.admin_client import SandboxAdmin


def _engine(settings: Settings) -> Engine:
    return create_engine(settings.database_url)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    if args.action == "upgrade":
        migrate.upgrade(engine, args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            raise SystemExit("batchly-sync db downgrade needs a revision (e.g. `base` to remove everything)")
        migrate.downgrade(engine, args.revision)
    print(
        f"database {engine.url.render_as_string()} at revision {migrate.current_revision(engine) or '(empty)'}"
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    migrate.upgrade(engine)
    started = time.monotonic()
    summary = create_demo(
        engine,
        customers=args.customers,
        items=args.items,
        invoices=args.invoices,
        seed=args.seed,
        today=args.today,
        name=args.name,
    )
    print(f"created {args.name!r}, {summary} in {time.monotonic() - started:.1f}s")
    return 0


def cmd_secret_key(args: argparse.Namespace, settings: Settings | None) -> int:
    print(Fernet.generate_key().decode())
    return 0


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    """The OAuth authorisation-code flow for one organisation; tokens are stored encrypted."""
    engine = _engine(settings)
    migrate.upgrade(engine)
    org = organization_name(engine, args.org)
    if org is None:
        print(f"no organisation {args.org} (list them with `batchly-sync status`)", file=sys.stderr)
        return 1
    if args.switch_company:
        removed = unlink_organization(engine, args.org)
        print(
            f"organisation {args.org} unlinked from its QuickBooks company: "
            + ", ".join(f"{count} {what}" for what, count in removed.items() if count)
            + " — its records are pushed to the new company when they next change"
        )
    print(f"connecting {org!r} (organisation {args.org})")
    try:
        record = authorize(
            engine,
            settings,
            args.org,
            auto_approve=settings.is_local and not args.manual,
            timeout=args.timeout,
            sandbox_realm_id=_local_company(engine, settings, args) if settings.is_local else None,
        )
    except (
        QboError,
        TimeoutError,
        PermissionError,
        OSError,
        requests.RequestException,
        CompanyMismatch,
    ) as exc:
        print(f"connect failed: {exc}", file=sys.stderr)
        return 1
    if record.replaced:
        print(
            f"organisation {args.org} was connected to QuickBooks company {', '.join(record.replaced)} with nothing "
            "linked: that connection was replaced and what Batchly kept of that company cleared ("
            + (
                ", ".join(f"{count} {what}" for what, count in record.cleared.items() if count)
                or "nothing kept"
            )
            + ")"
        )
    print(
        f"organisation {args.org} connected to QuickBooks realm {record.realm_id} ({record.environment}, "
        f"{record.base_url}); tokens stored encrypted"
    )
    return 0


def _local_company(engine: Engine, settings: Settings, args: argparse.Namespace) -> str:
    """The sandbox company an organisation connects to locally: ``--realm``, else the one it is connected to, else a
    new company of its own (organisations never share a company unless told to)."""
    if args.realm:
        return str(args.realm)
    try:
        return ConnectionStore(engine, settings.secret_key).load(args.org).realm_id
    except LookupError:
        name = organization_name(engine, args.org) or f"organisation {args.org}"
        return SandboxAdmin(settings.qbo_base_url, timeout=10).new_realm(name)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    print(status_report(engine))
    return 0


def status_report(engine: Engine) -> str:
    """A plain-text table: per organisation, its QuickBooks connection and queue depth by state."""
    rows = organization_status(engine)
    lines = [
        f"{'org':>4}  {'name':<28} {'quickbooks':<28} {'pending':>8} {'in_prog':>8} {'done':>8} {'dead':>6}"
    ]
    lines += [
        f"{r['organization_id']:>4}  {r['name'][:28]:<28} {r['quickbooks']:<28} "
        f"{r['pending']:>8} {r['in_progress']:>8} {r['done']:>8} {r['dead']:>6}"
        for r in rows
    ]
    return "\n".join(lines) if rows else "no organisations yet (create one with `batchly-sync demo`)"


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    queue = SyncQueue(_engine(settings))
    if args.action == "retry":
        revived = queue.retry_dead(ids=args.id or None, organization_id=args.org)
        print(f"{revived} dead-lettered row(s) queued again")
        return 0
    rows = queue.list(status=args.status, organization_id=args.org, limit=args.limit)
    for row in rows:
        error = f"  {row['last_error']}" if row["last_error"] else ""
        print(
            f"{row['id']:>7} org {row['organization_id']:<4} {row['entity_type']:<9} {row['entity_id']:<7} "
            f"{row['status']:<11} attempts {row['attempts']}{error}"
        )
    print(f"{len(rows)} row(s)")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """The main job on the configured database: migrate, make sure there is data, report what would sync."""
    from batchly_pipelines.cli.cycle import run_main_job

    return run_main_job(settings, seed=args.seed)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """The Dagster UI with the local sandbox beside it (what ``make dev`` runs)."""
    from batchly_pipelines.cli.dev import run_dev

    return run_dev(settings, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchly-sync", description="Batchly ⇄ QuickBooks Online sync")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="schema migrations")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", help="target revision (default head for upgrade)")
    db.set_defaults(handler=cmd_db)

    demo = sub.add_parser("demo", help="create a demo organisation with realistic, deterministic data")
    demo.add_argument("--customers", type=int, default=50)
    demo.add_argument("--items", type=int, default=20)
    demo.add_argument("--invoices", type=int, default=100)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--name", default="Batchly Demo Company")
    demo.add_argument("--today", type=date.fromisoformat, default=None, help="anchor date (default: today)")
    demo.set_defaults(handler=cmd_demo)

    key = sub.add_parser("secret-key", help="print a new BATCHLY_SECRET_KEY")
    key.set_defaults(handler=cmd_secret_key, needs_settings=False)

    connect = sub.add_parser("connect", help="connect an organisation to its QuickBooks company (OAuth)")
    connect.add_argument("--org", type=int, required=True, help="Batchly organisation id")
    connect.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the callback")
    connect.add_argument(
        "--manual",
        action="store_true",
        help="local mode: wait for a browser instead of following the redirect",
    )
    connect.add_argument(
        "--realm",
        help="local mode: the sandbox company to approve (default: the organisation's own, or a new one)",
    )
    connect.add_argument(
        "--switch-company",
        action="store_true",
        help="move the organisation to another QuickBooks company: unlink every record first, then connect",
    )
    connect.set_defaults(handler=cmd_connect)

    status = sub.add_parser("status", help="connections and queue depth per organisation")
    status.set_defaults(handler=cmd_status)

    queue = sub.add_parser("queue", help="inspect the sync queue; retry the dead letter")
    queue.add_argument("action", choices=["list", "retry"])
    queue.add_argument("--status", choices=QUEUE_STATES)
    queue.add_argument("--org", type=int)
    queue.add_argument("--id", type=int, action="append", help="queue row id (repeatable) for retry")
    queue.add_argument("--limit", type=int, default=50)
    queue.set_defaults(handler=cmd_queue)

    run = sub.add_parser("run", help="the main job against the configured database and QuickBooks")
    run.add_argument("--seed", type=int, default=42)
    run.set_defaults(handler=cmd_run)

    dev = sub.add_parser("dev", help="the Dagster UI on this setup, with the local sandbox in local mode")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=cmd_dev)

    add_pull_commands(sub)
    add_push_commands(sub)
    add_reconcile_commands(sub)
    add_webhook_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[..., int] = args.handler
    try:
        settings = Settings.from_env() if getattr(args, "needs_settings", True) else None
        return handler(args, settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
