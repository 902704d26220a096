"""``batchly-sync push``: the push from the operator's command line, with a progress bar."""

from __future__ import annotations

import argparse
import sys

from batchly_pipelines.cli.output import progress_bar, section
from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.quickbooks.errors import AuthError
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.push.organization import (
    PushAbandoned,
    RealmBusy,
    database_unreachable,
    push_organization,
    worker_name,
)
from batchly_pipelines.settings import RuntimeSettings, Settings
from batchly_pipelines.store.db import DATABASE_ERRORS, create_engine


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    """Push the organisation's due records (or only ``--invoice`` ids) now; exit 1 if any record failed.

    A push that cannot run (another push holds the company, the connection needs re-authorising, the lease was lost)
    says so in one sentence on stderr and exits 1.
    """
    engine = create_engine(settings.database_url)
    config = ClientConfig(time_scale=RuntimeSettings.from_env().qbo_time_scale)
    try:
        with (
            client_for_organization(engine, settings, args.org, config=config) as client,
            progress_bar(f"org {args.org}") as show,
        ):
            stats = push_organization(
                engine, client, args.org, worker=worker_name("cli"), invoice_ids=args.invoice, progress=show
            )
    except (RealmBusy, PushAbandoned, AuthError, LookupError) as exc:
        print(f"push of organisation {args.org} did not run to the end: {exc}", file=sys.stderr)
        return 1
    except DATABASE_ERRORS as exc:
        print(database_unreachable(args.org, exc), file=sys.stderr)
        return 1
    summary = stats.as_dict()
    section(
        "pushed", ", ".join(f"{name} {count}" for name, count in summary["actions"].items()) or "nothing due"
    )
    section(
        "failed", f"{stats.failed} ({stats.dead} in the dead letter: `batchly-sync queue list --status dead`)"
    )
    section("quickbooks", f"{summary['api']['calls_total']} calls, {summary['api']['throttled']} throttled")
    section("time", f"{stats.elapsed_seconds:.1f}s")
    return 1 if stats.failed else 0


def add_push_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``push`` on the ``batchly-sync`` parser."""
    push = sub.add_parser("push", help="push an organisation's pending records to QuickBooks now")
    push.add_argument("--org", type=int, required=True, help="Batchly organisation id")
    push.add_argument(
        "--invoice",
        type=int,
        nargs="+",
        action="extend",
        help="only these invoices and what they need (`--invoice 1604 1605`, repeatable)",
    )
    push.set_defaults(handler=cmd_push)
