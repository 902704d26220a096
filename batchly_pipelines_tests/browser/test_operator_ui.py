"""The operator's view, in Chromium against ``dagster dev`` started here (webserver + daemon, a temporary
``DAGSTER_HOME``, a temporary SQLite Batchly database, the local sandbox over HTTP).

Nothing is launched behind the UI's back: the sensors push what is queued, ``sync_status_sensor`` re-evaluates the
checks, and "Sync now" and "resolve_conflicts" are launched from the launchpad with typed config. One stack serves
every test of the module; the tests run in file order (a refused invoice's failed run, "Sync now" asking for it, the
dead letter red and then green after the fix, a conflict found and resolved, a company's full reconciliation launched
from its asset page and its failing check). Screenshots go to ``docs/images/`` with ``BATCHLY_UPDATE_SCREENSHOTS=1``
(the README shows one), else to a temporary folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Connection

from batchly_pipelines.quickbooks.client import QuickBooksClient
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.pull.mirror import Window
from batchly_pipelines.services.pull.organization import EPOCH, pull_organization
from batchly_pipelines.store import migrate
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.db import Engine, create_engine, sync_transaction
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories as f
from batchly_pipelines_tests.support.dagster_stack import REPO, DagsterStack
from batchly_pipelines_tests.support.push import Books
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# the README's screenshots are remade with BATCHLY_UPDATE_SCREENSHOTS=1; other runs keep theirs out of the tree
IMAGES = (
    REPO / "docs" / "images"
    if os.environ.get("BATCHLY_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "batchly-operator-ui"
)
LOCATION = "batchly_pipelines"
REASON = "an invoice needs at least one line"
RUN_TIMEOUT_S = 240.0  # a loaded two-core machine (helpers testing at once) slows every run
ENDED = ("SUCCESS", "FAILURE", "CANCELED")
CHECK_TIMEOUT_MS = 120_000  # the sensor refreshes after each run (15 s ticks); the issue allows 5 minutes

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    ),
]

if CHROMIUM.exists():
    from playwright.sync_api import Page, expect, sync_playwright
else:  # pragma: no cover - the module is skipped
    Page = object  # type: ignore[assignment,misc]


@dataclass
class Stack:
    dagster: DagsterStack
    engine: Engine
    org: int
    customer: int
    item: int
    books: Books


def _runs(dagster: DagsterStack) -> list[dict[str, object]]:
    data = dagster.graphql(
        "{ runsOrError { ... on Runs { results { runId jobName status runConfigYaml tags { key value } } } } }"
    )
    return list(data["runsOrError"]["results"])


def _ended(dagster: DagsterStack) -> set[str]:
    return {str(run["runId"]) for run in _runs(dagster) if run["status"] in ENDED}


def _wait_for_run(dagster: DagsterStack, known: set[str], job: str) -> dict[str, object]:
    """The first run of ``job`` not in ``known`` once it has ended."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        for run in _runs(dagster):
            if run["runId"] not in known and run["jobName"] == job and run["status"] in ENDED:
                return run
        time.sleep(0.5)
    raise AssertionError(f"no {job} run ended within {RUN_TIMEOUT_S:.0f}s: {_runs(dagster)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("operator_ui")
    database_url = f"sqlite:///{tmp / 'batchly.sqlite'}"
    secret_key = Fernet.generate_key().decode()
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    with SandboxServer(SandboxConfig(port=0)) as sandbox:
        admin = SandboxAdmin(sandbox.base_url)
        realm_id = admin.new_realm()
        with engine.begin() as conn:
            org = f.organization(conn)
            customer = f.customer(conn, org)
            item = f.item(conn, org)
        ConnectionStore(engine, secret_key).save(
            org, realm_id, "local", sandbox.base_url, TokenSet.from_response(admin.tokens(realm_id))
        )
        env = {
            "BATCHLY_DATABASE_URL": database_url,
            "BATCHLY_SECRET_KEY": secret_key,
            "QBO_ENVIRONMENT": "local",
            "QBO_BASE_URL": sandbox.base_url,
        }
        with DagsterStack(tmp / "dagster_home", env) as dagster:
            yield Stack(dagster, engine, org, customer, item, Books(sandbox, realm_id))


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        # Dagster's "Join the Dagster community" dialog, which pops up once over whatever is open (screenshots too):
        # dismissed before any page loads, as a click on its Skip button stores it
        context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
        expect.set_options(
            timeout=30_000
        )  # a page of the UI can take longer than expect's 5 s on a busy machine
        page = context.new_page()
        # … and should it show all the same, it is skipped before the next action
        join = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        page.add_locator_handler(join, lambda dialog: dialog.get_by_role("button", name="Skip").click())
        yield page
        browser.close()


@pytest.fixture(scope="module")
def refused(stack: Stack) -> dict[str, object]:
    """A good and a refused invoice (no lines) inserted into Batchly; the push run the sensor started for them."""
    known = _ended(stack.dagster)  # a run still lingering for new records may take these too
    inserted_at = time.monotonic()
    with stack.engine.begin() as conn:
        f.invoice(conn, stack.org, stack.customer, stack.item, doc_number="GOOD-1")
        bad = f.invoice(conn, stack.org, stack.customer, stack.item, doc_number="BAD-1", lines=0)
    run = _wait_for_run(stack.dagster, known, "push_to_quickbooks")
    return {"invoice_id": bad, "run": run, "inserted_at": inserted_at}


def _shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name))


def test_a_push_with_a_refused_invoice_is_a_failed_run_whose_page_names_the_invoice_and_reason(
    stack: Stack, page: Page, refused: dict[str, object]
) -> None:
    run = refused["run"]
    assert isinstance(run, dict) and run["status"] == "FAILURE"

    page.goto(f"{stack.dagster.url}/runs/{run['runId']}")

    expect(page.get_by_text("Failure", exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(rf"BAD-1.*{REASON}")).first).to_be_visible()
    _shot(page, "failed-run.png")


def test_sync_now_with_doc_numbers_from_the_launchpad_reports_each_invoice_on_the_run_page(
    stack: Stack, page: Page, refused: dict[str, object]
) -> None:
    known = _ended(stack.dagster)
    page.goto(f"{stack.dagster.url}/locations/{LOCATION}/jobs/push_to_quickbooks/playground")
    editor = page.locator(".CodeMirror").first
    expect(editor).to_be_visible()
    config = (
        "ops:\n  push_records:\n    config:\n"
        f"      organization_id: {stack.org}\n"
        "      doc_numbers: [GOOD-1, BAD-1, NOPE-9]\n"
        "      linger_seconds: 0\n"
    )
    editor.evaluate("(node, text) => node.CodeMirror.setValue(text)", config)
    launch = page.get_by_role("button", name=re.compile("Launch run", re.IGNORECASE))
    expect(launch).to_be_enabled()
    _shot(page, "sync-now-launchpad.png")
    launch.click()

    run = _wait_for_run(stack.dagster, known, "push_to_quickbooks")
    assert run["status"] == "FAILURE"  # BAD-1 is dead and NOPE-9 unknown: not every invoice was settled
    page.goto(f"{stack.dagster.url}/runs/{run['runId']}")
    for line in (
        r"Sync now GOOD-1: invoice \d+ \(GOOD-1\) already synced",
        rf"Sync now BAD-1: invoice \d+ \(BAD-1\) dead — .*{REASON}",
        r"Sync now NOPE-9: invoice unknown — no invoice with DocNumber NOPE-9",
    ):
        expect(page.get_by_text(re.compile(line)).first).to_be_visible()
    _shot(page, "sync-now-run.png")


def test_the_dead_letter_check_turns_red_by_itself_and_green_after_the_fix(
    stack: Stack, page: Page, refused: dict[str, object]
) -> None:
    page.goto(f"{stack.dagster.url}/assets/sync_status?view=checks")
    name = page.get_by_text("dead_letter_empty", exact=True).first
    expect(name).to_be_visible()
    row = name.locator("xpath=../..")  # the check's entry in the list: its name and status
    name.click()
    expect(row).to_contain_text("Failed", timeout=CHECK_TIMEOUT_MS)
    red_after = time.monotonic() - float(str(refused["inserted_at"]))
    assert red_after < 300, (
        f"the dead letter showed red {red_after:.0f}s after the refused invoice was inserted"
    )
    expect(page.get_by_text(re.compile(REASON)).first).to_be_visible()
    _shot(page, "checks.png")

    with stack.engine.begin() as conn:  # the fix: the missing line (the edit queues the invoice again)
        _add_line(conn, int(str(refused["invoice_id"])), stack.item)

    expect(row).to_contain_text("Succeeded", timeout=CHECK_TIMEOUT_MS)  # the same page, never reloaded
    assert "BAD-1" in stack.books.by_doc_number()


def test_a_conflict_is_found_with_both_values_resolved_through_the_launchpad_and_the_check_clears_by_itself(
    stack: Stack, page: Page, refused: dict[str, object]
) -> None:
    c = s.customers.c
    with stack.engine.connect() as conn:  # linked by the push of the invoices that need it
        qbo_id = conn.execute(sa.select(c.qbo_id).where(c.id == stack.customer)).scalar_one()
    assert qbo_id
    # both sides change the email: the accountant in QuickBooks, someone in Batchly (without the outbox, so no push
    # settles it first); the pull sends email conflicts to review
    stack.books.act(
        action="update_customer",
        customer_id=qbo_id,
        fields={"PrimaryEmailAddr": {"Address": "theirs@example.com"}},
    )
    with sync_transaction(stack.engine) as conn:
        conn.execute(
            sa.update(s.customers)
            .where(c.id == stack.customer)
            .values(email="ours@example.com", updated_at=utcnow())
        )
    base_url, realm_id = stack.books.sandbox.base_url, stack.books.realm_id
    with QuickBooksClient(realm_id, base_url, SandboxTokens(base_url, realm_id)) as client:
        window = Window(EPOCH, utcnow() + timedelta(days=1))
        pull_organization(stack.engine, client, stack.org, window, review_fields=["email"])
    with stack.engine.connect() as conn:
        [conflict] = conn.execute(
            sa.select(s.sync_conflicts.c.id).where(s.sync_conflicts.c.resolution == "pending_review")
        ).scalars()

    page.goto(f"{stack.dagster.url}/assets/sync_status?view=checks")
    name = page.get_by_text("no_open_conflicts", exact=True).first
    expect(name).to_be_visible()
    row = name.locator("xpath=../..")
    name.click()
    expect(row).to_contain_text(re.compile("Failed|Warning"), timeout=CHECK_TIMEOUT_MS)
    found = re.compile(
        rf"conflict {conflict}, customer {stack.customer} \(.*\) email: Batchly 'ours@example.com', "
        r"QuickBooks 'theirs@example.com'"
    )
    expect(page.get_by_text(found).first).to_be_visible()
    _shot(page, "conflict-check.png")

    known = _ended(stack.dagster)
    page.goto(f"{stack.dagster.url}/locations/{LOCATION}/jobs/resolve_conflicts/playground")
    editor = page.locator(".CodeMirror").first
    expect(editor).to_be_visible()
    config = (
        "ops:\n  resolve_selected_conflicts:\n    config:\n"
        f"      conflict_ids: [{conflict}]\n"
        "      winner: quickbooks\n"
        "      resolved_by: ops@example.com\n"
    )
    editor.evaluate("(node, text) => node.CodeMirror.setValue(text)", config)
    launch = page.get_by_role("button", name=re.compile("Launch run", re.IGNORECASE))
    expect(launch).to_be_enabled()
    _shot(page, "resolve-launchpad.png")
    launch.click()
    run = _wait_for_run(stack.dagster, known, "resolve_conflicts")
    assert run["status"] == "SUCCESS"

    page.goto(f"{stack.dagster.url}/assets/sync_status?view=checks")
    name = page.get_by_text("no_open_conflicts", exact=True).first
    row = name.locator("xpath=../..")
    name.click()
    expect(row).to_contain_text(
        "Succeeded", timeout=CHECK_TIMEOUT_MS
    )  # recorded by the sensor, nobody re-ran it
    expect(page.get_by_text(re.compile(r"no conflict waiting for review \(1 settled")).first).to_be_visible()
    with stack.engine.connect() as conn:
        email = conn.execute(sa.select(c.email).where(c.id == stack.customer)).scalar_one()
    assert email == "theirs@example.com"


def test_a_full_reconciliation_launched_from_the_asset_page_fails_its_check_naming_the_invoice_edited_in_quickbooks(
    stack: Stack, page: Page, refused: dict[str, object]
) -> None:
    """The accountant changes a pushed invoice's line in QuickBooks (an immutable record for the sync: nothing
    brings it back): the company's full reconciliation, materialised from its asset page for the company's
    partition, fails ``invoices_reconciled`` and its table names the invoice and the field."""
    qbo = Qbo(stack.books.sandbox, stack.books.realm_id)
    [pushed] = stack.books.by_doc_number()["GOOD-1"]
    invoice = qbo.read("Invoice", str(pushed["Id"]))
    line = next(line for line in invoice["Line"] if line["DetailType"] == "SalesItemLineDetail")
    line["Amount"] = Decimal("99.99")
    line["SalesItemLineDetail"].pop("Qty", None)
    line["SalesItemLineDetail"].pop("UnitPrice", None)
    invoice["Line"] = [line]
    qbo.ok(qbo.post("invoice", invoice))
    known = _ended(stack.dagster)

    key = _company_partition(stack)

    page.goto(f"{stack.dagster.url}/assets/company_reconciliation")
    page.get_by_role("button", name=re.compile(r"Materialize")).first.click()
    dialog = page.get_by_role("dialog")
    try:
        dialog.get_by_role("button", name="All", exact=True).click()
        expect(dialog).to_contain_text("1 partition")  # the company's, added by company_partitions_sensor
        _shot(page, "reconcile-launch.png")
        dialog.get_by_role("button", name=re.compile(r"Launch")).click(timeout=20000)
    except Exception:
        page.screenshot(path="/tmp/dbg2.png")
        raise

    run = _wait_for_run(stack.dagster, known, "__ASSET_JOB")
    assert key in str(run)
    assert run["status"] == "SUCCESS"  # the asset materialised; its ERROR check is what turns red
    page.goto(f"{stack.dagster.url}/assets/company_reconciliation?view=checks")
    name = page.get_by_text("invoices_reconciled", exact=True).first
    expect(name).to_be_visible()
    row = name.locator("xpath=../..")
    name.click()
    expect(row).to_contain_text("Failed", timeout=CHECK_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"totals differ")).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"GOOD-1")).first).to_be_visible()
    expect(
        page.get_by_text(key, exact=True).first
    ).to_be_visible()  # the evaluation is the company's partition's
    _shot(page, "reconcile-check.png")


def _company_partition(stack: Stack, timeout_s: float = 120.0) -> str:
    """The organisation's company partition key, once ``company_partitions_sensor`` (30 s ticks) has added it."""
    query = '{ assetNodeOrError(assetKey: {path: ["company_reconciliation"]}) { ... on AssetNode { partitionKeys } } }'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keys = stack.dagster.graphql(query)["assetNodeOrError"]["partitionKeys"]
        found = [key for key in keys if key.endswith(f"-{stack.org}")]
        if found:
            return str(found[0])
        time.sleep(1)
    raise AssertionError(f"no company partition for organisation {stack.org} within {timeout_s:.0f}s")


def _add_line(conn: Connection, invoice_id: int, item_id: int) -> None:
    """What the operator's fix does in Batchly: give the invoice its line (and the total that goes with it)."""
    amount = Decimal("20.20")
    conn.execute(
        sa.insert(s.invoice_lines).values(
            invoice_id=invoice_id,
            line_no=1,
            item_id=item_id,
            quantity=2,
            unit_price=Decimal("10.10"),
            amount=amount,
        )
    )
    conn.execute(sa.update(s.invoices).where(s.invoices.c.id == invoice_id).values(total_amount=amount))
