"""A minimal QBO client over real HTTP for the sandbox conformance tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests

from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer
from qbo_sandbox.wire import dumps


class Qbo:
    """One realm (a fresh one unless given) and one access token; answers are ``requests.Response`` objects.
    ``admin`` is the sandbox's admin client."""

    def __init__(self, sandbox: SandboxServer, realm_id: str | None = None) -> None:
        self.sandbox = sandbox
        self.admin = SandboxAdmin(sandbox.base_url)
        self.realm_id = realm_id or self.admin.new_realm()
        self.token = self.admin.access_token(self.realm_id)
        self.session = requests.Session()

    @property
    def url(self) -> str:
        return f"{self.sandbox.base_url}/v3/company/{self.realm_id}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def get(self, path: str, **params: str) -> requests.Response:
        return self.session.get(f"{self.url}/{path}", params=params, headers=self.headers(), timeout=10)

    def post(self, path: str, body: Any, **params: str) -> requests.Response:
        headers = {**self.headers(), "Content-Type": "application/json"}
        return self.session.post(
            f"{self.url}/{path}", data=dumps(body), params=params, headers=headers, timeout=10
        )

    def ok(self, response: requests.Response) -> dict[str, Any]:
        """The JSON of a 200 answer, numbers as Decimal."""
        assert response.status_code == 200, response.text
        payload: dict[str, Any] = response.json(parse_float=Decimal)
        return payload

    def query(self, statement: str) -> dict[str, Any]:
        """The ``QueryResponse`` of a GET query."""
        return dict(self.ok(self.get("query", query=statement))["QueryResponse"])

    def create(self, entity: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
        return dict(self.ok(self.post(entity.lower(), body, **params))[entity])

    def read(self, entity: str, obj_id: str) -> dict[str, Any]:
        return dict(self.ok(self.get(f"{entity.lower()}/{obj_id}"))[entity])

    def customer(self, name: str = "Ada O'Lovelace", **fields: Any) -> dict[str, Any]:
        return self.create("Customer", {"DisplayName": name, **fields})

    def item(self, name: str = "Consulting", price: str = "100.00", **fields: Any) -> dict[str, Any]:
        account = self.query("SELECT * FROM Account WHERE AccountType = 'Income'")["Account"][0]
        body = {
            "Name": name,
            "Type": "Service",
            "UnitPrice": Decimal(price),
            "IncomeAccountRef": {"value": account["Id"]},
        }
        return self.create("Item", {**body, **fields})

    def invoice(
        self, customer: dict[str, Any], item: dict[str, Any], *amounts: str, **fields: Any
    ) -> dict[str, Any]:
        lines = [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal(a),
                "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
            }
            for a in amounts or ("100.00",)
        ]
        return self.create("Invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": lines, **fields})

    def payment(self, invoice: dict[str, Any], amount: str, total: str | None = None) -> dict[str, Any]:
        line = {"Amount": Decimal(amount), "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}
        body = {"CustomerRef": invoice["CustomerRef"], "TotalAmt": Decimal(total or amount), "Line": [line]}
        return self.create("Payment", body)


def fault_code(response: requests.Response) -> str:
    """The code of the first error in a Fault envelope."""
    return str(response.json()["Fault"]["Error"][0]["code"])
