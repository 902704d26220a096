"""Checklist 2: ``time`` in every envelope, ``intuit_tid``, string Id/SyncToken, MetaData second precision."""

from __future__ import annotations

import re

from batchly_pipelines_tests.support.sandbox_client import Qbo

SECOND_PRECISION_PACIFIC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$")
MILLIS_PACIFIC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00$")


def test_entity_envelope(qbo: Qbo) -> None:
    response = qbo.post("customer", {"DisplayName": "Envelope Ltd"})
    body = qbo.ok(response)
    assert MILLIS_PACIFIC.match(body["time"])
    assert response.headers["intuit_tid"]
    customer = body["Customer"]
    assert customer["Id"].isdigit() and customer["SyncToken"] == "0"
    assert customer["domain"] == "QBO" and customer["sparse"] is False
    assert SECOND_PRECISION_PACIFIC.match(customer["MetaData"]["CreateTime"])
    assert SECOND_PRECISION_PACIFIC.match(customer["MetaData"]["LastUpdatedTime"])


def test_time_and_tid_on_errors_and_queries(qbo: Qbo) -> None:
    error = qbo.get("customer/99999")
    assert error.status_code == 400 and MILLIS_PACIFIC.match(error.json()["time"])
    assert error.headers["intuit_tid"]
    query = qbo.get("query", query="SELECT * FROM Customer")
    assert MILLIS_PACIFIC.match(query.json()["time"]) and query.headers["intuit_tid"]


def test_unknown_id_is_610(qbo: Qbo) -> None:
    response = qbo.get("invoice/424242")
    assert response.status_code == 400
    assert response.json()["Fault"]["Error"][0]["code"] == "610"
    assert response.json()["Fault"]["type"] == "ValidationFault"
