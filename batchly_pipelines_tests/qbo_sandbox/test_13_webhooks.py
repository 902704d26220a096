"""Checklist 13: signed webhooks (legacy and CloudEvents) retried on Intuit's (scaled) schedule until a 200."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.cli import build_parser
from qbo_sandbox.server import SandboxConfig, SandboxServer

VERIFIER = "verifier-token"


class Receiver:
    """A webhook endpoint that fails the first ``failures`` deliveries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.deliveries: list[tuple[float, int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(receiver.deliveries) < receiver.failures else 200
                headers = {key.lower(): value for key, value in self.headers.items()}
                receiver.deliveries.append((time.monotonic(), status, headers, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.deliveries) >= count, self.deliveries


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.httpd.shutdown()


def _signature_ok(headers: dict[str, str], body: bytes) -> bool:
    expected = base64.b64encode(hmac.new(VERIFIER.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["intuit-signature"], expected)


def _sandbox(receiver: Receiver, webhook_format: str) -> SandboxServer:
    config = SandboxConfig(
        throttle=False,
        time_scale=100.0,
        webhook_url=receiver.url,
        webhook_verifier=VERIFIER,
        webhook_format=webhook_format,
    )
    return SandboxServer(config)


def test_legacy_payload_is_signed(receiver: Receiver) -> None:
    with _sandbox(receiver, "legacy") as sandbox:
        qbo = Qbo(sandbox)
        customer = qbo.customer("Hooked")
        receiver.wait(1)
    _, status, headers, body = receiver.deliveries[-1]
    assert status == 200 and _signature_ok(headers, body)
    notifications: list[dict[str, Any]] = json.loads(body)["eventNotifications"]
    mine = [n for n in notifications if n["realmId"] == qbo.realm_id]
    entities = mine[0]["dataChangeEvent"]["entities"]
    assert {"name": "Customer", "id": customer["Id"], "operation": "Create"}.items() <= entities[-1].items()
    assert entities[-1]["lastUpdated"].endswith("Z")


def test_cloudevents_payload_is_signed(receiver: Receiver) -> None:
    with _sandbox(receiver, "legacy") as sandbox:
        qbo = Qbo(sandbox)
        qbo.admin.configure_webhooks(receiver.url, VERIFIER, "cloudevents")
        customer = qbo.customer("Cloudy")
        qbo.create("Customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "n"})
        receiver.wait(1)
        time.sleep(0.05)
    bodies = [json.loads(body) for _, _, _, body in receiver.deliveries]
    assert all(_signature_ok(headers, body) for _, _, headers, body in receiver.deliveries)
    events = [event for batch in bodies for event in batch]
    assert [e["type"] for e in events] == ["qbo.customer.created.v1", "qbo.customer.updated.v1"]
    assert events[0]["specversion"] == "1.0" and events[0]["intuitentityid"] == customer["Id"]
    assert events[0]["intuitaccountid"] == qbo.realm_id


def test_failed_deliveries_are_retried_on_the_scaled_schedule() -> None:
    receiver = Receiver(failures=2)
    try:
        with _sandbox(receiver, "legacy") as sandbox:
            Qbo(sandbox).customer("Retry Me")
            receiver.wait(3)
            counters = SandboxAdmin(sandbox.base_url).counters()
    finally:
        receiver.httpd.shutdown()
    times = [at for at, _, _, _ in receiver.deliveries]
    assert [status for _, status, _, _ in receiver.deliveries] == [500, 500, 200]
    assert receiver.deliveries[0][3] == receiver.deliveries[2][3], "the same notification is retried"
    assert times[1] - times[0] >= 0.1 * 0.9 and times[2] - times[1] >= 0.2 * 0.9  # 10 s and 20 s / 100
    assert counters["global"]["webhook_failures"] == 2 and counters["global"]["webhook_deliveries"] == 1


def test_a_cloudevents_delivery_mixes_realms(receiver: Receiver) -> None:
    with _sandbox(receiver, "cloudevents") as sandbox:
        first, second = Qbo(sandbox), Qbo(sandbox)
        first.customer("First Co customer")
        second.customer("Second Co customer")
        receiver.wait(1)
    [(_, _, _, body)] = receiver.deliveries
    assert {event["intuitaccountid"] for event in json.loads(body)} == {first.realm_id, second.realm_id}


def test_a_failing_notification_holds_back_the_later_ones_until_it_is_acknowledged() -> None:
    receiver = Receiver(failures=2)
    try:
        with _sandbox(receiver, "legacy") as sandbox:
            qbo = Qbo(sandbox)
            qbo.customer("First")
            receiver.wait(1)
            qbo.customer("Second")  # a later notification, while the first waits for its retry
            receiver.wait(4)
    finally:
        receiver.httpd.shutdown()
    names = [
        [
            entity["id"]
            for n in json.loads(body)["eventNotifications"]
            for entity in n["dataChangeEvent"]["entities"]
        ]
        for _, _, _, body in receiver.deliveries
    ]
    statuses = [status for _, status, _, _ in receiver.deliveries]
    assert statuses == [500, 500, 200, 200]
    assert names[0] == names[1] == names[2] != names[3]  # the second went only after the first got its 200


def test_events_are_aggregated_over_the_configured_window(receiver: Receiver) -> None:
    with _sandbox(receiver, "cloudevents") as sandbox:
        qbo = Qbo(sandbox)
        qbo.admin.configure_webhooks(receiver.url, VERIFIER, "cloudevents", aggregation_seconds=30.0)
        started = time.monotonic()
        for n in range(3):
            qbo.customer(f"Aggregated {n}")
            time.sleep(0.05)
        receiver.wait(1)
        time.sleep(0.1)
    [(delivered_at, _, _, body)] = receiver.deliveries
    assert len(json.loads(body)) == 3
    assert delivered_at - started >= 0.3 * 0.9  # 30 s / 100


def test_reads_are_metered_per_app_and_month_and_refused_past_the_quota(receiver: Receiver) -> None:
    with _sandbox(receiver, "legacy") as sandbox:
        qbo = Qbo(sandbox)
        admin = SandboxAdmin(sandbox.base_url)
        customer = qbo.customer("Metered")  # a write: not metered
        qbo.read("Customer", customer["Id"])
        qbo.query("SELECT * FROM Customer")
        assert qbo.get("query", query="SELECT * FROM Nothing").status_code == 400  # a fault: not metered
        metering = admin.metering()
        month = next(iter(metering["reads"]["batchly-local-client"]))
        assert metering["reads"] == {"batchly-local-client": {month: 2}} and metering["read_quota"] is None
        admin.set_read_quota(3)
        since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert qbo.get("cdc", entities="Customer", changedSince=since).status_code == 200
        refused = qbo.get("query", query="SELECT * FROM Customer")
        assert refused.status_code == 429 and "ThrottleExceeded" in refused.text  # as Intuit answers
        assert qbo.create("Customer", {"DisplayName": "Writes go on"})["DisplayName"] == "Writes go on"
        assert admin.metering()["reads"]["batchly-local-client"][month] == 3
        with admin.clock_advanced(40 * 86400):  # next month: the quota starts again
            qbo.token = admin.access_token(qbo.realm_id)  # (the old one expired meanwhile)
            assert qbo.get("query", query="SELECT * FROM Customer").status_code == 200


def test_the_command_line_sets_the_read_quota_and_the_aggregation_window() -> None:
    parsed = build_parser().parse_args(["serve", "--webhook-aggregation-seconds", "180"])
    assert parsed.webhook_aggregation_seconds == 180.0 and parsed.read_quota is None
    command = [
        sys.executable,
        "-m",
        "qbo_sandbox.cli",
        "serve",
        "--port",
        "0",
        "--no-throttle",
        "--read-quota",
        "1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().split()[-1]
        admin = SandboxAdmin(base_url)
        realm = admin.new_realm()
        headers = {"Authorization": f"Bearer {admin.access_token(realm)}", "Accept": "application/json"}
        url = f"{base_url}/v3/company/{realm}/query"
        statuses = [
            requests.get(
                url, params={"query": "SELECT * FROM Customer"}, headers=headers, timeout=10
            ).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 429] and admin.metering()["read_quota"] == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
