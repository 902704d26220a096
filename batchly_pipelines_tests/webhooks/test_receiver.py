"""The receiver: signatures, bodies, replays and duplicates, unknown realms, its 3-second answer — over ASGI, and for
real behind uvicorn with the sandbox delivering."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import requests
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from batchly_pipelines.services.webhooks.events import WebhookEvent
from batchly_pipelines.services.webhooks.intake import NOT_SYNCED, UNKNOWN_REALM, Intake
from batchly_pipelines.services.webhooks.receiver import create_app
from batchly_pipelines.services.webhooks.server import ReceiverServer
from batchly_pipelines.services.webhooks.signature import sign
from batchly_pipelines_tests.support import factories
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.sandbox_client import Qbo
from batchly_pipelines_tests.support.webhooks import (
    VERIFIER,
    change,
    cloudevents,
    connect,
    inbox,
    legacy,
    post,
    statuses,
    wait_until,
)
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer


def test_a_forged_signature_is_refused_and_nothing_is_stored(
    app: Starlette, engine: Engine, company: Company
) -> None:
    body = cloudevents(change(company.qbo.realm_id, "Customer", "1"))
    assert post(app, body, signature=sign("a-guessed-token", body)).status == 401
    assert post(app, body, signature="").status == 401  # no signature at all
    assert post(app, body, signature="bm90IGEgc2lnbmF0dXJl").status == 401  # base64, but of nothing
    assert inbox(engine) == []
    assert post(app, body).status == 200  # the same body, signed with the verifier token
    assert len(inbox(engine)) == 1


def test_a_tampered_body_is_refused_and_nothing_is_stored(
    app: Starlette, engine: Engine, company: Company
) -> None:
    body = legacy(change(company.qbo.realm_id, "Invoice", "12", "Update"))
    signature = sign(VERIFIER, body)
    tampered = body.replace(b'"12"', b'"13"')
    assert tampered != body
    answer = post(app, tampered, signature=signature)
    assert answer.status == 401 and "signature" in answer.body["error"]
    assert post(app, body + b"\n", signature=signature).status == 401  # even a byte of whitespace
    assert inbox(engine) == []


def test_a_replayed_delivery_is_stored_once(app: Starlette, engine: Engine, company: Company) -> None:
    body = cloudevents(
        change(company.qbo.realm_id, "Customer", "1"), change(company.qbo.realm_id, "Payment", "2", "Delete")
    )
    first, replay = post(app, body), post(app, body)
    assert (first.status, first.body["stored"], first.body["duplicates"]) == (200, 2, 0)
    assert (replay.status, replay.body["stored"], replay.body["duplicates"]) == (200, 0, 2)
    assert statuses(inbox(engine)) == ["pending", "pending"]


def test_a_duplicate_event_in_another_delivery_is_stored_once(
    app: Starlette, engine: Engine, company: Company
) -> None:
    realm = company.qbo.realm_id
    [event] = json.loads(cloudevents(change(realm, "Customer", "1")))
    [other] = json.loads(cloudevents(change(realm, "Item", "3")))
    assert post(app, json.dumps([event]).encode()).body["stored"] == 1
    answer = post(app, json.dumps([other, event, event]).encode())  # resent beside a new one, even twice
    assert (answer.body["stored"], answer.body["duplicates"]) == (1, 2)
    # the legacy format has no ids: the same change notified twice is the same event
    assert post(app, legacy(change(realm, "Invoice", "9"))).body["stored"] == 1
    assert (
        post(app, legacy(change(realm, "Invoice", "9"), change(realm, "Invoice", "10"))).body["stored"] == 1
    )
    rows = inbox(engine)
    assert [(r["entity_type"], r["entity_id"]) for r in rows] == [
        ("Customer", "1"),
        ("Item", "3"),
        ("Invoice", "9"),
        ("Invoice", "10"),
    ]


def test_events_of_an_unknown_realm_are_recorded_and_ignored(
    app: Starlette, engine: Engine, company: Company
) -> None:
    body = cloudevents(change("9999999999", "Customer", "1"), change(company.qbo.realm_id, "Vendor", "4"))
    answer = post(app, body)
    assert (answer.status, answer.body["stored"], answer.body["ignored"]) == (200, 0, 2)
    unknown, vendor = inbox(engine)
    assert (unknown["realm_id"], unknown["status"], unknown["note"]) == (
        "9999999999",
        "ignored",
        UNKNOWN_REALM,
    )
    assert (vendor["status"], vendor["note"]) == ("ignored", NOT_SYNCED)
    assert unknown["processed_at"] is not None


def test_a_legacy_delivery_is_stored_with_what_it_says(
    app: Starlette, engine: Engine, company: Company
) -> None:
    realm = company.qbo.realm_id
    answer = post(
        app, legacy(change(realm, "Customer", "1", "Create"), change(realm, "Payment", "8", "Void"))
    )
    assert answer.status == 200 and answer.body["realms"] == [realm]
    rows = inbox(engine)
    assert [(r["realm_id"], r["entity_type"], r["entity_id"], r["operation"], r["status"]) for r in rows] == [
        (realm, "Customer", "1", "Create", "pending"),
        (realm, "Payment", "8", "Void", "pending"),
    ]
    assert all(
        r["event_time"] is not None and r["received_at"] is not None and r["run_id"] is None for r in rows
    )


def test_a_mixed_realm_cloudevents_delivery_is_stored_per_realm(
    app: Starlette, engine: Engine, company: Company, sandbox: SandboxServer, secret_key: str
) -> None:
    other = Qbo(sandbox)
    with engine.begin() as conn:
        second_org = factories.organization(conn, name="Second Ltd")
    connect(engine, second_org, other.realm_id, sandbox.base_url, secret_key)
    realm = company.qbo.realm_id
    body = cloudevents(
        change(realm, "Customer", "1"), change(other.realm_id, "Item", "2"), change(realm, "Item", "3")
    )
    answer = post(app, body)
    assert answer.body["realms"] == sorted([realm, other.realm_id]) and answer.body["stored"] == 3
    assert [(r["realm_id"], r["entity_id"]) for r in inbox(engine)] == [
        (realm, "1"),
        (other.realm_id, "2"),
        (realm, "3"),
    ]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"eventNotifications": "none"}', b'[{"specversion": "1.0"}]', b"{}"],
)
def test_a_signed_body_of_neither_format_gets_400_and_changes_nothing(
    app: Starlette, engine: Engine, body: bytes
) -> None:
    answer = post(app, body)
    assert answer.status == 400 and answer.body["error"]
    assert inbox(engine) == []


def test_one_bad_event_refuses_the_whole_delivery(app: Starlette, engine: Engine, company: Company) -> None:
    good = json.loads(cloudevents(change(company.qbo.realm_id, "Customer", "1")))
    bad = {**good[0], "id": "another", "type": "not-a-type"}
    assert post(app, json.dumps([*good, bad]).encode()).status == 400
    assert inbox(engine) == []


def test_a_body_over_the_limit_gets_413(engine: Engine) -> None:
    app = create_app(engine, VERIFIER, max_body_bytes=100)
    assert post(app, b"[" + b" " * 200 + b"]").status == 413
    assert inbox(engine) == []


def test_a_store_that_cannot_commit_in_time_gets_503_within_the_budget(engine: Engine) -> None:
    release, entered = threading.Event(), threading.Event()

    def stuck(events: Sequence[WebhookEvent]) -> Intake:
        entered.set()
        release.wait(10)
        return Intake()

    app = create_app(engine, VERIFIER, answer_within=0.2, store=stuck)
    started = time.monotonic()
    try:
        answer = post(app, cloudevents(change("1", "Customer", "1")))
    finally:
        release.set()
    assert entered.is_set() and answer.status == 503
    assert (
        time.monotonic() - started < 2.0
    )  # Intuit waits 3 s; it delivers again (and the retry is de-duplicated)


def test_a_failing_store_gets_503(engine: Engine) -> None:
    def broken(events: Sequence[WebhookEvent]) -> Intake:
        raise RuntimeError("database down")

    answer = post(create_app(engine, VERIFIER, store=broken), cloudevents(change("1", "Customer", "1")))
    assert answer.status == 503 and "deliver again" in answer.body["error"]


def test_health_and_methods(app: Starlette) -> None:
    assert post(app, b"", method="GET", path="/healthz").status == 200
    assert post(app, b"", method="GET").status == 405


def _deliveries(admin: SandboxAdmin) -> dict[str, Any]:
    return dict(admin.counters()["global"])


@pytest.mark.parametrize("webhook_format", ["legacy", "cloudevents"])
def test_the_sandbox_delivers_to_the_running_receiver_within_its_timeout(
    engine: Engine, secret_key: str, webhook_format: str
) -> None:
    receiver = ReceiverServer(create_app(engine, VERIFIER), log_level="warning")
    config = SandboxConfig(
        port=0,
        throttle=False,
        time_scale=100.0,
        webhook_url=receiver.url,
        webhook_verifier=VERIFIER,
        webhook_format=webhook_format,
    )
    with SandboxServer(config) as sandbox, receiver.running():
        qbo = Qbo(sandbox)
        with engine.begin() as conn:
            org = factories.organization(conn)
        connect(engine, org, qbo.realm_id, sandbox.base_url, secret_key)
        customer = qbo.customer("Hooked")
        wait_until(lambda: inbox(engine) and _deliveries(qbo.admin).get("webhook_deliveries"))
        assert requests.get(receiver.url.replace("/webhooks/quickbooks", "/healthz"), timeout=5).ok
        counters = _deliveries(qbo.admin)
    [row] = inbox(engine)
    assert (row["realm_id"], row["entity_type"], row["entity_id"], row["operation"], row["status"]) == (
        qbo.realm_id,
        "Customer",
        customer["Id"],
        "Create",
        "pending",
    )
    # the sandbox gives up after 3 s (Intuit's limit) and counts that as a failure
    assert counters.get("webhook_deliveries") == 1 and not counters.get("webhook_failures")
