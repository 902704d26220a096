"""``batchly-sync webhooks serve|list`` and the receiver's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.cli.main import main
from batchly_pipelines.cli.webhooks import local_receiver
from batchly_pipelines.services.webhooks.events import parse_delivery
from batchly_pipelines.services.webhooks.intake import UNKNOWN_REALM, record_delivery
from batchly_pipelines.services.webhooks.signature import sign
from batchly_pipelines.settings import DEFAULT_WEBHOOK_PORT, Settings, SettingsError, WebhookSettings
from batchly_pipelines.store.webhook_repair import last_receiver_start
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.webhooks import VERIFIER, change, cloudevents, inbox, wait_until

SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"BATCHLY_SECRET_KEY": Fernet.generate_key().decode(), **env}, cwd=tmp_path)


def test_the_receiver_settings_default_and_validate(tmp_path: Path) -> None:
    settings = _settings(tmp_path, QBO_WEBHOOK_VERIFIER_TOKEN=" token ")
    webhooks = WebhookSettings.from_env(settings, {})
    assert (webhooks.verifier_token, webhooks.host, webhooks.port) == (
        "token",
        "127.0.0.1",
        DEFAULT_WEBHOOK_PORT,
    )
    assert "token" not in repr(webhooks)
    env = {"BATCHLY_WEBHOOK_HOST": "0.0.0.0", "BATCHLY_WEBHOOK_PORT": "9000"}
    assert WebhookSettings.from_env(settings, env).port == 9000
    assert WebhookSettings.from_env(settings, env, host="::1", port=0).host == "::1"
    for bad_env, variable in [
        ({"BATCHLY_WEBHOOK_PORT": "http"}, "BATCHLY_WEBHOOK_PORT"),
        ({"BATCHLY_WEBHOOK_PORT": "70000"}, "BATCHLY_WEBHOOK_PORT"),
        ({"BATCHLY_WEBHOOK_HOST": "http://example.com"}, "BATCHLY_WEBHOOK_HOST"),
    ]:
        with pytest.raises(SettingsError) as error:
            WebhookSettings.from_env(settings, bad_env)
        assert error.value.variable == variable
    with pytest.raises(SettingsError) as error:
        WebhookSettings.from_env(_settings(tmp_path), {})
    assert error.value.variable == "QBO_WEBHOOK_VERIFIER_TOKEN"


def test_serve_without_a_verifier_token_stops_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATCHLY_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.delenv("QBO_WEBHOOK_VERIFIER_TOKEN", raising=False)
    assert main(["webhooks", "serve", "--port", "0"]) == 2
    assert "QBO_WEBHOOK_VERIFIER_TOKEN" in capsys.readouterr().err


@SQLITE_ONLY
def test_serve_receives_signed_deliveries_and_stops_on_sigterm(engine: Engine, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BATCHLY_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "BATCHLY_SECRET_KEY": Fernet.generate_key().decode(),
        "QBO_WEBHOOK_VERIFIER_TOKEN": VERIFIER,
    }
    command = [str(Path(sys.executable).with_name("batchly-sync")), "webhooks", "serve", "--port", "0"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the socket is bound
        assert line.startswith("webhooks:"), line + (process.stderr.read() if process.stderr else "")
        url = line.split("receiving at ", 1)[1].split()[0]
        with engine.connect() as conn:  # a start: the realms' CDC sweeps are due at once
            assert last_receiver_start(conn) is not None
        body = cloudevents(change("9999999999", "Customer", "1"))
        refused = requests.post(
            url, data=body, headers={"intuit-signature": sign("forged", body)}, timeout=10
        )
        answer = requests.post(url, data=body, headers={"intuit-signature": sign(VERIFIER, body)}, timeout=10)
        assert (refused.status_code, answer.status_code, answer.json()["ignored"]) == (401, 200, 1)
        [row] = inbox(engine)
        assert (row["status"], row["note"]) == ("ignored", UNKNOWN_REALM)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@SQLITE_ONLY
def test_list_shows_the_newest_events(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    record_delivery(engine, parse_delivery(cloudevents(change("9999999999", "Invoice", "42", "Void"))))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATCHLY_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("BATCHLY_SECRET_KEY", Fernet.generate_key().decode())
    assert main(["webhooks", "list", "--status", "ignored"]) == 0
    out = capsys.readouterr().out
    assert "Invoice" in out and "42" in out and "Void" in out and UNKNOWN_REALM in out and "1 event(s)" in out


@SQLITE_ONLY
def test_make_devs_receiver_takes_the_local_sandboxs_webhooks(
    company: Company, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHLY_WEBHOOK_PORT", "0")
    monkeypatch.delenv("QBO_WEBHOOK_VERIFIER_TOKEN", raising=False)
    database_url = company.engine.url.render_as_string(hide_password=False)
    settings = _settings(tmp_path, QBO_BASE_URL=company.sandbox.base_url, BATCHLY_DATABASE_URL=database_url)
    with local_receiver(settings) as url:
        assert url is not None and url.endswith("/webhooks/quickbooks")
        customer = company.qbo.customer("Sent by the sandbox")
        wait_until(lambda: any(row["entity_id"] == customer["Id"] for row in inbox(company.engine)))
    [row] = [row for row in inbox(company.engine) if row["entity_id"] == customer["Id"]]
    assert (row["entity_type"], row["operation"], row["status"]) == ("Customer", "Create", "pending")
    company.qbo.customer("After make dev stopped")  # the sandbox was told to stop delivering
    time.sleep(1.5)
    assert len(inbox(company.engine)) == 1


@SQLITE_ONLY
def test_make_dev_goes_on_without_webhooks_when_the_receiver_cannot_start(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("BATCHLY_WEBHOOK_PORT", str(taken.getsockname()[1]))
        database_url = engine.url.render_as_string(hide_password=False)
        settings = _settings(tmp_path, BATCHLY_DATABASE_URL=database_url, QBO_BASE_URL="http://127.0.0.1:9")
        with local_receiver(settings) as url:  # (the sandbox is never asked: nothing to point at it)
            assert url is None
    out = capsys.readouterr().out
    assert "the receiver did not start" in out and "BATCHLY_WEBHOOK_PORT" in out
