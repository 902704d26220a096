"""``batchly-sync pull``, ``batchly-sync conflicts list|resolve`` and ``batchly-sync review-fields``: the pull and
its merge policy from the operator's command line."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from typing import Any

from batchly_pipelines.cli.output import section
from batchly_pipelines.quickbooks.errors import ReadQuotaExhausted, ReauthorizationRequired
from batchly_pipelines.rules.mapping import CUSTOMER_FIELDS
from batchly_pipelines.rules.name_lists import NAME_LISTS
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.pull.organization import pull_organization, window_since_cursor
from batchly_pipelines.services.pull.progress import Progress
from batchly_pipelines.services.pull.resolve import WINNERS, ReviewOutdated, resolve_conflicts
from batchly_pipelines.services.read_budget import backfill_cost_note
from batchly_pipelines.settings import Settings
from batchly_pipelines.store.conflicts import list_conflicts
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.review_fields import review_fields, set_review_fields


def _aware(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone, e.g. 2026-11-01T00:00:00+00:00")
    return moment


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    """Pull what QuickBooks changed since ``--since`` (default: the last pull) and reconcile it into Batchly."""
    engine = create_engine(settings.database_url)
    window = window_since_cursor(engine, args.org, args.since)
    section("window", f"{window.start.isoformat()} → {window.end.isoformat()}")
    try:
        client = client_for_organization(engine, settings, args.org)
    except (LookupError, ReauthorizationRequired) as exc:
        print(f"batchly-sync pull: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            note = backfill_cost_note(engine, client, window, range_given=args.since is not None)
            if note is not None:
                section("read budget", note)
            result = pull_organization(
                engine, client, args.org, window, review_fields=args.review_field, progress=_show_progress
            )
    except ReadQuotaExhausted as exc:  # Intuit blocks the app's reads until next month: waiting cannot help
        print(f"batchly-sync pull: {exc}", file=sys.stderr)
        return 1
    for name, stats in result.as_dict().items():
        shown = {k: v for k, v in stats.items() if k not in ("entities", "by_entity") and v}
        section(name, ", ".join(f"{k} {v}" for k, v in shown.items()) or "nothing to do")
    return 0


def _show_progress(progress: Progress) -> None:
    """A long pull's progress on stderr, as it runs (stdout keeps the summary)."""
    print(f"  {progress}", file=sys.stderr, flush=True)


def cmd_conflicts(args: argparse.Namespace, settings: Settings) -> int:
    """List conflicts (open ones by default) or resolve them."""
    engine = create_engine(settings.database_url)
    if args.action == "resolve":
        return _resolve(engine, args)
    with engine.connect() as conn:
        rows = list_conflicts(
            conn,
            organization_id=args.org,
            open_only=not args.all,
            entity_type=args.entity,
            field=args.field,
            limit=args.limit,
        )
    for row in rows:
        print(
            f"{row['id']:>6} org {row['organization_id']:<4} {row['entity_type']:<8} {row['entity_id'] or '-':<7} "
            f"qbo {row['qbo_id'] or '-':<6} {row['field']:<16} {row['resolution']:<14} rev {row['revision']:<3} "
            f"base={_shown(row['base_value'])} batchly={_shown(row['batchly_value'])} "
            f"quickbooks={_shown(row['qbo_value'])}"
        )
    print(f"{len(rows)} conflict(s)")
    return 0


def _resolve(engine: Any, args: argparse.Namespace) -> int:
    if args.winner is None or (not args.id and args.org is None):
        raise SystemExit(
            "batchly-sync conflicts resolve needs --winner and --id (repeatable) or --org [--entity] [--field]"
        )
    refused: ReviewOutdated | None = None
    try:
        resolved = resolve_conflicts(
            engine,
            winner=args.winner,
            value=args.value,
            resolved_by=args.by,
            conflict_ids=args.id or None,
            organization_id=args.org,
            entity_type=args.entity,
            field=args.field,
            seen=dict(args.seen),
        )
    except ReviewOutdated as exc:
        refused, resolved = exc, exc.resolved
    except ValueError as exc:
        raise SystemExit(f"batchly-sync conflicts resolve: {exc}") from None
    for outcome in resolved:
        sides = [
            side
            for side, done in (("Batchly", outcome.to_batchly), ("QuickBooks", outcome.to_quickbooks))
            if done
        ]
        print(
            f"{outcome.conflict_id:>6} {outcome.field} = {_shown(outcome.chosen)} → {' and '.join(sides) or 'no change'}"
        )
    print(f"{len(resolved)} conflict(s) resolved by {args.by}")
    if refused is not None:
        for reason in refused.refused:
            print(f"batchly-sync conflicts resolve: {reason}", file=sys.stderr)
        return 1
    return 0


def _seen(text: str) -> tuple[int, int]:
    conflict_id, _, revision = text.partition(":")
    if not (conflict_id.isdigit() and revision.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give ID:REVISION, e.g. 12:3 (the rev `conflicts list` shows)"
        )
    return int(conflict_id), int(revision)


def cmd_review_fields(args: argparse.Namespace, settings: Settings) -> int:
    """Show, or with ``--set`` / ``--clear`` replace, the fields of an organisation's customers or items that go to
    manual review when both sides changed them (the pull and the push alike)."""
    kind = NAME_LISTS[args.entity]
    engine = create_engine(settings.database_url)
    if args.set is not None or args.clear:
        wanted = [] if args.clear else args.set
        unknown = sorted(set(wanted) - set(kind.policy.fields))
        if unknown:
            raise SystemExit(
                f"batchly-sync review-fields: {args.entity} does not sync {', '.join(unknown)} "
                f"(it syncs {', '.join(kind.policy.fields)})"
            )
        with engine.begin() as conn:
            set_review_fields(conn, args.org, args.entity, wanted)
    with engine.connect() as conn:
        fields = sorted(review_fields(conn, args.org, args.entity))
    print(f"organisation {args.org} {args.entity} review fields: {', '.join(fields) or 'none'}")
    return 0


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def add_pull_commands(sub: Any) -> None:
    """Register ``pull`` and ``conflicts`` on the ``batchly-sync`` subcommand parser."""
    pull = sub.add_parser("pull", help="pull customers, items and payments from QuickBooks into Batchly")
    pull.add_argument("--org", type=int, required=True, help="organisation id")
    pull.add_argument("--since", type=_aware, help="ISO time with zone (default: where the last pull ended)")
    pull.add_argument(
        "--review-field",
        action="append",
        default=[],
        choices=CUSTOMER_FIELDS,
        help="customer field sent to manual review instead of newest-wins, from now on, by the pull and the push "
        "(stored; see review-fields; repeatable)",
    )
    pull.set_defaults(handler=cmd_pull)

    review = sub.add_parser(
        "review-fields", help="fields that go to manual review when both sides changed them (pull and push)"
    )
    review.add_argument("--org", type=int, required=True, help="organisation id")
    review.add_argument("--entity", choices=sorted(NAME_LISTS), default="customer")
    change = review.add_mutually_exclusive_group()
    change.add_argument("--set", nargs="+", metavar="FIELD", help="replace the review fields with these")
    change.add_argument("--clear", action="store_true", help="no field goes to review")
    review.set_defaults(handler=cmd_review_fields)

    conflicts = sub.add_parser("conflicts", help="review and resolve merge conflicts")
    conflicts.add_argument("action", choices=["list", "resolve"])
    conflicts.add_argument("--org", type=int)
    conflicts.add_argument("--entity", choices=["customer", "item"])
    conflicts.add_argument("--field")
    conflicts.add_argument("--id", type=int, action="append", help="conflict id (repeatable) for resolve")
    conflicts.add_argument("--all", action="store_true", help="list resolved conflicts too")
    conflicts.add_argument("--limit", type=int, default=100)
    conflicts.add_argument("--winner", choices=WINNERS, help="resolve: the side that wins (required)")
    conflicts.add_argument("--value", help="resolve: the value to apply with --winner value")
    conflicts.add_argument("--by", default=getpass.getuser(), help="resolve: who decided (default: you)")
    conflicts.add_argument(
        "--seen",
        type=_seen,
        action="append",
        default=[],
        metavar="ID:REV",
        help="resolve: the revision of conflict ID you decided on (refused if it changed since; repeatable)",
    )
    conflicts.set_defaults(handler=cmd_conflicts)
