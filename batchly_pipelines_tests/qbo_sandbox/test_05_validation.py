"""Checklist 5: uniqueness (6240), references (610), required fields (2020), DocNumber duplicates (6140)."""

from __future__ import annotations

from decimal import Decimal

from batchly_pipelines_tests.support.sandbox_client import Qbo, fault_code


def test_duplicate_display_name_is_6240(qbo: Qbo) -> None:
    qbo.customer("Müller & O'Hara")
    response = qbo.post("customer", {"DisplayName": "müller & o'hara"})
    assert response.status_code == 400 and fault_code(response) == "6240"


def test_inactive_names_still_reserved(qbo: Qbo) -> None:
    customer = qbo.customer("Reserved")
    qbo.create("Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})
    assert fault_code(qbo.post("customer", {"DisplayName": "Reserved"})) == "6240"


def test_duplicate_item_name_is_6240(qbo: Qbo) -> None:
    qbo.item("Bolt")
    account = qbo.query("SELECT * FROM Account WHERE AccountType = 'Income'")["Account"][0]
    response = qbo.post(
        "item", {"Name": "Bolt", "Type": "Service", "IncomeAccountRef": {"value": account["Id"]}}
    )
    assert fault_code(response) == "6240"


def test_unknown_references_are_610(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 1,
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    assert fault_code(qbo.post("invoice", {"CustomerRef": {"value": "9999"}, "Line": [line]})) == "610"
    bad_line = {**line, "SalesItemLineDetail": {"ItemRef": {"value": "9999"}}}
    assert (
        fault_code(qbo.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [bad_line]}))
        == "610"
    )
    payment = {
        "CustomerRef": {"value": customer["Id"]},
        "TotalAmt": 5,
        "Line": [{"Amount": 5, "LinkedTxn": [{"TxnId": "9999", "TxnType": "Invoice"}]}],
    }
    assert fault_code(qbo.post("payment", payment)) == "610"


def test_inactive_reference_is_610(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    qbo.create("Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Active": False})
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 1,
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    assert (
        fault_code(qbo.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [line]})) == "610"
    )


def test_required_fields_are_2020(qbo: Qbo) -> None:
    customer = qbo.customer()
    assert fault_code(qbo.post("customer", {"Notes": "no name"})) == "2020"
    assert fault_code(qbo.post("invoice", {"CustomerRef": {"value": customer["Id"]}})) == "2020"
    assert fault_code(qbo.post("payment", {"CustomerRef": {"value": customer["Id"]}})) == "2020"
    assert fault_code(qbo.post("item", {"Name": "No account", "Type": "Service"})) == "2020"
    assert qbo.post("customer", {"GivenName": "Grace", "FamilyName": "Hopper"}).json()["Customer"][
        "DisplayName"
    ] == ("Grace Hopper")


def test_display_name_rules(qbo: Qbo) -> None:
    assert fault_code(qbo.post("customer", {"DisplayName": "a:b"})) == "6000"
    assert fault_code(qbo.post("customer", {"DisplayName": "x" * 501})) == "2050"


def test_duplicate_doc_number_is_6140_and_configurable(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    first = qbo.invoice(customer, item, DocNumber="INV-1")
    duplicate = qbo.post(
        "invoice",
        {"CustomerRef": {"value": customer["Id"]}, "DocNumber": "INV-1", "Line": first["Line"][:1]},
    )
    assert duplicate.status_code == 400 and fault_code(duplicate) == "6140"
    qbo.admin.settings(qbo.realm_id, unique_doc_numbers=False)
    assert qbo.invoice(customer, item, DocNumber="INV-1")["DocNumber"] == "INV-1"


def test_doc_number_auto_assigned(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    numbers = [qbo.invoice(customer, item)["DocNumber"] for _ in range(2)]
    assert numbers == ["1001", "1002"]


def test_line_amount_must_match_qty_times_price(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("10.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}, "Qty": 3, "UnitPrice": Decimal("3.00")},
    }
    assert (
        fault_code(qbo.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [line]})) == "6070"
    )
    del line["Amount"]
    assert qbo.create("Invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [line]})[
        "TotalAmt"
    ] == Decimal("9.00")


def test_renaming_frees_the_old_name(qbo: Qbo) -> None:
    customer = qbo.customer("Old Name")
    qbo.create(
        "Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "DisplayName": "New Name"}
    )
    assert qbo.customer("Old Name")["DisplayName"] == "Old Name"
    assert fault_code(qbo.post("customer", {"DisplayName": "NEW NAME"})) == "6240"


def test_deleting_an_invoice_frees_its_doc_number(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    invoice = qbo.invoice(customer, item, DocNumber="D-1")
    qbo.ok(qbo.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, operation="delete"))
    assert qbo.invoice(customer, item, DocNumber="D-1")["DocNumber"] == "D-1"


def _line(item: dict, amount: object = None, qty: object = None, price: object = None) -> dict:
    detail: dict[str, object] = {"ItemRef": {"value": item["Id"]}}
    if qty is not None:
        detail["Qty"] = qty
    if price is not None:
        detail["UnitPrice"] = price
    line: dict[str, object] = {"DetailType": "SalesItemLineDetail", "SalesItemLineDetail": detail}
    if amount is not None:
        line["Amount"] = amount
    return line


def test_out_of_range_numbers_are_2050(qbo: Qbo) -> None:
    customer, item = qbo.customer(), qbo.item()
    ref = {"value": customer["Id"]}
    for line in (
        _line(item, qty=Decimal("1e30"), price=1),
        _line(item, qty=Decimal("1e7"), price=Decimal("1e7")),
        _line(item, amount=Decimal("1e13")),
        _line(item, amount=Decimal("-1e13")),
    ):
        response = qbo.post("invoice", {"CustomerRef": ref, "Line": [line]})
        assert response.status_code == 400, response.text
        assert response.json()["Fault"]["type"] == "ValidationFault" and fault_code(response) == "2050"
    assert fault_code(qbo.post("item", {**item, "sparse": True, "UnitPrice": Decimal("1e13")})) == "2050"
    payment = {"CustomerRef": ref, "TotalAmt": Decimal("1e300")}
    assert fault_code(qbo.post("payment", payment)) == "2050"
    largest = qbo.create(
        "Invoice", {"CustomerRef": ref, "Line": [_line(item, amount=Decimal("999999999999.99"))]}
    )
    assert largest["TotalAmt"] == Decimal("999999999999.99")
    assert qbo.query("SELECT COUNT(*) FROM Invoice")["totalCount"] == 1


def test_malformed_bodies_are_400_validation_faults(qbo: Qbo) -> None:
    headers = {**qbo.headers(), "Content-Type": "application/json"}
    for path, body in (
        ("customer", b'{"DisplayName": "Half'),
        ("customer", b'{"DisplayName": NaN}'),
        ("customer", b"[" * 100_000),
        ("customer", b"\xff\xfe"),
        ("batch", b'{"BatchItemRequest": [Infinity]}'),
        ("query", b"SELECT * FROM Customer \xff"),
    ):
        response = qbo.session.post(f"{qbo.url}/{path}", data=body, headers=headers, timeout=10)
        assert response.status_code == 400, (path, body[:30], response.text)
        assert response.json()["Fault"]["type"] == "ValidationFault"
    assert qbo.query("SELECT COUNT(*) FROM Customer")["totalCount"] == 0
