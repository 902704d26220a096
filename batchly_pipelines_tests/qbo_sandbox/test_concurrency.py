"""Many parallel clients on one realm: the per-realm lock keeps amounts and uniqueness consistent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.wire import dumps


def test_parallel_payments_never_overpay(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, "25.00")
    line = {"Amount": Decimal("1.00"), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
    body = dumps({"CustomerRef": invoice["CustomerRef"], "TotalAmt": Decimal("1.00"), "Line": [line]})
    headers = {**qbo.headers(), "Content-Type": "application/json"}

    def pay(_: int) -> int:
        return requests.post(f"{qbo.url}/payment", data=body, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(pay, range(40)))
    assert statuses.count(200) == 25 and statuses.count(400) == 15
    final = qbo.read("Invoice", invoice["Id"])
    assert final["Balance"] == 0 and len(final["LinkedTxn"]) == 25
    assert qbo.read("Customer", customer["Id"])["Balance"] == 0


def test_parallel_creates_of_one_name_yield_one_customer(qbo: Qbo) -> None:
    body = dumps({"DisplayName": "Race Condition Ltd"})
    headers = {**qbo.headers(), "Content-Type": "application/json"}

    def create(_: int) -> int:
        return requests.post(f"{qbo.url}/customer", data=body, headers=headers, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(16)))
    assert statuses.count(200) == 1 and statuses.count(400) == 15
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 1
