"""Chaos push through the real Dagster job: kills, paused workers, dropped connections, a racing CLI, edits in flight.

Two demo organisations get a sandbox company each (``dagster dev`` pushes both, ``sync_queue_sensor`` starts the
runs): the main one with ``--invoices`` invoices, in a company whose real batch budget is ``--batch-budget`` calls a
minute (Intuit documents 40; the client is not told), and a small second one whose names and DocNumbers are its own,
so a write into the wrong company shows. Both companies lose ``--drop-rate`` of the connections after the write and
answer ``--error-rate`` with a 503, and accept duplicate DocNumbers, so a duplicate create lands instead of being
refused by the sandbox. While the main organisation's invoices go out, a seeded schedule (``--seed``) fires, at random
points of its progress:

- ``--kills``: SIGKILL of the push run holding the company (run worker and step processes) — or of the racing
  ``batchly-sync push`` when that one has held the company for 20 s since the kill fell due;
- ``--pauses``: SIGSTOP of the run holding the company, a CLI push started at once to take over, then SIGCONT: every
  other pause lasts 1.25 leases (the lease lapsed, nobody may take over yet), the others 1.25 x (lease + the push's
  takeover grace), so the CLI takes over while the run is frozen;
- ``--db-drops``: every other session on the Batchly database terminated (``pg_terminate_backend``; PostgreSQL only);
- ``--racers``: ``batchly-sync push --org N`` started beside the Dagster run;
- ``--edits`` (a fraction of the invoices): app-side edits of invoices in flight (claimed by a worker when there are
  any), about half set to void, the others corrected (a new invoice with ``replaces_invoice_id``);
- ``--reconnects``: the second organisation's connection saved again for the main company (a wrong pick on Intuit's
  consent screen), followed by a new invoice of the second organisation.

A killed run that Dagster still shows as started one lease (plus 5 s) after the kill is marked dead, as an operator
would (``operator_interventions``). When the queue is settled, ``push_audit`` compares Batchly with the sandbox's books
(see its docstring for every figure). ``throttled_ratio`` is 429s over all requests to the main company;
``throughput_ratio`` is its entity writes (create, update, void, link in the sync log) over the most its real budget
allowed in the same time — 30 writes in each batch call a client sending whenever the sliding window of
``--batch-budget`` calls a minute lets it could have made, but never more writes in a window than rows were due —
counted from the first to the last write, without the outages the benchmark caused (from each kill or pause to the
next write, at most the recovery the design promises) nor the time no row was due (every one backing off);
``throughput_ratio_with_outages`` keeps the outages, ``throughput_ratio_full_calls`` credits every allowed call with
30 writes however few rows were due. Kills and pauses wait (up to
120 s) for a run to hold the company, and are skipped if none does; whatever the plan still holds when the queue
settles is skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.client import ClientConfig
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import CompanyMismatch, ConnectionStore
from batchly_pipelines.store.db import create_engine
from batchly_pipelines.store.demo import create_demo
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.dagster_stack import DagsterStack
from batchly_pipelines_tests.support.databases import drop_connections, fresh_database_url
from batchly_pipelines_tests.support.push_audit import Tenant, audit
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
JOB_LEASE_QBO_SECONDS = 120.0  # push_to_quickbooks' default lease, in QuickBooks time
RECOVERY_ALLOWANCE_SECONDS = 15.0  # after lease and grace: a sensor tick (5 s) and a run start
OPERATOR_GRACE_SECONDS = 5.0
KILL_RACER_AFTER_SECONDS = 20.0  # a kill due while a racer holds the company kills the racer after this
RETRY_EVENT_SECONDS = 120.0  # a kill or pause waits this long for a run holding the company, then is skipped
OTHER_PREFIX = "OB"
WRITES = ("create", "update", "void", "link")
POLL_SECONDS = 0.2
BATCH_ITEMS = 30  # entities per batch call
DUE_CAP = (
    2000  # due rows counted per sample: beyond a window's worth of batch calls (20 x 30 here) it is all one
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--other-invoices", type=int, default=40, help="the second organisation's invoices")
    parser.add_argument("--seed", type=int, default=14, help="the schedule's and the faults' random seed")
    parser.add_argument("--time-scale", type=float, default=5.0, help="QuickBooks minutes last 60/F seconds")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs of the run holding the company")
    parser.add_argument("--pauses", type=int, default=2, help="SIGSTOPs past the lease, then SIGCONT")
    parser.add_argument("--db-drops", type=int, default=3, help="terminations of every database session")
    parser.add_argument("--racers", type=int, default=2, help="`batchly-sync push` started beside the run")
    parser.add_argument("--edits", type=float, default=0.02, help="fraction of invoices voided or corrected")
    parser.add_argument(
        "--reconnects", type=int, default=1, help="reconnects of the second org to this company"
    )
    parser.add_argument("--drop-rate", type=float, default=0.10, help="connections dropped after the write")
    parser.add_argument("--error-rate", type=float, default=0.05, help="answers replaced by a 503")
    parser.add_argument(
        "--batch-budget", type=int, default=20, help="the company's real batch calls a minute"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="stop injecting and audit after this")
    parser.add_argument(
        "--request-log",
        default="",
        help="write every request the main company received (arrival, answer, status, batch operations), the "
        "due samples, the outages and the writes to this JSON file, for a post-mortem of the budget",
    )
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="keep the PostgreSQL database afterwards (to look into it)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BATCHLY_BENCH_POSTGRES_URL", POSTGRES_URL),
        help="PostgreSQL server for a fresh Batchly database ('sqlite' for a file: no dropped connections)",
    )


@dataclass
class World:
    """What the chaos acts on: the database, the sandbox, both organisations, Dagster."""

    engine: Engine
    sandbox: SandboxServer
    admin: SandboxAdmin
    secret_key: str
    main: Tenant
    other: Tenant
    originals: int  # the main organisation's invoice ids are 1..originals (plus corrections added later)
    env: dict[str, str]
    folder: Path
    lease_seconds: float  # the job's lease in real seconds
    grace_seconds: (
        float  # how long after a lapsed lease another worker may take the company over (real seconds)
    )


@dataclass(order=True)
class Planned:
    """An injection, due once the main organisation's progress reaches ``at``."""

    at: float
    kind: str
    due_since: float | None = field(default=None, compare=False)


def schedule(args: argparse.Namespace, rng: random.Random) -> list[Planned]:
    """The seeded plan: each kind of injection at uniformly random points of the push's progress."""
    edits = round(args.invoices * args.edits)
    kinds = {
        "kill": args.kills,
        "pause": args.pauses,
        "db_drop": args.db_drops,
        "racer": args.racers,
        "reconnect": args.reconnects,
    }
    plan = [Planned(rng.uniform(0.05, 0.85), kind) for kind, count in kinds.items() for _ in range(count)]
    plan += [Planned(rng.uniform(0.02, 0.9), rng.choice(("void", "correct"))) for _ in range(edits)]
    return sorted(plan)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the scenario and return its figures."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop Dagster on the way out
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp,
        fresh_database_url(args.database_url, Path(tmp), keep=args.keep_database) as url,
        SandboxServer(SandboxConfig(port=0, time_scale=args.time_scale, throttle=True)) as sandbox,
    ):
        engine = create_engine(url)
        migrate.upgrade(engine)
        world = _set_up(engine, sandbox, url, Path(tmp), args)
        requests = RequestLog(sandbox, world.main.realm_id)
        phases = {"set_up": time.monotonic() - started}
        with DagsterStack(world.folder / "dagster_home", world.env) as dagster:
            phases["dagster_start"] = time.monotonic() - started - sum(phases.values())
            chaos = Chaos(world, dagster, args)
            chaos.drive()
            phases["chaos_until_settled"] = time.monotonic() - started - sum(phases.values())
            runs = dagster.settled_runs()
            failures = Counter(
                _gist(dagster.run_failure(run["runId"]) or "no step failure logged (its process died)")
                for run in runs
                if run["status"] == "FAILURE"
            )
        phases["runs_ending"] = time.monotonic() - started - sum(phases.values())
        counters = world.admin.counters()["realms"].get(world.main.realm_id, {})
        verdict = audit(engine, sandbox, [world.main, world.other])
        figures = _figures(world, args, chaos, verdict, counters, runs, time.monotonic() - started)
        figures["run_failures"] = dict(failures)
        figures["wall_phases_seconds"] = {name: round(seconds, 1) for name, seconds in phases.items()}
        figures["calls"] = requests.summary()
        if args.keep_database:
            figures["kept_database"] = url
        if args.request_log:
            requests.dump(Path(args.request_log), chaos, _writes(engine, world.main.organization_id))
            figures["request_log"] = args.request_log
        engine.dispose()
    return figures


def _set_up(
    engine: Engine, sandbox: SandboxServer, url: str, folder: Path, args: argparse.Namespace
) -> World:
    admin = SandboxAdmin(sandbox.base_url)
    secret_key = Fernet.generate_key().decode()
    main = create_demo(
        engine, customers=args.customers, items=args.items, invoices=args.invoices, seed=args.seed
    )
    other = create_demo(
        engine, customers=5, items=3, invoices=args.other_invoices, seed=args.seed + 1, name="Other Company"
    )
    with engine.begin() as conn:  # the demo retires a few customers; their invoices would be refused
        conn.execute(sa.update(s.customers).values(is_active=True))
        for table, column in ((s.customers, "display_name"), (s.items, "name"), (s.invoices, "doc_number")):
            conn.execute(  # the second organisation's names are its own: a write into the wrong company shows
                sa.update(table)
                .where(table.c.organization_id == other.organization_id)
                .values({column: sa.literal(f"{OTHER_PREFIX} ") + table.c[column]})
            )
    tenants = []
    for summary, name in ((main, "Chaos Company"), (other, "Other Company")):
        realm_id = admin.new_realm(name)
        admin.settings(realm_id, unique_doc_numbers=False)
        admin.set_faults(realm_id, drop_after_write=args.drop_rate, error_503=args.error_rate, seed=args.seed)
        tokens = TokenSet.from_response(admin.tokens(realm_id))
        ConnectionStore(engine, secret_key).save(
            summary.organization_id, realm_id, "local", sandbox.base_url, tokens
        )
        tenants.append(Tenant(summary.organization_id, realm_id))
    admin.settings(tenants[0].realm_id, limits={"batch_per_minute": args.batch_budget})
    env = {
        "BATCHLY_DATABASE_URL": url,
        "BATCHLY_SECRET_KEY": secret_key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
        "QBO_TIME_SCALE": str(args.time_scale),
    }
    with engine.connect() as conn:
        originals = conn.execute(
            sa.select(sa.func.max(s.invoices.c.id)).where(
                s.invoices.c.organization_id == main.organization_id
            )
        ).scalar_one()
    return World(
        engine,
        sandbox,
        admin,
        secret_key,
        tenants[0],
        tenants[1],
        int(originals),
        env,
        folder,
        JOB_LEASE_QBO_SECONDS / args.time_scale,
        _takeover_grace(args.time_scale),
    )


class RequestLog:
    """Every request the main company's sandbox received: when it arrived and was answered (``time.time()``), its
    resource, its status (0: the connection dropped after the write) and, for a batch call, its operations."""

    def __init__(self, sandbox: SandboxServer, realm_id: str) -> None:
        self.entries: list[dict[str, Any]] = []
        handle = sandbox.api.handle

        def logged(request: Any, realm: str, parts: list[str]) -> Any:
            arrived = time.time()
            response = handle(request, realm, parts)
            if realm != realm_id:
                return response
            resource = parts[0].lower() if parts else ""
            ops: Counter[str] = Counter()
            if resource == "batch":
                try:
                    for item in (request.json() or {}).get("BatchItemRequest", []):
                        ops[str(item.get("operation"))] += 1
                except Exception:
                    ops["unreadable"] += 1
            self.entries.append(
                {
                    "arrived": arrived,
                    "answered": time.time(),
                    "resource": f"{request.method} {resource}",
                    "status": 0 if response.drop else response.status,
                    "ops": dict(ops),
                }
            )
            return response

        sandbox.api.handle = logged  # type: ignore[method-assign,assignment]

    def summary(self) -> dict[str, Any]:
        """Batch calls by status and by what they carried."""
        batches = [e for e in self.entries if e["resource"] == "POST batch"]
        carried: Counter[str] = Counter()
        for entry in batches:
            kinds = "+".join(sorted(entry["ops"])) or "none"
            carried[kinds] += 1
        return {
            "batch_by_status": dict(Counter(str(e["status"]) for e in batches)),
            "batch_by_operations": dict(carried),
            "batch_ops": sum(sum(e["ops"].values()) for e in batches),
            "other_by_resource": dict(Counter(e["resource"] for e in self.entries if e not in batches)),
        }

    def dump(self, path: Path, chaos: Chaos, writes: Sequence[tuple[datetime, str | None]]) -> None:
        """The post-mortem file: requests, due samples, outages, writes (run ids)."""
        import json

        payload = {
            "requests": self.entries,
            "busy": [(at.timestamp(), due) for at, due in chaos.busy],
            "outages": [(o.start.timestamp(), o.run_id, o.allowed) for o in chaos.outages],
            "writes": [(at.timestamp(), run_id) for at, run_id in writes],
            "ledger": chaos.ledger,
            "claimable": chaos.claimable,
        }
        path.write_text(json.dumps(payload))


def _gist(message: str) -> str:
    """A failure message without its ids and times, so alike failures count together."""
    message = re.sub(r"(run|cli)-[0-9a-f-]+-\d+-[\w.]+", r"\1-…", " ".join(message.split()))
    return re.sub(r"\d[\d:. -]*\d|\d", "N", message)[:300]


def _takeover_grace(time_scale: float) -> float:
    """The push's takeover grace: a lapsed lock is taken over only after the client's whole request time."""
    config = ClientConfig(time_scale=time_scale)
    return config.scaled(config.connect_timeout + config.read_timeout)


@dataclass(frozen=True)
class Outage:
    """A kill or pause of the run holding the company: nobody could push from ``start`` until someone else's next
    write — or, for a pause, the hit run's own first write after it was ``resumed`` (it kept its lease, or took the
    company again at once) — for at most ``allowed`` seconds (the recovery the design promises); longer counts
    against throughput."""

    start: datetime
    run_id: str | None
    allowed: float
    resumed: datetime | None = None


@dataclass
class Racer:
    """A ``batchly-sync push`` started beside the Dagster run."""

    process: subprocess.Popen[bytes]
    log: Path
    why: str


class Chaos:
    """Drives the plan until it is spent and the queue is settled (or ``--timeout``)."""

    def __init__(self, world: World, dagster: DagsterStack, args: argparse.Namespace) -> None:
        self.world = world
        self.dagster = dagster
        self.args = args
        self.rng = random.Random(args.seed)
        self.plan = schedule(args, self.rng)
        self.later: list[tuple[float, str, Callable[[], None]]] = []  # (monotonic time, what, action)
        self.racers: list[Racer] = []
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.outages: list[Outage] = []
        self.edited: set[int] = set()
        self.hit: set[str] = set()  # runs killed, or paused and not resumed yet: not hit (again) now
        # samples: how many rows the main organisation had due (claimable or leased), counted up to DUE_CAP
        self.busy: list[tuple[datetime, int]] = []
        self.ledger: list[tuple[float, Any, int]] = []  # samples: (time, learned budget, requests in flight)
        # samples (with --request-log): was a row due that a claim could take (no older unfinished row of its record)?
        self.claimable: list[tuple[float, bool]] = []
        self.racer_exits: Counter[str] = Counter()
        self.racer_messages: Counter[str] = Counter()
        self.operator_interventions = 0
        self.timed_out = False
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s {s.utcnow():%H:%M:%S.%f}] {message}", flush=True)

    # -- the loop --------------------------------------------------------------------------------------------
    def drive(self) -> None:
        deadline = self.started + self.args.timeout
        last_check = 0.0
        while True:
            now = time.monotonic()
            if now > deadline:
                self.timed_out = True
                self.say(f"timeout after {self.args.timeout:.0f}s: stopping the injections")
                self._finish_now()
                return
            progress = self.progress()
            self.busy.append((s.utcnow(), self._work_due()))
            for planned in [p for p in self.plan if p.at <= progress]:
                planned.due_since = planned.due_since or now
                if self.fire(planned, progress):
                    self.injected[planned.kind] += 1
                    self.plan.remove(planned)
                elif now - planned.due_since > RETRY_EVENT_SECONDS:
                    self.say(f"skipped {planned.kind}: no push run held the company")
                    self.skipped[planned.kind] += 1
                    self.plan.remove(planned)
            for entry in [e for e in self.later if e[0] <= now]:
                self.later.remove(entry)
                entry[2]()
            self._reap_racers()
            if now - last_check > 1.0:
                last_check = now
                if self.args.request_log:
                    self._sample_ledger()
                    self.claimable.append((time.time(), self._claimable_due()))
                if not self.later and not self.racers and self._queue_settled():
                    if self.plan:  # progress stopped short of them (edited invoices stay pending)
                        for planned in self.plan:
                            self.skipped[planned.kind] += 1
                        self.say(f"queue settled; {len(self.plan)} planned injections left unfired")
                        self.plan.clear()
                    self.say("queue settled")
                    return
            time.sleep(POLL_SECONDS)

    def _finish_now(self) -> None:
        for _, _, action in sorted(self.later, key=lambda e: e[0]):
            if action.__name__ == "resume":
                action()
        self.later.clear()
        for racer in self.racers:
            racer.process.wait(timeout=self.world.lease_seconds * 6)
        self._reap_racers()

    def progress(self) -> float:
        """The share of the main organisation's original invoices that a push has settled."""
        inv = s.invoices.c
        with self.world.engine.connect() as conn:
            settled = conn.execute(
                sa.select(sa.func.count()).where(
                    inv.organization_id == self.world.main.organization_id,
                    inv.id <= self.world.originals,
                    sa.or_(inv.qbo_id.is_not(None), inv.sync_status != "pending"),
                )
            ).scalar_one()
        return int(settled) / max(1, self.args.invoices)

    def _work_due(self) -> int:
        """How many rows of the main organisation a push could work on now (claimable, or leased), up to
        :data:`DUE_CAP` (more than a window of the budget can carry makes no difference)."""
        q = s.sync_queue.c
        due = sa.or_(
            q.status == "in_progress", sa.and_(q.status == "pending", q.next_attempt_at <= s.utcnow())
        )
        rows = (
            sa.select(q.id)
            .where(q.organization_id == self.world.main.organization_id, due)
            .limit(DUE_CAP)
            .subquery()
        )
        with self.world.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar_one())

    def _claimable_due(self) -> bool:
        """Whether a due row of the main organisation could be claimed now: due as :meth:`_work_due` counts it, and
        not waiting behind an older unfinished row of its record (a claim skips those). For the post-mortem only:
        ``busy`` (what ``throughput_ratio`` counts) is unchanged."""
        q = s.sync_queue.c
        older = s.sync_queue.alias("older")
        blocked = sa.exists().where(
            older.c.entity_type == q.entity_type,
            older.c.entity_id == q.entity_id,
            older.c.status.in_(("pending", "in_progress")),
            older.c.id < q.id,
        )
        due = sa.and_(q.status == "pending", q.next_attempt_at <= s.utcnow(), ~blocked)
        with self.world.engine.connect() as conn:
            found = conn.execute(
                sa.select(q.id).where(q.organization_id == self.world.main.organization_id, due).limit(1)
            ).first()
        return found is not None

    def _sample_ledger(self) -> None:
        """The main company's learned budget and its requests in flight, as the limiter's ledger holds them."""
        realm, r = self.world.main.realm_id, s.qbo_rate_requests.c
        now = time.time()
        with self.world.engine.connect() as conn:
            budget = conn.execute(
                sa.select(s.qbo_rate_realms.c.budget).where(s.qbo_rate_realms.c.realm_id == realm)
            ).scalar()
            flying = conn.execute(
                sa.select(sa.func.count()).where(r.realm_id == realm, r.in_flight_until > now)
            ).scalar_one()
        self.ledger.append((now, budget, int(flying)))

    def _queue_settled(self) -> bool:
        q = s.sync_queue.c
        with self.world.engine.connect() as conn:
            open_rows = conn.execute(
                sa.select(sa.func.count()).where(q.status.in_(("pending", "in_progress")))
            ).scalar_one()
        return int(open_rows) == 0

    # -- injections ------------------------------------------------------------------------------------------
    def fire(self, planned: Planned, progress: float) -> bool:
        """Inject one fault; False when it cannot happen yet (no run holds the company, nothing to edit …)."""
        at = f"at {progress:.0%}"
        match planned.kind:
            case "kill":
                return self._kill(at, time.monotonic() - (planned.due_since or time.monotonic()))
            case "pause":
                return self._pause(at)
            case "db_drop":
                dropped = drop_connections(self.world.engine)
                self.injected["connections_dropped"] += dropped
                self.say(f"dropped {dropped} database connections {at}")
                return True
            case "racer":
                self._start_racer(f"racer {at}")
                return True
            case "void" | "correct":
                return self._edit(planned.kind, at)
            case "reconnect":
                return self._reconnect(at)
        raise ValueError(planned.kind)

    def _lock_owner(self) -> str | None:
        lock = s.qbo_push_locks.c
        with self.world.engine.connect() as conn:
            owner = conn.execute(
                sa.select(lock.owner).where(
                    lock.realm_id == self.world.main.realm_id, lock.expires_at > s.utcnow()
                )
            ).scalar()
        return None if owner is None else str(owner)

    def _holding_racer(self) -> Racer | None:
        """The ``batchly-sync push`` started here that holds the company (its worker name carries its pid)."""
        owner = self._lock_owner() or ""
        return next(
            (r for r in self.racers if owner.startswith("cli-") and f"-{r.process.pid}-" in owner), None
        )

    def _holding_run(self) -> str | None:
        """The Dagster run of the main organisation that holds its company's push lock, if any."""
        owner = self._lock_owner()
        if owner is None or not owner.startswith("run-"):
            return None
        prefix = owner.removeprefix("run-")[:8]
        for run in self.dagster.runs():
            if (
                run["status"] == "STARTED"
                and run["runId"].startswith(prefix)
                and run["runId"] not in self.hit
            ):
                return str(run["runId"])
        return None

    def _kill(self, at: str, overdue: float) -> bool:
        """SIGKILL the Dagster run holding the company; when a racer has held it for a while instead, the racer."""
        run_id = self._holding_run()
        recovery = self.world.lease_seconds + self.world.grace_seconds + RECOVERY_ALLOWANCE_SECONDS
        if run_id is None:
            racer = self._holding_racer() if overdue > KILL_RACER_AFTER_SECONDS else None
            if racer is None:
                return False
            # the CLI's lease is compressed by QBO_TIME_SCALE like the job's: the same recovery
            self.outages.append(Outage(s.utcnow(), None, recovery))  # CLI writes carry no run id
            racer.process.kill()
            self.injected["kill_of_cli"] += 1
            self.say(
                f"SIGKILL `batchly-sync push` (pid {racer.process.pid}) at {self.progress():.0%} (due {at})"
            )
            return True
        self.outages.append(Outage(s.utcnow(), run_id, recovery))
        self.hit.add(run_id)
        signalled = self.dagster.signal_run(run_id, signal.SIGKILL)
        self.say(f"SIGKILL run {run_id[:8]} ({signalled} processes) at {self.progress():.0%} (due {at})")

        def operator() -> None:
            if any(r["runId"] == run_id and r["status"] == "STARTED" for r in self.dagster.runs()):
                self.dagster.mark_run_dead(run_id)
                self.operator_interventions += 1
                self.say(f"run {run_id[:8]} still STARTED one lease after its kill: marked dead (operator)")

        self.later.append(
            (time.monotonic() + self.world.lease_seconds + OPERATOR_GRACE_SECONDS, "operator", operator)
        )
        return True

    def _pause(self, at: str) -> bool:
        run_id = self._holding_run()
        if run_id is None:
            return False
        # every other pause outlasts the takeover grace too, so another worker takes over while this one is frozen
        world = self.world
        pause = 1.25 * (world.lease_seconds + (world.grace_seconds if self.injected["pause"] % 2 else 0.0))
        takeover = world.lease_seconds + world.grace_seconds
        self.outages.append(Outage(s.utcnow(), run_id, max(pause, takeover) + RECOVERY_ALLOWANCE_SECONDS))
        self.hit.add(run_id)
        signalled = self.dagster.signal_run(run_id, signal.SIGSTOP)
        self.say(
            f"SIGSTOP run {run_id[:8]} ({signalled} processes) for {pause:.0f}s at {self.progress():.0%} (due {at})"
        )
        self._start_racer(f"takeover of paused run {run_id[:8]}")

        outage = len(self.outages) - 1

        def resume() -> None:
            self.dagster.signal_run(run_id, signal.SIGCONT)
            self.outages[outage] = replace(self.outages[outage], resumed=s.utcnow())
            self.hit.discard(run_id)  # a later kill or pause may hit it again (else one run pushing on to the
            # end made every later injection skip: "no push run held the company")
            self.say(f"SIGCONT run {run_id[:8]}")

        self.later.append((time.monotonic() + pause, "resume", resume))
        return True

    def _start_racer(self, why: str) -> None:
        log = self.world.folder / f"racer-{len(self.racers) + sum(self.racer_exits.values())}.log"
        command = [
            str(Path(sys.executable).with_name("batchly-sync")),
            "push",
            "--org",
            str(self.world.main.organization_id),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env={**os.environ, **self.world.env}, stdout=out, stderr=subprocess.STDOUT
            )
        self.racers.append(Racer(process, log, why))
        self.say(f"started `batchly-sync push --org {self.world.main.organization_id}` ({why})")

    def _reap_racers(self) -> None:
        for racer in [r for r in self.racers if r.process.poll() is not None]:
            self.racers.remove(racer)
            code = racer.process.returncode
            self.racer_exits[str(code)] += 1
            lines = [line for line in racer.log.read_text(errors="replace").splitlines() if line.strip()]
            message = next(
                (line for line in reversed(lines) if "did not run" in line or "Traceback" in line), ""
            )
            if code != 0:
                message = message or (lines[-1] if lines else "")
                self.racer_messages[message[:300]] += 1
            tail = " | ".join(line.strip()[-160:] for line in lines[-4:])
            self.say(f"racer ({racer.why}) exited {code}: {tail}")
            if code != 0 and any("Traceback" in line for line in lines):
                print("\n".join(lines[-40:]), flush=True)

    def _edit(self, kind: str, at: str) -> bool:
        """Void or correct one of the main organisation's original invoices, preferably one a worker holds."""
        inv, q = s.invoices.c, s.sync_queue.c
        main = self.world.main.organization_id
        with self.world.engine.connect() as conn:
            for status in ("in_progress", "pending", None):
                query = sa.select(inv.id).where(inv.organization_id == main, inv.id <= self.world.originals)
                if status is not None:
                    query = query.where(
                        inv.id.in_(
                            sa.select(q.entity_id).where(
                                q.organization_id == main, q.entity_type == "invoice", q.status == status
                            )
                        )
                    )
                candidates = sorted(set(conn.execute(query).scalars()) - self.edited)
                if candidates:
                    break
        if not candidates:
            return False
        target = self.rng.choice(candidates)
        self.edited.add(target)
        with self.world.engine.begin() as conn:
            if kind == "void":
                conn.execute(sa.update(s.invoices).where(inv.id == target).values(status="void"))
            else:
                doc = conn.execute(sa.select(inv.doc_number).where(inv.id == target)).scalar_one()
                f.correction(conn, target, f"{doc}-C")
        self.injected[f"{kind}_{status or 'pushed'}"] += 1
        return True

    def _reconnect(self, at: str) -> bool:
        """The second organisation authorises the main company; then its app writes one more invoice."""
        world = self.world
        other = world.other.organization_id
        with world.engine.connect() as conn:
            linked = conn.execute(
                sa.select(sa.func.count()).where(s.qbo_sync_state.c.organization_id == other)
            ).scalar_one()
            customer, item = (
                conn.execute(sa.select(t.c.id).where(t.c.organization_id == other).limit(1)).scalar_one()
                for t in (s.customers, s.items)
            )
        if not linked:
            return False  # nothing bound yet: a reconnect elsewhere would be legitimate
        tokens = TokenSet.from_response(world.admin.tokens(world.main.realm_id))
        try:
            ConnectionStore(world.engine, world.secret_key).save(
                other, world.main.realm_id, "local", world.sandbox.base_url, tokens
            )
            self.injected["reconnects_accepted"] += 1
            self.say(f"organisation {other} reconnected to the main company {at}: ACCEPTED")
        except CompanyMismatch as exc:
            self.injected["reconnects_refused"] += 1
            self.say(f"organisation {other} reconnect to the main company refused {at}: {exc}")
        with world.engine.begin() as conn:
            number = self.injected["reconnect"] + 1
            f.invoice(conn, other, customer, item, doc_number=f"{OTHER_PREFIX} AFTER-RECONNECT-{number}")
        return True


def _writes(engine: Engine, organization_id: int) -> list[tuple[datetime, str | None]]:
    """(when, run id) of every entity write the organisation's pushes logged."""
    log = s.sync_log.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(log.created_at, log.run_id).where(
                log.organization_id == organization_id,
                log.direction == "push",
                log.outcome == "ok",
                log.action.in_(WRITES),
            )
        ).all()
    return sorted((at, run_id) for at, run_id in rows)


Interval = tuple[float, float]


def _merge(intervals: Sequence[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for begin, end in sorted(intervals):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > begin:
            merged.append((begin, end))
    return merged


def _measure(intervals: Sequence[Interval]) -> float:
    return sum(end - begin for begin, end in _merge(intervals))


def _clip(intervals: Sequence[Interval], begin: float, end: float) -> list[Interval]:
    return [(max(a, begin), min(b, end)) for a, b in intervals if min(b, end) > max(a, begin)]


def _subtract(left: Sequence[Interval], right: Sequence[Interval]) -> list[Interval]:
    pieces = []
    for begin, end in _merge(left):
        for cut_begin, cut_end in _merge(right):
            if cut_end <= begin or cut_begin >= end:
                continue
            if cut_begin > begin:
                pieces.append((begin, cut_begin))
            begin = max(begin, cut_end)
        if end > begin:
            pieces.append((begin, end))
    return pieces


def allowed_calls(pieces: Sequence[Interval], window: float, budget: int) -> int:
    """The most batch calls a sliding window of ``budget`` calls per ``window`` seconds lets through during
    ``pieces``: a client that sends the moment it may (the burst a window allows after every pause included)."""
    sent: deque[float] = deque()
    calls = 0
    for begin, end in _merge(pieces):
        at = begin
        while True:
            if len(sent) == budget:
                at = max(at, sent[0] + window)
            if at > end:
                break
            if len(sent) == budget:
                sent.popleft()
            sent.append(at)
            calls += 1
    return calls


def allowed_writes(
    pieces: Sequence[Interval], window: float, budget: int, due: Sequence[tuple[float, int]]
) -> int:
    """The most entity writes a client could have made during ``pieces`` with a sliding window of ``budget`` batch
    calls per ``window`` seconds, each call carrying up to :data:`BATCH_ITEMS` writes — but no more writes in any
    window than there were rows due (``due``: samples of ``(time, rows due)``): a budget lets nobody write rows that
    do not exist, so the last few rows of a push, or a lull with a handful due, are not credited as full calls. With
    plenty due this is :func:`allowed_calls` x 30."""
    times, counts = [at for at, _ in due], [count for _, count in due]

    def due_at(at: float) -> int:
        i = bisect_right(times, at) - 1
        return counts[i] if i >= 0 else 0

    def next_sample(at: float) -> float:
        i = bisect_right(times, at)
        return times[i] if i < len(times) else math.inf

    sent: deque[tuple[float, int]] = deque()  # (when, writes credited) of the calls in the last window
    total = 0
    for begin, end in _merge(pieces):
        at = begin
        while at <= end:
            while sent and sent[0][0] <= at - window:
                sent.popleft()
            if len(sent) == budget:
                at = max(at, sent[0][0] + window)
                continue
            room = due_at(at) - sum(credited for _, credited in sent)
            if room <= 0:  # everything due is credited in this window: until more is due, or a call leaves
                at = min(next_sample(at), sent[0][0] + window if sent else math.inf)
                continue
            credited = min(BATCH_ITEMS, room)
            sent.append((at, credited))
            total += credited
    return total


def throughput(
    writes: Sequence[tuple[datetime, str | None]],
    busy: Sequence[tuple[datetime, int]],
    outages: Sequence[Outage],
    time_scale: float,
    budget: int,
) -> dict[str, Any]:
    """Entity writes over the most the company's real batch budget allowed in the same time: ``budget_writes``, what
    a perfect client could have written then (:func:`allowed_writes`: the batch calls the window lets through, 30
    writes each, never more in a window than the rows due). ``throughput_ratio_full_calls`` credits every call the
    window allowed with 30 writes, however few rows were due (the figure before 2026-12-03: a tail of 25 rows was
    credited a burst of 20 calls, 600 writes).

    Counted: the time from the first write to the last during which work was due (a claimable or leased row,
    ``busy`` samples), less the outages the benchmark caused — from a kill or pause of a run until the next write of
    anyone else (a write-back of the hit run already on its way does not end it), each for at most the recovery the
    design allows it (:class:`Outage`). Time when every remaining row was backing off is left out
    (``idle_seconds``); ``throughput_ratio_with_outages`` keeps the outages.
    """
    if len(writes) < 2:
        return {"writes": len(writes), "throughput_ratio": float("nan")}
    first, last = writes[0][0].timestamp(), writes[-1][0].timestamp()
    samples = [(at.timestamp(), int(due)) for at, due in busy]
    due = _clip(
        [(at, after) for (at, was_due), (after, _) in pairwise(samples) if was_due],
        first,
        last,
    )
    lost = []
    for outage in outages:
        begin = outage.start.timestamp()
        resumed = next(
            (
                at.timestamp()
                for at, run in writes
                if at > outage.start
                and (run != outage.run_id or (outage.resumed is not None and at >= outage.resumed))
            ),
            last,
        )
        lost.append((begin, min(resumed, begin + outage.allowed)))
    counted = _subtract(due, lost)
    window = 60.0 / time_scale
    calls = allowed_calls(counted, window, budget)
    allowed, allowed_with_outages = (
        allowed_writes(counted, window, budget, samples),
        allowed_writes(due, window, budget, samples),
    )
    busy_seconds, counted_seconds = _measure(due), _measure(counted)

    def ratio(allowed: int) -> float:
        return round(len(writes) / allowed, 3) if allowed else float("nan")

    return {
        "writes": len(writes),
        "pushing_seconds": round(last - first, 1),
        "idle_seconds": round(last - first - busy_seconds, 1),
        "outage_seconds": round(busy_seconds - counted_seconds, 1),
        "counted_seconds": round(counted_seconds, 1),
        "writes_per_qbo_minute": round(len(writes) / (counted_seconds / window), 1)
        if counted_seconds
        else None,
        "budget_calls": calls,
        "budget_writes": allowed,
        "throughput_ratio": ratio(allowed),
        "throughput_ratio_full_calls": ratio(calls * BATCH_ITEMS),
        "throughput_ratio_with_outages": ratio(allowed_with_outages),
    }


def _figures(
    world: World,
    args: argparse.Namespace,
    chaos: Chaos,
    verdict: dict[str, Any],
    counters: dict[str, Any],
    runs: list[dict[str, Any]],
    wall: float,
) -> dict[str, Any]:
    engine = world.engine
    q = s.sync_queue.c
    with engine.connect() as conn:
        queue: dict[str, int] = dict(
            conn.execute(sa.select(q.status, sa.func.count()).group_by(q.status)).all()
        )
    requests = int(counters.get("requests_total", 0))
    batch_calls = int(counters.get("requests", {}).get("POST batch", 0))  # 429s, 503s and replays included
    throttled = int(counters.get("throttled", 0))
    writes = _writes(engine, world.main.organization_id)
    speed = throughput(writes, chaos.busy, chaos.outages, args.time_scale, args.batch_budget)
    main = verdict["tenants"][world.main.organization_id]
    targets = ("duplicates", "open_pairs", "orphans", "false_errors", "cross_company_writes")
    throttled_ratio = round(throttled / requests, 4) if requests else 0.0
    figures = {
        "invoices": args.invoices,
        "seed": args.seed,
        "time_scale": args.time_scale,
        "database": engine.dialect.name,
        "invoices_in_qbo": main["invoices_in_qbo"],
        **{kind: verdict[kind] for kind in targets},
        "throttled_ratio": throttled_ratio,
        "throughput_ratio": speed["throughput_ratio"],
        "invariants_hold": all(
            verdict[kind] == 0 for kind in (*targets, "missing", "stale_open", "unlinked")
        ),
        "targets_met": all(verdict[kind] == 0 for kind in targets)
        and throttled_ratio <= 0.05
        and speed["throughput_ratio"] >= 0.85,
        **{kind: verdict[kind] for kind in ("missing", "stale_open", "unlinked", "true_errors")},
        "open_in_qbo": main["open_in_qbo"],
        "voided_in_qbo": main["voided_in_qbo"],
        "batchly_invoices": main["invoices"],
        "queue": queue,
        "timed_out": chaos.timed_out,
        "injected": dict(sorted(chaos.injected.items())),
        "skipped": dict(sorted(chaos.skipped.items())),
        "operator_interventions": chaos.operator_interventions,
        "racer_exits": dict(chaos.racer_exits),
        "racer_messages": dict(chaos.racer_messages),
        **{k: v for k, v in speed.items() if k != "throughput_ratio"},
        "batch_budget_per_minute": args.batch_budget,
        "batch_calls": batch_calls,
        "writes_per_batch_call": round(speed["writes"] / batch_calls, 1) if batch_calls else None,
        # batch calls QuickBooks admitted over the most the budget allowed in the counted time: how much was used
        "batch_call_ratio": round((batch_calls - throttled) / speed["budget_calls"], 3)
        if speed.get("budget_calls")
        else None,
        "api": {
            "requests": requests,
            "throttled": throttled,
            "writes_applied": counters.get("writes_applied", 0),
            "dropped_connections": counters.get("dropped_connections", 0),
            "replays": counters.get("replays", 0),
            "by_endpoint": counters.get("requests", {}),
        },
        "runs": len(runs),
        "runs_by_status": dict(Counter(r["status"] for r in runs)),
        "wall_seconds": round(wall, 1),
        "examples": verdict["examples"],
    }
    return figures
