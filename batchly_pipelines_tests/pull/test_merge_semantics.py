"""Merge semantics of the pull (issue 10, failures 3, 4, 8 and 9): ownership writes the owner's value to both sides,
a cleared value is a change, the first link merges like any other both-sides change, newest-wins is per field, and
review fields are honoured; a review shows current values and is resolved on what the reviewer saw."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import instance_for_test

from batchly_pipelines.cli.main import main
from batchly_pipelines.definitions import defs
from batchly_pipelines.defs.resources import BatchlyDatabase
from batchly_pipelines.rules.name_lists import ITEMS
from batchly_pipelines.services.pull import owned, resolve
from batchly_pipelines.services.pull.checks import record_drift
from batchly_pipelines.services.pull.resolve import resolve_conflicts
from batchly_pipelines.services.push.organization import PushStats, push_organization
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.review_fields import review_fields, set_review_fields
from batchly_pipelines.store.schema import utcnow
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company, open_conflicts, queue


def _app_update(company: Company, table: sa.Table, row_id: int, **values: Any) -> None:
    """An edit made in the Batchly app (the triggers queue it and record when each field changed)."""
    with company.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def _changed_earlier(company: Company, entity_type: str, entity_id: int, field: str, hours: float) -> None:
    """Pretend Batchly's last change of ``field`` was ``hours`` ago (as if the edit had been made then)."""
    c = s.batchly_field_changes.c
    with company.engine.begin() as conn:
        conn.execute(
            sa.update(s.batchly_field_changes)
            .where(c.entity_type == entity_type, c.entity_id == entity_id, c.field == field)
            .values(changed_at=utcnow() - timedelta(hours=hours))
        )


def _push(company: Company) -> PushStats:
    return push_organization(company.engine, company.client, company.org, worker="test-worker")


def _conflicts(company: Company) -> list[dict[str, Any]]:
    return company.rows(s.sync_conflicts)


def _pending_items(company: Company) -> list[int]:
    return [
        q["entity_id"]
        for q in queue(company.engine)
        if q["entity_type"] == "item" and q["status"] == "pending"
    ]


def test_batchly_edits_of_quickbooks_owned_item_fields_fail_the_check_and_are_reverted_on_the_next_pull(
    company: Company,
) -> None:
    widget = company.qbo.item("Widget", "10.00", Sku="W-1")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    _app_update(
        company, s.items, item["id"], unit_price=Decimal("99.00"), is_active=False, name="Gadget", sku=None
    )

    drift = record_drift(company.engine, ITEMS, company.org)
    assert drift.failed == 1 and set(drift.examples[0]["fields"]) == {
        "unit_price",
        "is_active",
        "name",
        "sku",
    }

    company.pull()  # QuickBooks changed nothing: the mirror has no news, the edits are still reverted

    after = company.row(s.items, id=item["id"])
    assert (after["unit_price"], after["is_active"], after["name"], after["sku"]) == (
        Decimal("10.00"),
        True,
        "Widget",
        "W-1",
    )
    settled = {(c["field"], c["resolution"], c["reason"]) for c in _conflicts(company)}
    assert settled == {
        (name, "quickbooks", "owned_field") for name in ("unit_price", "is_active", "name", "sku")
    }
    assert record_drift(company.engine, ITEMS, company.org).passed


def test_a_description_edited_only_in_quickbooks_is_written_back_to_quickbooks(
    connected: Company,
) -> None:
    company = connected
    widget = company.qbo.item("Widget", "10.00", Description="Ours")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    company.act("update", entity="Item", id=widget["Id"], fields={"Description": "Theirs"})

    company.pull()

    assert company.row(s.items, id=item["id"])["description"] == "Ours"
    [conflict] = _conflicts(company)
    assert (conflict["field"], conflict["resolution"], conflict["reason"]) == (
        "description",
        "batchly",
        "owned_field",
    )
    assert _pending_items(company) == [item["id"]]  # Batchly won: the push is queued
    _push(company)
    assert company.qbo.read("Item", widget["Id"])["Description"] == "Ours"
    company.pull()
    assert record_drift(company.engine, ITEMS, company.org).passed and len(_conflicts(company)) == 1


def test_the_first_link_keeps_newer_batchly_only_values_and_sends_them(connected: Company) -> None:
    company = connected
    with company.qbo.admin.clock_advanced(-3600):  # QuickBooks' record is an hour older
        zoe = company.qbo.customer("Zoë", PrimaryEmailAddr={"Address": "zoe@example.com"})
    with company.engine.begin() as conn:
        customer = factories.customer(
            conn, company.org, "Zoë", email="zoe@example.com", phone="555", notes="ours", bill_city="Boise"
        )

    company.pull()

    row = company.row(s.customers, id=customer)
    assert row["qbo_id"] == zoe["Id"]
    assert (row["phone"], row["notes"], row["bill_city"]) == ("555", "ours", "Boise")
    assert {(c["field"], c["resolution"], c["reason"]) for c in _conflicts(company)} == {
        (name, "batchly", "first_link") for name in ("phone", "notes", "bill_city")
    }
    _push(company)
    qbo = company.qbo.read("Customer", zoe["Id"])
    assert (qbo["PrimaryPhone"]["FreeFormNumber"], qbo["Notes"], qbo["BillAddr"]["City"]) == (
        "555",
        "ours",
        "Boise",
    )


def test_newest_wins_per_field_not_by_the_records_last_update(company: Company) -> None:
    """Batchly edited the notes an hour ago, QuickBooks then edited them, and Batchly just edited the phone: the
    record is newer in Batchly, QuickBooks' notes are the newer notes."""
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="from Batchly")
    _changed_earlier(company, "customer", row["id"], "notes", hours=1)
    with company.qbo.admin.clock_advanced(-1800):
        company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    _app_update(company, s.customers, row["id"], phone="555")

    company.pull()

    after = company.row(s.customers, id=row["id"])
    assert (after["notes"], after["phone"]) == ("from QuickBooks", "555")
    [conflict] = _conflicts(company)
    assert (conflict["field"], conflict["resolution"]) == ("notes", "quickbooks")


def test_a_value_cleared_in_quickbooks_is_cleared_in_batchly(company: Company) -> None:
    ada = company.qbo.customer("Ada", PrimaryPhone={"FreeFormNumber": "555"}, Notes="n")
    company.pull()
    company.act("update_customer", customer_id=ada["Id"], fields={"PrimaryPhone": {"FreeFormNumber": ""}})
    company.pull()
    assert company.row(s.customers, qbo_id=ada["Id"])["phone"] is None
    assert queue(company.engine) == []


def _reviewed_notes(company: Company) -> tuple[dict[str, Any], dict[str, Any]]:
    with company.engine.begin() as conn:
        set_review_fields(conn, company.org, "customer", ["notes"])
    ada = company.qbo.customer("Ada", Notes="base")
    company.pull()
    row = company.row(s.customers, qbo_id=ada["Id"])
    _app_update(company, s.customers, row["id"], notes="from Batchly")
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks"})
    company.pull()
    [review] = open_conflicts(company.engine)
    return ada, review


def test_a_review_field_stored_for_the_organisation_holds_on_the_pull_and_shows_current_values(
    company: Company,
) -> None:
    ada, review = _reviewed_notes(company)
    assert (review["batchly_value"], review["qbo_value"]) == ("from Batchly", "from QuickBooks")
    company.act("update_customer", customer_id=ada["Id"], fields={"Notes": "from QuickBooks, again"})
    company.pull()
    [again] = open_conflicts(company.engine)
    assert again["id"] == review["id"] and again["qbo_value"] == "from QuickBooks, again"
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from Batchly"
    _app_update(company, s.customers, review["entity_id"], notes="from Batchly, again")  # no merge needed
    [shown] = open_conflicts(company.engine)
    assert (shown["batchly_value"], shown["qbo_value"]) == ("from Batchly, again", "from QuickBooks, again")


def test_resolving_applies_what_the_reviewer_saw_or_refuses_because_it_changed(company: Company) -> None:
    ada, review = _reviewed_notes(company)
    seen = {review["id"]: review["revision"]}  # the reviewer looked at this revision
    _app_update(company, s.customers, review["entity_id"], notes="changed after the review was shown")

    with pytest.raises(ValueError, match=r"decision was made on revision"):
        resolve_conflicts(
            company.engine, winner="quickbooks", resolved_by="ana", conflict_ids=list(seen), seen=seen
        )

    [shown] = open_conflicts(company.engine)  # still open, showing the current values as a new revision
    assert (shown["batchly_value"], shown["revision"]) == (
        "changed after the review was shown",
        review["revision"] + 1,
    )
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "changed after the review was shown"
    [done] = resolve_conflicts(
        company.engine,
        winner="batchly",
        resolved_by="ana",
        conflict_ids=[shown["id"]],
        seen={shown["id"]: shown["revision"]},
    )
    assert done.chosen == "changed after the review was shown" and done.to_quickbooks


def test_resolving_refuses_a_review_that_shows_other_values_than_the_records_hold(company: Company) -> None:
    ada, review = _reviewed_notes(company)
    with company.engine.begin() as conn:  # a row behind the record (written before the trigger existed, say)
        conn.execute(
            sa.update(s.sync_conflicts)
            .where(s.sync_conflicts.c.id == review["id"])
            .values(batchly_value="old")
        )

    with pytest.raises(ValueError, match=r"changed since it was shown \(Batchly 'old' → 'from Batchly'\)"):
        resolve_conflicts(company.engine, winner="quickbooks", resolved_by="ana", conflict_ids=[review["id"]])

    [shown] = open_conflicts(company.engine)
    assert (shown["batchly_value"], shown["revision"]) == ("from Batchly", review["revision"] + 1)
    [done] = resolve_conflicts(
        company.engine, winner="quickbooks", resolved_by="ana", conflict_ids=[shown["id"]]
    )
    assert done.chosen == "from QuickBooks"
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from QuickBooks"


def test_review_fields_from_the_command_line_are_stored_for_the_pull_and_the_push(
    connected: Company, capsys: pytest.CaptureFixture[str]
) -> None:
    org = str(connected.org)
    assert main(["pull", "--org", org, "--review-field", "notes"]) == 0
    assert main(["review-fields", "--org", org]) == 0
    assert capsys.readouterr().out.strip().endswith("customer review fields: notes")
    assert main(["review-fields", "--org", org, "--set", "email", "phone"]) == 0
    with connected.engine.connect() as conn:
        assert review_fields(conn, connected.org, "customer") == {"email", "phone"}
    with pytest.raises(SystemExit, match="does not sync balance"):
        main(["review-fields", "--org", org, "--set", "balance"])
    assert main(["review-fields", "--org", org, "--clear"]) == 0
    assert capsys.readouterr().out.strip().endswith("customer review fields: none")


def test_the_first_merge_of_a_link_a_person_chose_honours_the_review_fields(company: Company) -> None:
    with company.engine.begin() as conn:
        set_review_fields(conn, company.org, "customer", ["notes"])
        twins = [
            factories.customer(conn, company.org, "Joe's Garage", notes="ours", email=f"j{n}@a.test")
            for n in (1, 2)
        ]
    joe = company.qbo.customer("Joe's Garage", Notes="theirs", PrimaryEmailAddr={"Address": "other@b.test"})
    company.pull()
    [link] = open_conflicts(company.engine)

    resolve_conflicts(
        company.engine, winner="value", value=twins[0], resolved_by="ana", conflict_ids=[link["id"]]
    )

    assert company.row(s.customers, id=twins[0])["notes"] == "ours"  # left for a person, not newest-wins
    [review] = open_conflicts(company.engine)
    assert (review["field"], review["reason"], review["qbo_id"]) == ("notes", "first_link", joe["Id"])


def test_a_value_batchly_cannot_store_in_a_field_batchly_owns_never_blocks_what_quickbooks_owns(
    company: Company,
) -> None:
    """QuickBooks' description (Batchly's field) holds a NUL character Batchly's column cannot: the price QuickBooks
    changed is still taken, and Batchly's description goes back to QuickBooks."""
    widget = company.qbo.item("Widget", "10.00", Description="Ours")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    company.act(
        "update", entity="Item", id=widget["Id"], fields={"Description": "bad\x00text", "UnitPrice": 12.5}
    )

    result = company.pull()

    assert result.batchly_items.errors == 0
    after = company.row(s.items, id=item["id"])
    assert (after["unit_price"], after["description"]) == (Decimal("12.50"), "Ours")
    assert company.rows(s.pull_errors) == []
    assert _pending_items(company) == [item["id"]]


def test_the_resolve_job_and_the_command_line_refuse_a_decision_on_an_older_revision(
    connected: Company, capsys: pytest.CaptureFixture[str]
) -> None:
    company = connected
    ada, review = _reviewed_notes(company)
    stale = review["revision"]
    _app_update(company, s.customers, review["entity_id"], notes="edited meanwhile")
    with instance_for_test() as instance:
        config = {
            "conflict_ids": [review["id"]],
            "winner": "quickbooks",
            "seen_revisions": {str(review["id"]): stale},
        }
        result = defs.resolve_job_def("resolve_conflicts").execute_in_process(
            instance=instance,
            resources={
                "batchly_db": BatchlyDatabase(
                    database_url=company.engine.url.render_as_string(hide_password=False)
                )
            },
            run_config={"ops": {"resolve_selected_conflicts": {"config": config}}},
            raise_on_error=False,
        )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "decision was made on revision" in str(failure.event_specific_data)
    assert open_conflicts(company.engine)[0]["revision"] == stale + 1

    argv = ["conflicts", "resolve", "--id", str(review["id"]), "--winner", "quickbooks", "--by", "ana"]
    assert main([*argv, "--seen", f"{review['id']}:{stale}"]) == 1
    assert "decision was made on revision" in capsys.readouterr().err
    assert main([*argv, "--seen", f"{review['id']}:{stale + 1}"]) == 0
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from QuickBooks"


def test_reverting_an_owned_field_never_overwrites_an_edit_committed_after_it_was_read(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    widget = company.qbo.item("Widget", "10.00")
    company.pull()
    item = company.row(s.items, qbo_id=widget["Id"])
    _app_update(company, s.items, item["id"], unit_price=Decimal("99.00"))
    decide = owned.owned_reverts  # runs after the rows were read, before they are written

    def edited_meanwhile(*args: Any, **kwargs: Any) -> Any:
        _app_update(company, s.items, item["id"], unit_price=Decimal("77.00"))
        return decide(*args, **kwargs)

    monkeypatch.setattr(owned, "owned_reverts", edited_meanwhile)
    owned.revert_owned_edits(company.engine, ITEMS, company.org)
    assert company.row(s.items, id=item["id"])["unit_price"] == Decimal("77.00")  # not written over
    monkeypatch.setattr(owned, "owned_reverts", decide)
    owned.revert_owned_edits(company.engine, ITEMS, company.org)
    assert company.row(s.items, id=item["id"])["unit_price"] == Decimal("10.00")  # the next pass reverts it


def test_resolving_never_overwrites_an_edit_committed_while_the_decision_is_applied(
    company: Company, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, review = _reviewed_notes(company)
    decide = (
        resolve.resolve_field
    )  # runs after the conflict and the record were read, before anything is written

    def edited_meanwhile(*args: Any, **kwargs: Any) -> Any:
        _app_update(company, s.customers, review["entity_id"], notes="edited meanwhile")
        return decide(*args, **kwargs)

    monkeypatch.setattr(resolve, "resolve_field", edited_meanwhile)
    with pytest.raises(ValueError, match="changed while this decision was applied"):
        resolve_conflicts(
            company.engine, winner="value", value="agreed", resolved_by="ana", conflict_ids=[review["id"]]
        )
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "edited meanwhile"
    [still] = open_conflicts(company.engine)
    assert (still["batchly_value"], still["revision"]) == ("edited meanwhile", review["revision"] + 1)


def test_resolving_with_seen_refuses_a_selected_conflict_the_reviewer_was_never_shown(
    company: Company,
) -> None:
    ada, review = _reviewed_notes(company)
    seen = {review["id"]: review["revision"]}  # what the reviewer looked at
    bob = company.qbo.customer("Bob", Notes="base")  # a second review opens after they looked
    company.pull()
    bob_id = company.row(s.customers, qbo_id=bob["Id"])["id"]
    _app_update(company, s.customers, bob_id, notes="Bob from Batchly")
    company.act("update_customer", customer_id=bob["Id"], fields={"Notes": "Bob from QuickBooks"})
    company.pull()

    with pytest.raises(ValueError, match=r"not shown to the reviewer") as refused:
        resolve_conflicts(
            company.engine,
            winner="quickbooks",
            resolved_by="ana",
            organization_id=company.org,
            field="notes",
            seen=seen,
        )

    assert [done.conflict_id for done in refused.value.resolved] == [review["id"]]  # type: ignore[attr-defined]
    assert company.row(s.customers, qbo_id=ada["Id"])["notes"] == "from QuickBooks"
    assert company.row(s.customers, qbo_id=bob["Id"])["notes"] == "Bob from Batchly"
    [still_open] = open_conflicts(company.engine)
    assert still_open["entity_id"] == bob_id
