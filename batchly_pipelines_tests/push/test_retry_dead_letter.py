"""``retry_dead_letter``: the CLI's `queue retry` from the launchpad — by queue row id or by organisation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dagster import ExecuteInProcessResult
from sqlalchemy.engine import Engine

from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.push.retry import retry_dead_letter
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.store.queue import SyncQueue
from batchly_pipelines_tests.support import factories as f


def _dead_customers(engine: Engine) -> tuple[int, list[int]]:
    """Two organisations with one dead customer row each; returns (first organisation, the dead row ids)."""
    with engine.begin() as conn:
        first, second = f.organization(conn, "First"), f.organization(conn, "Second")
        f.customer(conn, first, display_name="Bad: one")
        f.customer(conn, second, display_name="Bad: two")
    queue = SyncQueue(engine)
    rows = queue.claim("w", limit=10, lease=timedelta(minutes=1))
    for row in rows:
        queue.fail(row, f"customer {row.entity_id} display_name: contains ':'", retryable=False)
    return first, [row.id for row in rows]


def _run(engine: Engine, **config: Any) -> ExecuteInProcessResult:
    return retry_dead_letter.execute_in_process(
        run_config={"ops": {"retry_dead_rows": {"config": config}}},
        resources={
            "batchly_db": BatchlyDatabase(database_url=engine.url.render_as_string(hide_password=False))
        },
        raise_on_error=False,
    )


def _metadata(result: ExecuteInProcessResult) -> dict[str, Any]:
    [output] = [e for e in result.all_events if e.event_type_value in ("STEP_OUTPUT", "STEP_FAILURE")]
    if output.event_type_value == "STEP_OUTPUT":
        return dict(output.step_output_data.metadata)
    data = output.step_failure_data.user_failure_data
    assert data is not None
    return dict(data.metadata)


def _statuses(engine: Engine) -> dict[int, tuple[str, int]]:
    return {row["id"]: (row["status"], row["attempts"]) for row in SyncQueue(engine).list()}


def test_retry_by_id_revives_only_that_row_and_lists_it_with_its_reason(engine: Engine) -> None:
    _, (mine, theirs) = _dead_customers(engine)

    result = _run(engine, ids=[mine])

    assert result.success
    assert _statuses(engine) == {mine: ("pending", 0), theirs: ("dead", 0)}
    [row] = [dict(r.data) for r in _metadata(result)["retried"].records]
    assert row["queue_id"] == mine and row["name"] == "Bad: one" and row["field"] == "display_name"
    assert row["message"] == "contains ':'"


def test_retry_by_organisation_revives_its_rows_only(engine: Engine) -> None:
    first, (mine, theirs) = _dead_customers(engine)

    result = _run(engine, organization_id=first)

    assert result.success and _metadata(result)["revived"].value == 1
    assert _statuses(engine) == {mine: ("pending", 0), theirs: ("dead", 0)}


def test_unknown_ids_fail_the_run_after_retrying_the_others(engine: Engine) -> None:
    _, (mine, _) = _dead_customers(engine)

    result = _run(engine, ids=[mine, 9999])

    assert not result.success
    assert _statuses(engine)[mine] == ("pending", 0)
    metadata = _metadata(result)
    assert [dict(r.data) for r in metadata["not retried"].records] == [
        {"queue_id": 9999, "reason": "no such queue row"}
    ]


def test_a_run_without_a_choice_retries_nothing() -> None:
    result = retry_dead_letter.execute_in_process(
        run_config={"ops": {"retry_dead_rows": {"config": {}}}},
        resources={"batchly_db": BatchlyDatabase(database_url="sqlite://")},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data.user_failure_data
    assert data is not None and "ids or an organization_id" in (data.description or "")


def test_the_job_is_part_of_the_definitions() -> None:
    assert defs.resolve_job_def("retry_dead_letter").name == "retry_dead_letter"
