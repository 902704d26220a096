"""Conformance: the sandbox driven by clients other people wrote — Intuit's ``intuit-oauth`` (``AuthClient``) and
``python-quickbooks`` — unchanged, as moto is tested with boto3.

Both are configured only through their public options: ``AuthClient``'s ``environment`` takes a discovery document
URL (every endpoint then comes from the sandbox's ``/.well-known/openid_sandbox_configuration``), and a
``QuickBooks`` client is pointed at the sandbox through its ``sandbox`` flag and ``sandbox_api_url_v3``. oauthlib,
under python-quickbooks' session, refuses plain HTTP unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set (its documented
switch for local servers); the sandbox has no TLS.

What it covers: discovery, the authorization-code exchange, refresh rotation and single use, revocation, the OpenID
ID token (validated by intuit-oauth against the sandbox's JWKS) and userinfo; customer create / read / filter /
choose / sparse and full update, stale SyncToken, unknown-id and duplicate-name faults as the library's exceptions;
``requestid`` replay; COUNT and paging; the library's own invoice shape (empty ``TxnDate``/``DueDate``, Amount-only lines) created, queried by
``CustomerRef``, paid, voided and deleted; a batch of 30 creates and one with per-item faults; CDC with a deletion.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError
from intuitlib.utils import validate_id_token
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import AuthorizationException, ObjectNotFoundException, QuickbooksException
from quickbooks.objects.account import Account
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.payment import Payment, PaymentLine

from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.clock import PACIFIC
from qbo_sandbox.server import SandboxServer

REDIRECT_URI = "http://localhost:8080/callback"
ACCOUNTING = [Scopes.ACCOUNTING]


@pytest.fixture(autouse=True)
def _plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """oauthlib's switch for OAuth over http:// (the sandbox serves no TLS)."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def _auth_client(sandbox: SandboxServer, document: str = "openid_sandbox_configuration") -> AuthClient:
    """An AuthClient whose ``environment`` is the sandbox's discovery URL (Intuit's own end with a slash)."""
    return AuthClient(
        sandbox.config.client_id,
        sandbox.config.client_secret,
        REDIRECT_URI,
        f"{sandbox.base_url}/.well-known/{document}/",
    )


def _consent(auth: AuthClient, scopes: list[Scopes], realm_id: str) -> dict[str, str]:
    """What the browser does: open the authorization URL (choosing the company), follow nothing, read the callback."""
    url = auth.get_authorization_url(scopes) + f"&realmId={realm_id}"
    response = requests.get(url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    callback = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
    assert callback["state"] == auth.state_token and callback["realmId"] == realm_id
    return callback


def _connect(sandbox: SandboxServer, scopes: list[Scopes] = ACCOUNTING) -> AuthClient:
    """A fresh company, consented to and exchanged for tokens by intuit-oauth."""
    auth = _auth_client(sandbox)
    callback = _consent(auth, scopes, SandboxAdmin(sandbox.base_url).new_realm("Conformance Co"))
    auth.get_bearer_token(callback["code"], realm_id=callback["realmId"])
    return auth


def _quickbooks(sandbox: SandboxServer, auth: AuthClient) -> QuickBooks:
    """A python-quickbooks client on intuit-oauth's tokens, pointed at the sandbox."""
    qb = QuickBooks(
        auth_client=auth,
        refresh_token=auth.refresh_token,
        company_id=auth.realm_id,
        minorversion=75,
        use_decimal=True,
    )
    qb.sandbox = True
    qb.sandbox_api_url_v3 = f"{sandbox.base_url}/v3"
    return qb


@pytest.fixture
def qb(sandbox: SandboxServer) -> Iterator[QuickBooks]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the libraries' own datetime.utcnow()
        yield _quickbooks(sandbox, _connect(sandbox))


def _customer(qb: QuickBooks, name: str, **fields: Any) -> Customer:
    customer = Customer()
    customer.DisplayName = name
    for key, value in fields.items():
        setattr(customer, key, value)
    return customer.save(qb=qb)


def _service_item(qb: QuickBooks, name: str = "Consulting", price: str = "100.00") -> Item:
    [income, *_] = Account.where("AccountType = 'Income'", qb=qb)
    item = Item()
    item.Name, item.Type, item.UnitPrice = name, "Service", Decimal(price)
    item.IncomeAccountRef = income.to_ref()
    return item.save(qb=qb)


def _line(item: Item, amount: str, qty: int | None = None, price: str | None = None) -> SalesItemLine:
    """A sales line as python-quickbooks' README builds it: an Amount, the item, Qty and UnitPrice left at 0."""
    line = SalesItemLine()
    line.Amount = Decimal(amount)
    line.Description = f"{item.Name} work"
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    if qty is not None and price is not None:
        line.SalesItemLineDetail.Qty, line.SalesItemLineDetail.UnitPrice = qty, Decimal(price)
    return line


def _invoice(customer: Customer, *lines: SalesItemLine) -> Invoice:
    invoice = Invoice()
    invoice.CustomerRef = customer.to_ref()
    invoice.Line.extend(lines)
    return invoice


def _pacific_since(minutes: int = 10) -> str:
    return (datetime.now(PACIFIC) - timedelta(minutes=minutes)).isoformat(timespec="seconds")


# -- intuit-oauth -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("document", ["openid_sandbox_configuration", "openid_configuration"])
def test_authclient_starts_from_either_discovery_document(sandbox: SandboxServer, document: str) -> None:
    auth = _auth_client(sandbox, document)
    base = sandbox.base_url
    assert auth.auth_endpoint == f"{base}/connect/oauth2"
    assert auth.token_endpoint == f"{base}/oauth2/v1/tokens/bearer"
    assert auth.revoke_endpoint == f"{base}/oauth2/v1/tokens/revoke"
    assert auth.jwks_uri.startswith(base) and auth.user_info_url.startswith(base)
    assert auth.issuer_uri.startswith(base)
    keys = requests.get(auth.jwks_uri, timeout=10).json()["keys"]
    assert [key["kty"] for key in keys] == ["RSA"] and keys[0]["alg"] == "RS256" and keys[0]["kid"]


def test_code_exchange_then_refresh_rotates_single_use_tokens(sandbox: SandboxServer) -> None:
    auth = _connect(sandbox)
    assert auth.access_token and auth.refresh_token and auth.realm_id
    assert auth.expires_in == 3600 and auth.x_refresh_token_expires_in == 100 * 86400
    assert auth.id_token is None  # no openid scope, no ID token
    first_access, first_refresh = auth.access_token, auth.refresh_token

    auth.refresh()
    assert auth.refresh_token != first_refresh and auth.access_token != first_access
    qb = _quickbooks(sandbox, auth)  # the new access token works
    assert Customer.count(qb=qb) == 0

    with pytest.raises(AuthClientError) as reused:
        auth.refresh(refresh_token=first_refresh)
    assert reused.value.status_code == 400 and b"invalid_grant" in reused.value.content
    auth.refresh()  # the successor still rotates
    assert Customer.count(qb=_quickbooks(sandbox, auth)) == 0


def test_wrong_client_secret_is_refused(sandbox: SandboxServer) -> None:
    auth = _connect(sandbox)
    auth.client_secret = "not-the-secret"
    with pytest.raises(AuthClientError) as refused:
        auth.refresh()
    assert refused.value.status_code == 401 and b"invalid_client" in refused.value.content


def test_openid_grant_gets_a_validated_id_token_and_userinfo(sandbox: SandboxServer) -> None:
    auth = _connect(sandbox, [Scopes.ACCOUNTING, Scopes.OPENID, Scopes.EMAIL, Scopes.PROFILE])
    # intuit-oauth keeps an ID token only after checking issuer, audience, expiry and the RS256 signature (JWKS)
    assert auth.id_token is not None
    assert validate_id_token(auth.id_token, auth.client_id, auth.issuer_uri, auth.jwks_uri)
    claims = jwt.decode(auth.id_token, options={"verify_signature": False})
    assert claims["realmid"] == auth.realm_id and claims["aud"] == [auth.client_id]
    assert claims["iss"] == auth.issuer_uri and claims["exp"] > claims["iat"]

    info = auth.get_user_info().json()
    assert info["sub"] == claims["sub"]
    assert info["email"] and info["emailVerified"] is True and info["givenName"] and info["familyName"]
    assert "phoneNumber" not in info  # the phone scope was not granted

    auth.refresh()
    assert auth.get_user_info().json()["sub"] == claims["sub"]  # the scopes survive the refresh


def test_userinfo_needs_the_openid_scope(sandbox: SandboxServer) -> None:
    auth = _connect(sandbox)
    with pytest.raises(AuthClientError) as refused:
        auth.get_user_info()
    assert refused.value.status_code == 403


def test_revoke_ends_the_grant(sandbox: SandboxServer) -> None:
    auth = _connect(sandbox)
    qb = _quickbooks(sandbox, auth)
    assert Customer.count(qb=qb) == 0
    assert auth.revoke() is True
    with pytest.raises(AuthorizationException):
        Customer.count(qb=qb)
    with pytest.raises(AuthClientError):
        auth.refresh()


# -- python-quickbooks --------------------------------------------------------------------------------------------
def test_customer_create_read_filter_and_updates(qb: QuickBooks) -> None:
    created = _customer(qb, "Ada O'Lovelace", GivenName="Ada", FamilyName="Lovelace", Notes="first")
    assert created.Id and created.SyncToken == "0" and created.Active is True
    assert created.Balance == 0 and created.MetaData["CreateTime"]

    read = Customer.get(created.Id, qb=qb)
    assert (read.DisplayName, read.GivenName, read.Notes) == ("Ada O'Lovelace", "Ada", "first")
    assert [c.Id for c in Customer.filter(DisplayName="Ada O'Lovelace", qb=qb)] == [created.Id]
    assert [c.Id for c in Customer.where("DisplayName LIKE 'ada%'", qb=qb)] == [created.Id]
    other = _customer(qb, "Grace Hopper")
    assert sorted(c.Id for c in Customer.choose([created.Id, other.Id], qb=qb)) == sorted(
        [created.Id, other.Id]
    )

    read.sparse = True
    read.CompanyName = "Analytical Engines"
    sparse = read.save(qb=qb)
    assert (sparse.SyncToken, sparse.CompanyName, sparse.Notes) == ("1", "Analytical Engines", "first")

    full = Customer.get(created.Id, qb=qb)
    full.Notes = "second"
    saved = full.save(qb=qb)
    assert (saved.SyncToken, saved.Notes, saved.CompanyName) == ("2", "second", "Analytical Engines")

    full.SyncToken = "1"  # stale
    with pytest.raises(QuickbooksException) as stale:
        full.save(qb=qb)
    assert stale.value.error_code == 5010
    with pytest.raises(QuickbooksException) as duplicate:
        _customer(qb, "ada o'lovelace")
    assert duplicate.value.error_code == 6240

    with pytest.raises(ObjectNotFoundException):
        Customer.get("999999", qb=qb)

    deactivated = Customer.get(other.Id, qb=qb)
    deactivated.sparse, deactivated.Active = True, False
    deactivated.save(qb=qb)
    assert [c.Id for c in Customer.filter(Active=True, qb=qb)] == [created.Id]
    assert [c.Id for c in Customer.filter(Active=False, qb=qb)] == [other.Id]


def test_requestid_replays_a_create(qb: QuickBooks) -> None:
    first, retry = Customer(), Customer()
    first.DisplayName = retry.DisplayName = "Idempotent Inc"
    created = first.save(qb=qb, request_id="conformance-create-1")
    replayed = retry.save(qb=qb, request_id="conformance-create-1")
    assert replayed.Id == created.Id and Customer.count(qb=qb) == 1


def test_count_and_paging(qb: QuickBooks) -> None:
    customers = []
    for n in range(23):
        customer = Customer()
        customer.DisplayName = f"Paged {n:02d}"
        customers.append(customer)
    assert len(batch_create(customers, qb=qb).successes) == 23
    assert Customer.count(qb=qb) == 23
    assert Customer.count("DisplayName LIKE 'Paged 1%'", qb=qb) == 10

    pages = [Customer.all(start_position=start, max_results=10, qb=qb) for start in (1, 11, 21, 31)]
    assert [len(page) for page in pages] == [10, 10, 3, 0]
    assert len({c.Id for page in pages for c in page}) == 23
    descending = Customer.where(
        "DisplayName LIKE 'Paged%'", order_by="DisplayName DESC", start_position=2, max_results=3, qb=qb
    )
    assert [c.DisplayName for c in descending] == ["Paged 21", "Paged 20", "Paged 19"]
    assert [i.Name for i in Item.all(qb=qb)] == []  # Item.all sends SELECT *, Sku FROM Item


def test_invoice_create_pay_void_and_delete(qb: QuickBooks) -> None:
    customer, item = _customer(qb, "Invoiced Ltd"), _service_item(qb)
    # the library's own shape: "TxnDate": "", "DueDate": "", "TotalAmt": "", Qty and UnitPrice 0 on the first line
    invoice = _invoice(customer, _line(item, "100.00"), _line(item, "250.00", 2, "125.00"))
    sent = invoice.to_json()
    assert '"TxnDate": ""' in sent and '"DueDate": ""' in sent
    created = invoice.save(qb=qb)
    assert created.TotalAmt == Decimal("350.00") and created.Balance == Decimal("350.00")
    assert created.DocNumber and created.TxnDate
    due = datetime.fromisoformat(created.DueDate) - datetime.fromisoformat(created.TxnDate)
    assert due == timedelta(days=30)
    assert [line.DetailType for line in created.Line][-1] == "SubTotalLineDetail"
    assert [i.Id for i in Invoice.filter(CustomerRef=customer.Id, qb=qb)] == [created.Id]

    payment = Payment()
    payment.TotalAmt = Decimal("50.00")
    payment.CustomerRef = customer.to_ref()
    applied = PaymentLine()
    applied.Amount = Decimal("50.00")
    applied.LinkedTxn.append(created.to_linked_txn())
    payment.Line.append(applied)
    paid = payment.save(qb=qb)
    assert Invoice.get(created.Id, qb=qb).Balance == Decimal("300.00")
    Payment.get(paid.Id, qb=qb).void(qb=qb)
    current = Invoice.get(created.Id, qb=qb)
    assert current.Balance == Decimal("350.00")

    voided = current.void(qb=qb)["Invoice"]
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0 and voided["PrivateNote"].startswith("Voided")
    again = Invoice.get(created.Id, qb=qb)
    assert again.TotalAmt == 0 and int(again.SyncToken) > int(current.SyncToken)

    second = _invoice(customer, _line(item, "10.00")).save(qb=qb)
    assert Invoice.get(second.Id, qb=qb).delete(qb=qb)["Invoice"]["status"] == "Deleted"
    assert [i.Id for i in Invoice.filter(CustomerRef=customer.Id, qb=qb)] == [created.Id]


def test_batch_of_thirty_and_per_item_faults(qb: QuickBooks) -> None:
    customers = []
    for n in range(30):
        customer = Customer()
        customer.DisplayName = f"Batch {n}"
        customers.append(customer)
    result = batch_create(customers, qb=qb)
    assert len(result.successes) == 30 and result.faults == []
    assert sorted(c.DisplayName for c in result.successes) == sorted(f"Batch {n}" for n in range(30))
    assert all(c.Id and c.SyncToken == "0" for c in result.successes)

    clash, fresh = Customer(), Customer()
    clash.DisplayName, fresh.DisplayName = "Batch 7", "Batch 30"
    mixed = batch_create([clash, fresh], qb=qb)
    assert [c.DisplayName for c in mixed.successes] == ["Batch 30"]
    [fault] = mixed.faults
    assert fault.Error[0].code == "6240" and fault.original_object is clash
    assert Customer.count(qb=qb) == 31


def test_change_data_capture_lists_changes_and_deletions(qb: QuickBooks) -> None:
    since = _pacific_since()
    customer, item = _customer(qb, "Changed Co"), _service_item(qb, "Audit")
    kept = _invoice(customer, _line(item, "40.00")).save(qb=qb)
    gone = _invoice(customer, _line(item, "60.00")).save(qb=qb)
    Invoice.get(gone.Id, qb=qb).delete(qb=qb)

    changes = change_data_capture([Customer, Invoice], since, qb=qb)
    assert [c.Id for c in changes.Customer] == [customer.Id]
    invoices = {i.Id: i for i in changes.Invoice}
    assert set(invoices) == {kept.Id, gone.Id}
    assert invoices[kept.Id].TotalAmt == Decimal("40.00")
    assert invoices[gone.Id].status == "Deleted"

    nothing = change_data_capture([Customer, Invoice], _pacific_since(-10), qb=qb)
    assert not hasattr(nothing, "Customer") and not hasattr(nothing, "Invoice")
