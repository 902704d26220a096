"""Parsing deliveries of both formats (as the sandbox's emitter writes them), signatures, and per-realm requests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from batchly_pipelines.services.webhooks.changes import pull_requests
from batchly_pipelines.services.webhooks.events import BadDelivery, WebhookEvent, parse_delivery
from batchly_pipelines.services.webhooks.signature import sign, signature_valid
from batchly_pipelines_tests.support.webhooks import MOMENT, VERIFIER, change, cloudevents, legacy


def test_a_legacy_delivery_names_realm_entity_id_operation_and_time() -> None:
    body = legacy(change("111", "Customer", "7", "Update"), change("222", "Invoice", "9", "Delete"))
    first, second = parse_delivery(body)
    assert (first.realm_id, first.entity_type, first.entity_id, first.operation) == (
        "111",
        "Customer",
        "7",
        "Update",
    )
    assert (second.realm_id, second.entity_type, second.entity_id, second.operation) == (
        "222",
        "Invoice",
        "9",
        "Delete",
    )
    assert first.event_time == MOMENT.replace(microsecond=250000)  # "…15.250Z"
    assert first.event_id.startswith("legacy:") and first.event_id != second.event_id


def test_a_legacy_change_has_the_same_id_in_every_delivery_of_it() -> None:
    [once] = parse_delivery(legacy(change("111", "Customer", "7")))
    [again] = parse_delivery(legacy(change("111", "Customer", "7"), change("111", "Item", "3")))[:1]
    [later] = parse_delivery(legacy(change("111", "Customer", "7", at=MOMENT + timedelta(seconds=1))))
    assert once.event_id == again.event_id != later.event_id


def test_cloudevents_map_type_to_entity_and_operation_and_keep_their_ids() -> None:
    changes = [
        change("111", "Customer", "7", "Create"),
        change("222", "Payment", "5", "Delete"),
        change("111", "Invoice", "9", "Void"),
        change("333", "Customer", "8", "Merge"),
    ]
    body = cloudevents(*changes)
    events = parse_delivery(body)
    assert [(e.realm_id, e.entity_type, e.entity_id, e.operation) for e in events] == [
        ("111", "Customer", "7", "Create"),
        ("222", "Payment", "5", "Delete"),
        ("111", "Invoice", "9", "Void"),
        ("333", "Customer", "8", "Merge"),
    ]
    assert [e.event_id for e in events] == [item["id"] for item in json.loads(body)]
    assert all(e.event_time == MOMENT for e in events)


def test_a_cloudevent_of_an_entity_the_sync_does_not_read_is_kept_as_named() -> None:
    [event] = parse_delivery(cloudevents(change("111", "Vendor", "4", "Update")))
    assert (event.entity_type, event.operation) == ("vendor", "Update")


def test_an_empty_delivery_has_no_events() -> None:
    assert parse_delivery(b"[]") == []
    assert parse_delivery(b'{"eventNotifications": []}') == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'"a string"',
        b'{"something": "else"}',
        b'{"eventNotifications": {"realmId": "1"}}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Customer"}]}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [{"name": "Customer", '
        b'"id": "1", "operation": "Update", "lastUpdated": "yesterday"}]}}]}',
        b'[{"specversion": "0.3", "id": "a", "type": "qbo.customer.updated.v1", "intuitentityid": "1", '
        b'"intuitaccountid": "2"}]',
        b'[{"specversion": "1.0", "id": "a", "type": "customer-updated", "intuitentityid": "1", '
        b'"intuitaccountid": "2"}]',
        b'[{"specversion": "1.0", "id": "a", "type": "qbo.customer.updated.v1", "intuitentityid": "1"}]',
        b'[{"specversion": "1.0", "id": "", "type": "qbo.customer.updated.v1", "intuitentityid": "1", '
        b'"intuitaccountid": "2"}]',
        b'[{"specversion": "1.0", "id": "a", "type": "qbo.customer.updated.v1", "intuitentityid": "'
        + b"9" * 33
        + b'", "intuitaccountid": "2"}]',
        b"[1, 2]",
    ],
)
def test_a_body_of_neither_format_is_refused(body: bytes) -> None:
    with pytest.raises(BadDelivery):
        parse_delivery(body)


def test_one_malformed_event_refuses_the_whole_delivery() -> None:
    good = json.loads(cloudevents(change("111", "Customer", "7")))
    bad = {**good[0], "id": "other", "intuitaccountid": None}
    with pytest.raises(BadDelivery, match=r"\[1\]\.intuitaccountid"):
        parse_delivery(json.dumps([*good, bad]).encode())


def test_the_signature_is_the_base64_hmac_of_the_raw_body() -> None:
    body = legacy(change("111", "Customer", "7"))
    header = sign(VERIFIER, body)
    assert signature_valid(VERIFIER, body, header)
    assert not signature_valid(VERIFIER, body + b" ", header)  # one byte more
    assert not signature_valid("another-token", body, header)
    assert not signature_valid(VERIFIER, body, None) and not signature_valid(VERIFIER, body, "")
    assert not signature_valid(VERIFIER, body, "é" + header[1:])  # not even ASCII: refused, no error


def test_mixed_realm_events_make_one_request_per_realm_each_object_once() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    events = [
        WebhookEvent("a", "111", "Customer", "7", "Update", at),
        WebhookEvent("b", "222", "Invoice", "9", "Delete", at),
        WebhookEvent("c", "111", "Customer", "7", "Update", at + timedelta(seconds=5)),
        WebhookEvent("d", "111", "Payment", "5", "Delete", at + timedelta(seconds=3)),
        WebhookEvent("e", "111", "Payment", "5", "Delete", at + timedelta(seconds=2)),
        WebhookEvent("f", "111", "Vendor", "4", "Update", at),
    ]
    requests = pull_requests(events)
    assert set(requests) == {"111", "222"}
    assert requests["111"].events == 5 and requests["222"].events == 1
    assert requests["111"].ids("Customer") == {"7"} and requests["111"].removed("Customer") == {}
    assert requests["111"].removed("Payment") == {"5": at + timedelta(seconds=3)}
    assert requests["222"].removed("Invoice") == {"9": at}
    assert "Vendor" not in requests["111"].entities
