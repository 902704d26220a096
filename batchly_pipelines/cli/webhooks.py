"""``batchly-sync webhooks serve|list``: the Intuit webhook receiver, and what its inbox holds."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from batchly_pipelines.cli.output import section
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines.services.webhooks.server import ReceiverServer
from batchly_pipelines.settings import Settings, WebhookSettings
from batchly_pipelines.store import migrate
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.inbox import inbox_events
from batchly_pipelines.store.schema import WEBHOOK_EVENT_STATES
from batchly_pipelines.store.webhook_repair import record_receiver_start


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Receive Intuit's webhooks into the inbox until interrupted (SIGINT or SIGTERM finish in-flight deliveries).
    Each start is recorded: a receiver that was down may have missed deliveries, so every realm's sweep is due."""
    webhooks = WebhookSettings.from_env(settings, host=args.host, port=args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)
    server = ReceiverServer(create_app(engine, webhooks.verifier_token), webhooks.host, webhooks.port)
    record_receiver_start(engine, server.url)  # the socket listens: the realms' CDC sweeps are due at once
    section("webhooks", f"receiving at {server.url} (Ctrl-C stops)")
    server.serve()
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """The newest inbox events (of one realm, of one status)."""
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = inbox_events(
            conn, realm_id=args.realm, status=args.status, limit=args.limit, newest_first=True
        )
    for row in rows:
        when = row["event_time"].isoformat() if row["event_time"] else "-"
        print(
            f"{row['id']:>8} realm {row['realm_id']:<18} {row['entity_type']:<9} {row['entity_id']:<8} "
            f"{row['operation']:<8} {when:<32} {row['status']:<8} {row['run_id'] or '-'}"
            + (f"  {row['note']}" if row["note"] else "")
        )
    print(f"{len(rows)} event(s)")
    return 0


def add_webhook_commands(sub: Any) -> None:
    """Register ``webhooks serve`` and ``webhooks list`` on the ``batchly-sync`` subcommand parser."""
    webhooks = sub.add_parser("webhooks", help="receive Intuit's webhooks; inspect the inbox")
    actions = webhooks.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="the webhook receiver (needs QBO_WEBHOOK_VERIFIER_TOKEN)")
    serve.add_argument("--host", help="address to listen on (default BATCHLY_WEBHOOK_HOST or 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port to listen on (default BATCHLY_WEBHOOK_PORT or 8767; 0: any)"
    )
    serve.set_defaults(handler=cmd_serve)
    listing = actions.add_parser("list", help="the newest events in the inbox")
    listing.add_argument("--realm", help="only this QuickBooks company")
    listing.add_argument("--status", choices=WEBHOOK_EVENT_STATES)
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=cmd_list)
