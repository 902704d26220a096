"""``batchly-sync reconcile``: one organisation's full reconciliation with its QuickBooks company, from the command
line (the service the ``reconcile_company`` job runs)."""

from __future__ import annotations

import argparse
import sys

from batchly_pipelines.cli.output import section
from batchly_pipelines.quickbooks.errors import AuthError, ReauthorizationRequired
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.reconciliation.company import reconcile_company
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.connections import CompanyMismatch
from batchly_pipelines.store.db import create_engine


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Read the organisation's whole company, repair what the rules allow (not with ``--no-repair``), print what
    differed and what was repaired; exit 1 while a difference nothing explains remains (2: no connection, or the
    organisation was switched to another company while it ran)."""
    engine = create_engine(settings.database_url)
    try:
        with client_for_organization(engine, settings, args.org) as client:
            result = reconcile_company(engine, client, args.org, repair=not args.no_repair, log=print)
    except (LookupError, CompanyMismatch) as exc:  # no connection (any more): a configuration matter
        print(f"full reconciliation of organisation {args.org} did not run: {exc}", file=sys.stderr)
        return 2
    except (AuthError, ReauthorizationRequired) as exc:
        print(f"full reconciliation of organisation {args.org} did not run: {exc}", file=sys.stderr)
        return 1
    summary = result.summary()
    for difference in result.repaired:
        print(f"repaired  {difference.record} {difference.field}: {difference.why} ({difference.repair})")
    for difference in result.differences:
        status = result.status(difference)
        because = f" — {difference.explained_by}" if difference.explained_by else ""
        print(f"{status:<9} {difference.record} {difference.field}: {difference.why}{because}")
    section("records", str(summary["records"]))
    section(
        "differences",
        f"{summary['differences']} ({summary['open']} open, {summary['queued']} queued, "
        f"{summary['explained']} explained), {summary['repaired']} repaired",
    )
    section("quickbooks", f"{summary['api_calls']} calls (expected {summary['expected_calls']})")
    section("time", f"{summary['seconds']:.1f}s")
    return 1 if summary["open"] else 0


def add_reconcile_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``reconcile`` on the ``batchly-sync`` parser."""
    reconcile = sub.add_parser(
        "reconcile",
        help="compare an organisation with its whole QuickBooks company and repair what the rules allow",
    )
    reconcile.add_argument("--org", type=int, required=True, help="Batchly organisation id")
    reconcile.add_argument("--no-repair", action="store_true", help="only compare: write nothing")
    reconcile.set_defaults(handler=cmd_reconcile)
