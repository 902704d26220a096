"""``batchly-sync webhooks serve|list``: the Intuit webhook receiver, and what its inbox holds."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
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
from qbo_sandbox.admin_client import SandboxAdmin


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


LOCAL_VERIFIER = (
    "batchly-local-verifier"  # make dev's verifier token when QBO_WEBHOOK_VERIFIER_TOKEN is unset
)
SERVE = [str(Path(sys.executable).with_name("batchly-sync")), "webhooks", "serve"]


@contextmanager
def local_receiver(settings: Settings) -> Iterator[str | None]:
    """``make dev``: the receiver as a child process (``batchly-sync webhooks serve``, on ``BATCHLY_WEBHOOK_PORT``),
    with the local sandbox's webhooks pointed at it (CloudEvents, signed with the verifier token); yields its URL —
    or ``None``, saying why, when it could not start (the rest of ``make dev`` goes on without webhooks). On the way
    out the sandbox stops delivering and the receiver is stopped."""
    verifier = settings.webhook_verifier_token or LOCAL_VERIFIER
    webhooks = WebhookSettings.from_env(
        replace(settings, webhook_verifier_token=verifier)
    )  # bad host/port: here
    env = {
        **os.environ,
        "QBO_WEBHOOK_VERIFIER_TOKEN": verifier,
        "BATCHLY_DATABASE_URL": settings.database_url,
    }
    receiver = subprocess.Popen(SERVE, env=env, stdout=subprocess.PIPE, text=True)
    sandbox = SandboxAdmin(settings.qbo_base_url)
    pointed = False
    try:
        assert receiver.stdout is not None
        line = receiver.stdout.readline()  # printed once its socket listens
        if "receiving at " not in line:
            code = receiver.wait(timeout=15)
            section(
                "webhooks",
                f"the receiver did not start (exit {code}; is port {webhooks.port} taken? set BATCHLY_WEBHOOK_PORT): "
                "webhooks are off, changes made in the sandbox arrive with the pulls",
            )
            yield None
            return
        url = line.split("receiving at ", 1)[1].split()[0]
        sandbox.configure_webhooks(url, verifier, "cloudevents")
        pointed = True
        section("webhooks", f"the sandbox delivers its webhooks to {url}")
        yield url
    finally:
        if pointed:
            with suppress(OSError):  # the sandbox may be gone already
                sandbox.configure_webhooks(None)
        if receiver.poll() is None:
            receiver.terminate()  # SIGTERM: in-flight deliveries are answered first
            receiver.wait(timeout=15)


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
