"""Settings: defaults for local mode, clear errors naming the variable, the generated local secret key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from batchly_pipelines.settings import LOCAL_SANDBOX_URL, RuntimeSettings, Settings, SettingsError


def test_local_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    assert settings.is_local and settings.qbo_base_url == LOCAL_SANDBOX_URL
    assert settings.database_url == f"sqlite:///{tmp_path / '.batchly' / 'batchly.sqlite'}"
    key_file = tmp_path / ".batchly" / "secret.key"
    assert key_file.read_text().strip() == settings.secret_key
    assert key_file.stat().st_mode & 0o777 == 0o600
    Fernet(settings.secret_key.encode())
    assert Settings.from_env({}, cwd=tmp_path).secret_key == settings.secret_key, (
        "generated once, then reused"
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"QBO_ENVIRONMENT": "staging"}, "QBO_ENVIRONMENT"),
        ({"BATCHLY_DATABASE_URL": "mysql://root@localhost/x"}, "BATCHLY_DATABASE_URL"),
        ({"QBO_BASE_URL": "ftp://example.com"}, "QBO_BASE_URL"),
        ({"BATCHLY_SECRET_KEY": "not-a-key"}, "BATCHLY_SECRET_KEY"),
        ({"QBO_ENVIRONMENT": "production"}, "QBO_REDIRECT_URI"),
        ({"QBO_ENVIRONMENT": "sandbox", "QBO_REDIRECT_URI": "https://app.example.com/cb"}, "QBO_CLIENT_ID"),
        (
            {
                "QBO_ENVIRONMENT": "production",
                "QBO_REDIRECT_URI": "https://app.example.com/cb",
                "QBO_CLIENT_ID": "id",
                "QBO_CLIENT_SECRET": "secret",
            },
            "BATCHLY_SECRET_KEY",
        ),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], variable: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env, cwd=tmp_path)
    assert error.value.variable == variable
    assert str(error.value).startswith(f"{variable}: expected ")


def test_production_uses_intuit_and_never_writes_a_key(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings.from_env(
        {
            "QBO_ENVIRONMENT": "production",
            "QBO_REDIRECT_URI": "https://app.example.com/cb",
            "QBO_CLIENT_ID": "id",
            "QBO_CLIENT_SECRET": "secret",
            "BATCHLY_SECRET_KEY": key,
            "BATCHLY_DATABASE_URL": "postgresql://batchly@db/batchly",
        },
        cwd=tmp_path,
    )
    assert settings.qbo_base_url == "https://quickbooks.api.intuit.com"
    assert settings.secret_key == key
    assert not (tmp_path / ".batchly").exists()


def test_database_url_error_does_not_echo_credentials(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"BATCHLY_DATABASE_URL": "oracle://scott:tiger@db/x"}, cwd=tmp_path)
    assert "tiger" not in str(error.value)


def test_secrets_never_appear_in_the_repr(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"QBO_CLIENT_SECRET": "s3cr3t-client", "QBO_WEBHOOK_VERIFIER_TOKEN": "v3rifier"}, cwd=tmp_path
    )
    shown = repr(settings)
    for secret in (settings.secret_key, "s3cr3t-client", "v3rifier"):
        assert secret not in shown
    assert "qbo_base_url" in shown


def test_runtime_knobs_have_defaults_and_are_validated() -> None:
    defaults = RuntimeSettings.from_env({})
    assert (defaults.pull_timezone, defaults.qbo_time_scale) == ("UTC", 1.0)
    assert (defaults.nightly_batch, defaults.company_workers, defaults.company_retry_s) == (250, 8, 30.0)
    chosen = RuntimeSettings.from_env(
        {"BATCHLY_SCHEDULE_TIMEZONE": "America/Los_Angeles", "QBO_TIME_SCALE": "60"}
    )
    assert (chosen.schedule_timezone, chosen.qbo_time_scale) == ("America/Los_Angeles", 60.0)
    for env, variable in (
        ({"BATCHLY_NIGHTLY_BATCH": "0"}, "BATCHLY_NIGHTLY_BATCH"),
        ({"BATCHLY_COMPANY_WORKERS": "many"}, "BATCHLY_COMPANY_WORKERS"),
        ({"BATCHLY_PULL_TIMEZONE": "Mars/Olympus"}, "BATCHLY_PULL_TIMEZONE"),
        ({"BATCHLY_SCHEDULE_TIMEZONE": "../etc"}, "BATCHLY_SCHEDULE_TIMEZONE"),
        ({"QBO_TIME_SCALE": "0"}, "QBO_TIME_SCALE"),
        ({"QBO_TIME_SCALE": "fast"}, "QBO_TIME_SCALE"),
    ):
        with pytest.raises(SettingsError) as error:
            RuntimeSettings.from_env(env)
        assert error.value.variable == variable
