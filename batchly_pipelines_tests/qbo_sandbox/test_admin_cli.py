"""The admin API (accountant actions, counters, seeding), state persistence and the CLI."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox import admin as admin_api
from qbo_sandbox import admin_client
from qbo_sandbox.admin_client import SandboxAdmin, SandboxAdminError
from qbo_sandbox.cli import build_parser
from qbo_sandbox.seed import DEMO_REALM_ID
from qbo_sandbox.server import SandboxConfig, SandboxServer


def _action(qbo: Qbo, action: str, **fields: object) -> dict:
    return qbo.admin.action(qbo.realm_id, action, **fields)


def test_accountant_actions(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item(price="10.00")
    invoice = qbo.invoice(customer, item, "90.00")
    assert _action(qbo, "set_item_price", item_id=item["Id"], unit_price="12.5")["Item"]["UnitPrice"] == 12.5
    paid = _action(qbo, "record_payment", invoice_id=invoice["Id"], amount="40")["Payment"]
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("50.00")
    _action(qbo, "delete_payment", payment_id=paid["Id"])
    assert qbo.read("Invoice", invoice["Id"])["Balance"] == Decimal("90.00")
    full = _action(qbo, "record_payment", invoice_id=invoice["Id"])["Payment"]
    assert full["TotalAmt"] == 90
    _action(qbo, "void_payment", payment_id=full["Id"])
    assert _action(qbo, "void_invoice", invoice_id=invoice["Id"])["Invoice"]["TotalAmt"] == 0
    renamed = _action(qbo, "update_customer", customer_id=customer["Id"], fields={"Notes": "called"})
    assert renamed["Customer"]["Notes"] == "called" and renamed["Customer"]["SyncToken"] == "1"
    _action(qbo, "deactivate", entity="Item", id=item["Id"])
    assert qbo.query("SELECT COUNT(*) FROM Item")["totalCount"] == 0


def test_failed_action_answers_the_fault(qbo: Qbo) -> None:
    with pytest.raises(SandboxAdminError) as fault:
        _action(qbo, "void_invoice", invoice_id="404")
    assert fault.value.status == 400 and fault.value.fault_code == "610"
    with pytest.raises(SandboxAdminError) as unknown:
        _action(qbo, "dance")
    assert unknown.value.status == 400 and "dance" in unknown.value.body["error"]


def test_counters_and_reset(qbo: Qbo) -> None:
    qbo.customer("Counted")
    qbo.get("companyinfo/" + qbo.realm_id)
    mine = qbo.admin.counters()["realms"][qbo.realm_id]
    assert mine["requests"]["POST customer"] == 1 and mine["requests"]["GET companyinfo"] == 1
    assert mine["writes_applied"] == 1 and mine["requests_total"] >= 2
    assert qbo.admin.counter(qbo.realm_id, "writes_applied") == 1
    assert qbo.admin.counter(qbo.realm_id, "never_counted") == 0
    qbo.admin.reset_counters()
    assert qbo.realm_id not in qbo.admin.counters()["realms"]


def test_the_admin_client_speaks_to_the_admin_api_prefix() -> None:
    assert admin_client.PREFIX == admin_api.PREFIX


def test_create_realm_with_id_and_name(sandbox: SandboxServer) -> None:
    admin = SandboxAdmin(sandbox.base_url)
    assert admin.new_realm("Crème & Co", realm_id="4242") == "4242"
    assert {"realm_id": "4242", "company_name": "Crème & Co"} in admin.realms()["realms"]
    assert Qbo(sandbox, "4242").read("CompanyInfo", "4242")["CompanyName"] == "Crème & Co"
    with pytest.raises(SandboxAdminError) as taken:
        admin.new_realm(realm_id="4242")
    assert taken.value.status == 409


def test_seed_is_deterministic_and_realistic(sandbox: SandboxServer) -> None:
    plan = {"customers": 12, "items": 5, "invoices": 30, "payments": 20, "seed": 9, "days": 20}
    snapshots = []
    for _ in range(2):
        qbo = Qbo(sandbox)
        qbo.admin.seed(qbo.realm_id, **plan)
        names = sorted(
            c["DisplayName"] for c in qbo.query("SELECT * FROM Customer MAXRESULTS 1000")["Customer"]
        )
        totals = [
            i["TotalAmt"]
            for i in qbo.query("SELECT * FROM Invoice ORDERBY DocNumber MAXRESULTS 1000")["Invoice"]
        ]
        snapshots.append((names, totals, qbo))
    assert snapshots[0][:2] == snapshots[1][:2]
    names, _, qbo = snapshots[0]
    assert any("'" in name for name in names) and any(not name.isascii() for name in names)
    invoices = qbo.query("SELECT * FROM Invoice MAXRESULTS 1000")["Invoice"]
    assert {"paid", "partial", "open"} <= {
        "paid" if i["Balance"] == 0 else "open" if i["Balance"] == i["TotalAmt"] else "partial"
        for i in invoices
    }
    assert qbo.query("SELECT COUNT(*) FROM RefundReceipt")["totalCount"] >= 1
    payments = qbo.query("SELECT * FROM Payment MAXRESULTS 1000")["Payment"]
    assert any(p["PrivateNote"].startswith("Voided") for p in payments if "PrivateNote" in p)
    assert len(payments) < plan["payments"], "some payments were deleted"
    times = sorted(
        c["MetaData"]["LastUpdatedTime"]
        for c in qbo.query("SELECT * FROM Invoice MAXRESULTS 1000")["Invoice"]
    )
    assert times[0][:10] != times[-1][:10], "spread over several days"


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.json"
    config = SandboxConfig(throttle=False, state_file=state_file, seed_demo=True)
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox, DEMO_REALM_ID)
        customer = qbo.customer("Persistent Péter")
        tokens = qbo.admin.tokens(DEMO_REALM_ID)
        invoices = qbo.query("SELECT COUNT(*) FROM Invoice")["totalCount"]
    assert state_file.exists()
    with SandboxServer(config) as sandbox:
        qbo = Qbo(sandbox, DEMO_REALM_ID)
        assert qbo.read("Customer", customer["Id"])["DisplayName"] == "Persistent Péter"
        assert qbo.query("SELECT COUNT(*) FROM Invoice")["totalCount"] == invoices == 60
        qbo.token = tokens["access_token"]
        assert qbo.get("companyinfo/" + DEMO_REALM_ID).status_code == 200, "tokens persist too"
        payment = qbo.query("SELECT * FROM Payment MAXRESULTS 1")["Payment"][0]
        linked = payment["Line"][0]["LinkedTxn"][0]["TxnId"]
        before = qbo.read("Invoice", linked)["Balance"]
        qbo.ok(
            qbo.post("payment", {"Id": payment["Id"], "SyncToken": payment["SyncToken"]}, operation="delete")
        )
        assert qbo.read("Invoice", linked)["Balance"] == before + payment["Line"][0]["Amount"], (
            "payment index rebuilt"
        )


def test_cli_parser_defaults() -> None:
    args = build_parser().parse_args(["serve", "--no-throttle", "--time-scale", "60"])
    assert args.port == 8765 and args.client_id == "batchly-local-client" and args.time_scale == 60.0
    assert args.no_throttle and args.webhook_format == "legacy"


def test_cli_serves_and_prints_the_demo_realm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "qbo_sandbox.cli", "serve", "--port", "0", "--seed-demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("qbo-sandbox listening on http://127.0.0.1:")
        base_url = first.split()[-1]
        lines = [process.stdout.readline() for _ in range(3)]
        assert any(DEMO_REALM_ID in line for line in lines)
        discovery = requests.get(f"{base_url}/.well-known/openid_configuration", timeout=10)
        assert discovery.json()["token_endpoint"].startswith(base_url)
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
