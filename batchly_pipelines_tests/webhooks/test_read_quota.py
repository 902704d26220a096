"""Past the monthly read quota: the client tells Intuit's quota answer from throttling and stops at once; backfills
and full reconciliations say what they are about to read, against this month's budget, before they start."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from dagster import AssetCheckSeverity, ExecuteInProcessResult, instance_for_test
from sqlalchemy.engine import Engine

from batchly_pipelines.cli.main import main
from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.partitions import COMPANY, company_key, day_tags
from batchly_pipelines.defs.resources import BatchlyDatabase, QuickBooksResource
from batchly_pipelines.defs.webhooks.checks import read_budget_verdict
from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient
from batchly_pipelines.quickbooks.errors import ReadQuotaExhausted, ThrottledError
from batchly_pipelines.services.connections import client_for_organization
from batchly_pipelines.services.reconciliation.company import reconcile_company
from batchly_pipelines.settings import LOCAL_CLIENT_ID, Settings
from batchly_pipelines.store.read_budget import DatabaseReadMeter, reads_in_month
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.quickbooks import SandboxTokens
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import connect
from qbo_sandbox.server import SandboxConfig, SandboxServer


@pytest.fixture
def own_sandbox() -> Iterator[SandboxServer]:
    """A sandbox of this test alone: its read meter (per app) and quota are not shared with other tests."""
    with SandboxServer(SandboxConfig(port=0, throttle=False)) as server:
        yield server


@pytest.fixture
def connected_org(
    engine: Engine, own_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, Qbo]:
    """An organisation connected to a fresh realm of ``own_sandbox``, the environment set as for the CLI."""
    key = Fernet.generate_key().decode()
    for name, value in {
        "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BATCHLY_SECRET_KEY": key,
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": own_sandbox.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QBO_CLIENT_ID", raising=False)
    monkeypatch.delenv("BATCHLY_READ_QUOTA", raising=False)
    with engine.begin() as conn:
        org = factories.organization(conn, timezone="America/New_York")
    qbo = Qbo(own_sandbox)
    connect(engine, org, qbo.realm_id, own_sandbox.base_url, key)
    return org, qbo


def _reads(engine: Engine) -> int:
    return sum(reads_in_month(engine, LOCAL_CLIENT_ID, utcnow().strftime("%Y-%m")).values())


def _expected(text: str) -> int:
    found = re.search(r"expected QuickBooks reads: about ([\d,]+)", text)
    assert found, text
    return int(found.group(1).replace(",", ""))


def _run_pull(
    engine: Engine, org: int, tags: dict[str, str] | None = None
) -> tuple[ExecuteInProcessResult, float, list[str]]:
    """``pull_customers`` for the organisation's company partition, in process: the result, its seconds and the
    run's log messages."""
    url = engine.url.render_as_string(hide_password=False)
    key = company_key(org, "Acme Ltd")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(COMPANY, [key])
        started = time.monotonic()
        result = defs.resolve_job_def("pull_customers").execute_in_process(
            instance=instance,
            resources={
                "batchly_db": BatchlyDatabase(database_url=url),
                "quickbooks": QuickBooksResource(database_url=url),
            },
            partition_key=key,
            tags=tags,
            raise_on_error=False,
        )
        took = time.monotonic() - started
        return result, took, [entry.user_message for entry in instance.all_logs(result.run_id)]


def _use_up(engine: Engine, qbo: Qbo, quota: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``quota`` reads counted by both sides, then set the quota on both: the next read is refused."""
    meter = DatabaseReadMeter(engine, LOCAL_CLIENT_ID, qbo.realm_id)
    base = qbo.admin.base_url
    with QuickBooksClient(qbo.realm_id, base, SandboxTokens(base, qbo.realm_id), read_meter=meter) as client:
        for _ in range(quota):
            client.count("Customer")
    qbo.admin.set_read_quota(quota)
    monkeypatch.setenv("BATCHLY_READ_QUOTA", str(quota))


def test_a_read_past_the_quota_raises_read_quota_exhausted_at_once_and_is_not_retried(
    engine: Engine, connected_org: tuple[int, Qbo]
) -> None:
    _, qbo = connected_org
    base = qbo.admin.base_url
    tokens = SandboxTokens(base, qbo.realm_id)
    meter = DatabaseReadMeter(engine, LOCAL_CLIENT_ID, qbo.realm_id, quota=3)
    qbo.admin.set_read_quota(3)
    with QuickBooksClient(qbo.realm_id, base, tokens, read_meter=meter) as client:
        for _ in range(3):
            client.count("Customer")
        started = time.monotonic()
        with pytest.raises(ReadQuotaExhausted) as refused:
            client.query("SELECT * FROM Customer")
        assert time.monotonic() - started < 2  # no wait for a throttling window
        assert client.stats.throttled == 0 and client.stats.retries == 0
        client.write_batch([])  # writes are not metered (nothing to send here, and nothing refused)
    message = str(refused.value)
    month_end = f"{utcnow().year + (utcnow().month == 12)}-{utcnow().month % 12 + 1:02d}-01"
    assert LOCAL_CLIENT_ID in message and f"until the month resets on {month_end} 00:00 UTC" in message
    assert "3 reads" in message and "quota 3" in message
    # without a known quota the same answer is a throttle, as before (given up after max_throttled)
    unknown = DatabaseReadMeter(engine, LOCAL_CLIENT_ID, qbo.realm_id)
    config = ClientConfig(max_throttled=0)
    with (
        QuickBooksClient(qbo.realm_id, base, tokens, read_meter=unknown, config=config) as client,
        pytest.raises(ThrottledError),
    ):
        client.count("Customer")


def test_a_cli_pull_past_the_quota_fails_at_once_with_the_sentence(
    engine: Engine, connected_org: tuple[int, Qbo], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    org, qbo = connected_org
    _use_up(engine, qbo, 2, monkeypatch)
    started = time.monotonic()
    assert main(["pull", "--org", str(org)]) == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "monthly QuickBooks read quota of app batchly-local-client is used up" in err
    assert "until the month resets on" in err


def test_a_dagster_pull_past_the_quota_fails_red_naming_it_and_the_check_is_an_error(
    engine: Engine, connected_org: tuple[int, Qbo], monkeypatch: pytest.MonkeyPatch
) -> None:
    org, qbo = connected_org
    _use_up(engine, qbo, 2, monkeypatch)
    result, took, _ = _run_pull(engine, org)
    assert not result.success
    failures = " ".join(
        str(e.message) + str(e.event_specific_data) for e in result.all_events if e.is_failure
    )
    assert "read quota of app batchly-local-client is used up" in failures
    assert took < 60
    verdict = read_budget_verdict(
        BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))
    )
    assert (verdict.passed, verdict.severity) == (False, AssetCheckSeverity.ERROR)


def test_a_whole_history_cli_pull_prints_its_expected_reads_and_makes_them(
    engine: Engine, connected_org: tuple[int, Qbo], capsys: Any
) -> None:
    org, qbo = connected_org
    for n in range(3):
        qbo.customer(f"Budgeted {n}")
    before = _reads(engine)
    assert main(["pull", "--org", str(org)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("read budget:"))
    assert f"pull of company {qbo.realm_id}" in line and "of the monthly quota of 500,000" in line
    assert _expected(line) == _reads(engine) - before
    assert (
        main(["pull", "--org", str(org)]) == 0
    )  # incremental: no estimate (it would cost more than the pull)
    assert "read budget:" not in capsys.readouterr().out


def test_a_day_range_backfill_run_logs_its_expected_reads_and_makes_them(
    engine: Engine, connected_org: tuple[int, Qbo]
) -> None:
    org, qbo = connected_org
    qbo.customer("Backfilled")
    today = utcnow().date()
    before = _reads(engine)
    result, _, logged = _run_pull(
        engine, org, day_tags(today.replace(day=1) if today.day > 1 else today, today)
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    messages = [message for message in logged if "expected QuickBooks reads" in message]
    assert len(messages) == 1, messages
    assert _expected(messages[0]) == _reads(engine) - before


def test_a_full_reconciliation_states_its_reads_against_the_month(
    engine: Engine, connected_org: tuple[int, Qbo]
) -> None:
    org, qbo = connected_org
    qbo.customer("Reconciled")
    heard: list[str] = []
    settings = Settings.from_env()
    with client_for_organization(engine, settings, org) as client:
        before = _reads(engine)
        reconcile_company(engine, client, org, repair=False, log=heard.append)
    [note] = [line for line in heard if "expected QuickBooks reads" in line]
    assert "of the monthly quota of 500,000" in note and "used this month" in note
    assert _expected(note) == _reads(engine) - before
