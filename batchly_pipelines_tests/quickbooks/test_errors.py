"""Typed errors for every envelope the sandbox answers with, each carrying code, detail, element and intuit_tid."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from batchly_pipelines.quickbooks.client import ClientConfig, QuickBooksClient, WriteOp
from batchly_pipelines.quickbooks.errors import (
    AuthError,
    DuplicateNameError,
    NotFoundError,
    QboError,
    ServerError,
    StaleObjectError,
    ThrottledError,
    ValidationError,
    error_from_response,
)
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE, SandboxTokens
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


class FixedToken:
    """A token source whose "refresh" hands back the same (possibly bad) token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.refreshes = 0

    def access_token(self) -> str:
        return self.token

    def refresh(self, rejected_access_token: str) -> str:
        self.refreshes += 1
        return self.token


def _assert_tid(error: QboError) -> None:
    assert error.intuit_tid and error.intuit_tid.startswith("1-"), error


def test_query_parse_error_is_a_validation_error(client: QuickBooksClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.query("SELECT * FROM Customer WHERE DisplayName = 'unterminated")
    assert caught.value.code == "4000" and caught.value.status == 400
    assert "QueryParserError" in caught.value.detail
    _assert_tid(caught.value)


def test_unknown_id_is_not_found(client: QuickBooksClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.read("Customer", "987654")
    assert caught.value.code == "610"
    _assert_tid(caught.value)


def test_per_item_faults_are_typed_and_keep_element(client: QuickBooksClient) -> None:
    first = client.write_batch([WriteOp("a", "Customer", "create", {"DisplayName": "Twin"}, "e-1")])[0]
    assert first.ok and first.entity_obj is not None
    results = client.write_batch(
        [
            WriteOp("dup", "Customer", "create", {"DisplayName": "Twin"}, "e-2"),
            WriteOp("ok", "Customer", "create", {"DisplayName": "Single"}, "e-3"),
            WriteOp("bad", "Customer", "create", {"DisplayName": "x" * 501}, "e-4"),
            WriteOp(
                "stale",
                "Customer",
                "update",
                {"Id": first.entity_obj["Id"], "SyncToken": "7", "Notes": "n"},
                "e-5",
            ),
        ]
    )
    by_key = {r.key: r for r in results}
    assert isinstance(by_key["dup"].error, DuplicateNameError) and by_key["dup"].error.code == "6240"
    assert by_key["ok"].ok and by_key["ok"].error is None
    bad = by_key["bad"].error
    assert isinstance(bad, ValidationError) and bad.element == "DisplayName"
    stale = by_key["stale"].error
    assert isinstance(stale, StaleObjectError) and stale.code == "5010"
    assert by_key["stale"].current is not None and by_key["stale"].current["SyncToken"] == "0"
    for result in (by_key["dup"], by_key["bad"], by_key["stale"]):
        assert result.error is not None
        _assert_tid(result.error)


def test_gateway_401_is_an_auth_error_without_the_token(sandbox: SandboxServer, realm_id: str) -> None:
    secret = "BadToken-" + "s3cr3t" * 8
    tokens = FixedToken(secret)
    with QuickBooksClient(realm_id, sandbox.base_url, tokens) as qbo:
        with pytest.raises(AuthError) as caught:
            qbo.count("Customer")
        assert (
            tokens.refreshes == 1 and qbo.stats.calls["query"] == 2
        )  # one refresh, one more try, then the error
    error = caught.value
    assert error.code == "3200" and error.status == 401
    _assert_tid(error)
    assert "s3cr3t" not in str(error) and "s3cr3t" not in repr(error.args)


def test_expired_token_detail_is_redacted(sandbox: SandboxServer, realm_id: str) -> None:
    body = b'{"fault":{"error":[{"message":"m","detail":"Token expired: eyJlbmMiOiJB...","code":"3200"}],"type":"AUTHENTICATION"},"time":1}'
    error = error_from_response(401, body, {"intuit_tid": "1-x"})
    assert isinstance(error, AuthError) and "eyJ" not in str(error) and "[redacted]" in error.detail


def test_token_for_another_company_is_403_3100(sandbox: SandboxServer, realm_id: str) -> None:
    other = SandboxAdmin(sandbox.base_url).new_realm()
    token = SandboxTokens(sandbox.base_url, other).token
    with (
        QuickBooksClient(realm_id, sandbox.base_url, FixedToken(token)) as qbo,
        pytest.raises(AuthError) as caught,
    ):
        qbo.count("Customer")
    assert caught.value.code == "3100" and caught.value.status == 403
    _assert_tid(caught.value)


def test_xml_throttle_body_is_a_throttled_error(sandbox: SandboxServer, realm_id: str) -> None:
    SandboxAdmin(sandbox.base_url).settings(realm_id, limits={"per_minute": 1})
    tokens = SandboxTokens(sandbox.base_url, realm_id)
    url = f"{sandbox.base_url}/v3/company/{realm_id}/query"
    headers = {"Authorization": f"Bearer {tokens.token}", "Accept": "application/json"}
    answers = [
        requests.get(url, params={"query": "SELECT * FROM Item"}, headers=headers, timeout=10)
        for _ in range(2)
    ]
    assert answers[1].status_code == 429 and answers[1].text.lstrip().startswith("<")
    error = error_from_response(429, answers[1].content, answers[1].headers)
    assert isinstance(error, ThrottledError) and error.code == "3001" and "ThrottleExceeded" in error.message
    assert error.detail.startswith("The request limit was reached") and error.fault_type == "SERVICE"
    _assert_tid(error)
    # Through the client, a request that may not wait at all gives up with the same typed error.
    config = ClientConfig(time_scale=TIME_SCALE, max_throttled=0)
    with QuickBooksClient(realm_id, sandbox.base_url, tokens, config=config) as qbo:
        with pytest.raises(ThrottledError):
            qbo.count("Item")
        assert qbo.stats.throttled == 0


@pytest.mark.parametrize(("fault", "code"), [("error_503", ""), ("error_500", "10000")])
def test_server_errors_are_retried_then_typed(
    sandbox: SandboxServer, realm_id: str, fault: str, code: str
) -> None:
    SandboxAdmin(sandbox.base_url).set_faults(realm_id, **{fault: 1.0, "seed": 1})
    config = ClientConfig(time_scale=TIME_SCALE, attempts=3)
    with QuickBooksClient(
        realm_id, sandbox.base_url, SandboxTokens(sandbox.base_url, realm_id), config=config
    ) as qbo:
        with pytest.raises(ServerError) as caught:
            qbo.count("Customer")
        assert qbo.stats.retries == 2 and qbo.stats.calls["query"] == 3
    assert caught.value.code == code and caught.value.status in (500, 503)
    _assert_tid(caught.value)


def test_validation_faults_are_not_retried(client: QuickBooksClient) -> None:
    with pytest.raises(ValidationError):
        client.query("SELECT * FROM Nonsense")
    assert client.stats.retries == 0 and client.stats.calls["query"] == 1


def test_retry_after_is_kept_when_sent() -> None:
    body = b'<IntuitResponse><Fault type="SERVICE"><Error code="3001"><Message>m</Message></Error></Fault></IntuitResponse>'
    hinted = error_from_response(429, body, {"Retry-After": "7", "intuit_tid": "1-a"})
    assert isinstance(hinted, ThrottledError) and hinted.retry_after == 7.0
    assert error_from_response(429, body, {}).retry_after is None  # type: ignore[attr-defined]


def test_an_answer_cut_mid_body_is_retried_with_the_same_request_id() -> None:
    """QuickBooks wrote, then the connection broke while its answer was being read: retry, never a new id."""
    request_lines: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request_lines.append(conn.recv(65536).split(b"\r\n")[0])
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
                )

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    config = ClientConfig(time_scale=1000, attempts=3)
    client = QuickBooksClient("123", f"http://127.0.0.1:{port}", FixedToken("tok"), config=config)
    try:
        [result] = client.write_batch([WriteOp(1, "Invoice", "create", {"DocNumber": "1"}, "a" * 36)])
    finally:
        server.close()
    assert not result.ok and isinstance(result.error, ServerError)
    assert "no answer from QuickBooks" in str(result.error)
    assert len(request_lines) == 3, "every attempt was sent"
    request_ids = {line.split(b"requestid=")[1].split(b"&")[0].split(b" ")[0] for line in request_lines}
    assert len(request_ids) == 1, request_lines
