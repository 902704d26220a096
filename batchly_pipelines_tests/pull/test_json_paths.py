"""The fast JSON paths of an import read and write what ``json`` does: answers with exact decimals, the mirror's JSON
column text with Decimals by the column rule, the mirror read back as the driver's ``json.loads`` reads it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from batchly_pipelines.quickbooks.wire import decode_answer
from batchly_pipelines.services.pull.mirror import store_objects
from batchly_pipelines.store.db import dumps_json
from batchly_pipelines.store.mirror import mirror_rows
from batchly_pipelines.store.upsert import COPY_FROM_ROWS, _copy_json
from batchly_pipelines_tests.support import factories

ANSWER = (
    b'{"QueryResponse": {"Customer": [{"Id": "1", "Balance": 10.10, "Big": 12345678901234567890.12, "N": 7,'
    b' "E": 1e5, "Name": "caf\\u00e9 \\u0000 x"}]}, "time": "2026-12-03T10:00:00-08:00"}'
)


def test_answers_are_decoded_with_exact_decimals_as_json_does() -> None:
    decoded = decode_answer(ANSWER)
    assert decoded == json.loads(ANSWER, parse_float=Decimal)
    customer = decoded["QueryResponse"]["Customer"][0]
    assert customer["Balance"] == Decimal("10.10") and str(customer["Balance"]) == "10.10"
    assert customer["Big"] == Decimal("12345678901234567890.12") and customer["N"] == 7


def test_an_unpaired_surrogate_in_an_answer_is_read_as_json_reads_it() -> None:
    body = b'{"Id": "1", "DisplayName": "a\\ud800b", "Balance": 1.5}'
    assert decode_answer(body) == {"Id": "1", "DisplayName": "a\ud800b", "Balance": Decimal("1.5")}
    with pytest.raises(ValueError):
        decode_answer(b"<html>busy</html>")


@pytest.mark.parametrize(
    "value",
    [
        {"a": Decimal("10.10"), "b": Decimal("12345678901234567890.12"), "t": "x\ty\\z\n\r", "u": "é\x00"},
        {"s": "a\ud800"},  # orjson refuses it: written by json
        {"n": 2**70, "l": [1, None, True, 1.5]},
    ],
)
def test_copy_json_writes_what_dumps_json_writes(value: dict[str, Any]) -> None:
    text = _copy_json(value)
    assert json.loads(text.replace("\\\\", "\\")) == json.loads(dumps_json(value))


def test_mirror_rows_read_back_as_the_driver_reads_json(engine: Engine) -> None:
    objects = [
        {
            "Id": str(n),
            "SyncToken": "0",
            "Balance": Decimal("1250.10"),
            "Huge": Decimal("12345678901234567890.12"),
            "DisplayName": f"Ad\u00e9 {n}",
            "MetaData": {"LastUpdatedTime": "2026-11-01T10:00:00-08:00"},
        }
        for n in range(COPY_FROM_ROWS + 1)
    ]
    with engine.begin() as conn:
        org = factories.organization(conn)
        store_objects(conn, org, "Customer", objects)
    with engine.connect() as conn:
        rows = mirror_rows(conn, org, "Customer", [str(n) for n in range(COPY_FROM_ROWS + 1)])
        by_driver = dict(
            conn.execute(
                sa.select(sa.column("qbo_id"), sa.column("data")).select_from(sa.table("qbo_mirror"))
            ).all()
        )
    assert len(rows) == COPY_FROM_ROWS + 1
    for row in rows:
        data = by_driver[row["qbo_id"]]
        parsed = json.loads(data) if isinstance(data, str) else data
        assert row["data"] == parsed
        assert row["data"]["Balance"] == 1250.1 and row["data"]["Huge"] == "12345678901234567890.12"
