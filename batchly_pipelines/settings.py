"""Typed settings read from the environment, validated once at start.

Every bad value fails with a :class:`SettingsError` that names the variable and says what it expects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet

QboEnvironment = Literal["local", "sandbox", "production"]

QBO_ENVIRONMENTS: tuple[QboEnvironment, ...] = ("local", "sandbox", "production")
INTUIT_BASE_URLS: dict[str, str] = {
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
    "production": "https://quickbooks.api.intuit.com",
}
LOCAL_SANDBOX_URL = "http://127.0.0.1:8765"
LOCAL_CLIENT_ID = "batchly-local-client"
LOCAL_CLIENT_SECRET = "batchly-local-secret"
LOCAL_REDIRECT_URI = "http://127.0.0.1:8766/callback"
DEFAULT_DATA_DIR = ".batchly"


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""

    def __init__(self, variable: str, expected: str, got: str | None = None) -> None:
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"{variable}: expected {expected}{shown}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs from its environment."""

    database_url: str
    data_dir: Path
    qbo_environment: QboEnvironment
    qbo_base_url: str
    qbo_client_id: str
    qbo_client_secret: str = field(repr=False)
    qbo_redirect_uri: str
    secret_key: str = field(repr=False)
    webhook_verifier_token: str | None = field(repr=False)

    @property
    def is_local(self) -> bool:
        return self.qbo_environment == "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        """Read and validate settings; in local mode, generate the secret key on first use."""
        env = os.environ if environ is None else environ
        data_dir = (cwd or Path.cwd()) / DEFAULT_DATA_DIR

        qbo_environment = env.get("QBO_ENVIRONMENT", "local").strip().lower()
        if qbo_environment not in QBO_ENVIRONMENTS:
            raise SettingsError("QBO_ENVIRONMENT", "one of local, sandbox, production", qbo_environment)
        local = qbo_environment == "local"

        database_url = env.get("BATCHLY_DATABASE_URL") or f"sqlite:///{data_dir / 'batchly.sqlite'}"
        _check_database_url(database_url)

        default_base = LOCAL_SANDBOX_URL if local else INTUIT_BASE_URLS[qbo_environment]
        base_url = (env.get("QBO_BASE_URL") or default_base).rstrip("/")
        _check_http_url("QBO_BASE_URL", base_url)

        redirect_uri = env.get("QBO_REDIRECT_URI") or (LOCAL_REDIRECT_URI if local else "")
        if not redirect_uri:
            raise SettingsError("QBO_REDIRECT_URI", "the OAuth redirect URI registered with Intuit")
        _check_http_url("QBO_REDIRECT_URI", redirect_uri)

        client_id = env.get("QBO_CLIENT_ID") or (LOCAL_CLIENT_ID if local else "")
        client_secret = env.get("QBO_CLIENT_SECRET") or (LOCAL_CLIENT_SECRET if local else "")
        for name, value in (("QBO_CLIENT_ID", client_id), ("QBO_CLIENT_SECRET", client_secret)):
            if not value:
                raise SettingsError(
                    name, f"the Intuit app's credential (required when QBO_ENVIRONMENT={qbo_environment})"
                )

        secret_key = env.get("BATCHLY_SECRET_KEY") or ""
        if not secret_key:
            if not local:
                raise SettingsError(
                    "BATCHLY_SECRET_KEY",
                    "a Fernet key (generate one with `batchly-sync secret-key`); required outside local mode",
                )
            secret_key = _local_secret_key(data_dir)
        _check_fernet_key(secret_key)

        return cls(
            database_url=database_url,
            data_dir=data_dir,
            qbo_environment=qbo_environment,
            qbo_base_url=base_url,
            qbo_client_id=client_id,
            qbo_client_secret=client_secret,
            qbo_redirect_uri=redirect_uri,
            secret_key=secret_key,
            webhook_verifier_token=env.get("QBO_WEBHOOK_VERIFIER_TOKEN") or None,
        )


def _check_database_url(url: str) -> None:
    scheme = urlparse(url).scheme
    if scheme not in ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg2"):
        raise SettingsError(
            "BATCHLY_DATABASE_URL",
            "a sqlite:///path or postgresql+psycopg2://user@host/db URL",
            url.split("@")[-1],
        )


def _check_http_url(variable: str, url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(variable, "an http(s):// URL", url)


def _check_fernet_key(key: str) -> None:
    try:
        Fernet(key.encode())
    except ValueError:
        raise SettingsError(
            "BATCHLY_SECRET_KEY", "a url-safe base64 Fernet key of 32 bytes (`batchly-sync secret-key`)"
        ) from None


def _local_secret_key(data_dir: Path) -> str:
    """Read the local-mode key from ``.batchly/secret.key``, creating it (mode 0600) on first use."""
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    tmp = data_dir / f".secret.key.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    try:
        os.link(tmp, path)  # atomic: fails if another process published its key first
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        tmp.unlink()
    return key


@dataclass(frozen=True)
class RuntimeSettings:
    """Knobs for scheduling and pacing, read when the Dagster code location loads (no secrets involved)."""

    pull_timezone: str  # BATCHLY_PULL_TIMEZONE: where the days of a pull's batchly/pull/from|to tags start
    schedule_timezone: (
        str  # BATCHLY_SCHEDULE_TIMEZONE: the zone of the 02:00 / 03:00 / 04:00 nightly schedules
    )
    qbo_time_scale: float  # QBO_TIME_SCALE: the local sandbox's --time-scale; 1 against Intuit
    nightly_batch: int = 250  # BATCHLY_NIGHTLY_BATCH: companies per nightly pull run
    company_workers: int = 8  # BATCHLY_COMPANY_WORKERS: companies a pull run works on at once
    company_retry_s: float = 30.0  # BATCHLY_COMPANY_RETRY_S: pause before a failed company is tried again

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read and validate the runtime knobs; each has a default."""
        env = os.environ if environ is None else environ
        scale = env.get("QBO_TIME_SCALE") or "1"
        try:
            time_scale = float(scale)
        except ValueError:
            time_scale = 0.0
        if not time_scale > 0:
            raise SettingsError("QBO_TIME_SCALE", "a number greater than 0", scale)
        return cls(
            pull_timezone=_time_zone(env, "BATCHLY_PULL_TIMEZONE"),
            schedule_timezone=_time_zone(env, "BATCHLY_SCHEDULE_TIMEZONE"),
            qbo_time_scale=time_scale,
            nightly_batch=int(_positive(env, "BATCHLY_NIGHTLY_BATCH", 250)),
            company_workers=int(_positive(env, "BATCHLY_COMPANY_WORKERS", 8)),
            company_retry_s=_positive(env, "BATCHLY_COMPANY_RETRY_S", 30.0),
        )


def _positive(env: Mapping[str, str], variable: str, default: float) -> float:
    """A number greater than 0 from ``variable`` (whole when ``default`` is), else ``default``."""
    raw = env.get(variable) or str(default)
    try:
        value: float = int(raw) if isinstance(default, int) else float(raw)
    except ValueError:
        value = 0
    if not value > 0:
        raise SettingsError(variable, "a number greater than 0", raw)
    return value


def _time_zone(env: Mapping[str, str], variable: str) -> str:
    name = env.get(variable) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(variable, "an IANA time zone such as America/Los_Angeles", name) from None
    return name


DEFAULT_WEBHOOK_HOST = "127.0.0.1"
DEFAULT_WEBHOOK_PORT = 8767


@dataclass(frozen=True)
class WebhookSettings:
    """What the webhook receiver (``batchly-sync webhooks serve``) needs besides the database."""

    verifier_token: str = field(repr=False)  # QBO_WEBHOOK_VERIFIER_TOKEN: the key of Intuit's signatures
    host: str  # BATCHLY_WEBHOOK_HOST: the address to listen on
    port: int  # BATCHLY_WEBHOOK_PORT: the port to listen on (0: any free port)

    @classmethod
    def from_env(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> WebhookSettings:
        """Validate the receiver's settings: the verifier token (required), host and port (``host`` and ``port``,
        when given, replace the environment's)."""
        env = os.environ if environ is None else environ
        token = (settings.webhook_verifier_token or "").strip()
        if not token:
            raise SettingsError(
                "QBO_WEBHOOK_VERIFIER_TOKEN",
                "the verifier token of the Intuit app's webhooks (developer portal → Webhooks); "
                "the receiver refuses to run without it",
            )
        host = (host if host is not None else env.get("BATCHLY_WEBHOOK_HOST") or DEFAULT_WEBHOOK_HOST).strip()
        if not host or any(character.isspace() or character in "/?#@" for character in host):
            raise SettingsError("BATCHLY_WEBHOOK_HOST", "a host name or IP address to listen on", host)
        text = str(port) if port is not None else env.get("BATCHLY_WEBHOOK_PORT") or str(DEFAULT_WEBHOOK_PORT)
        port = int(text) if text.strip().isdigit() else -1
        if not 0 <= port <= 65535:
            raise SettingsError("BATCHLY_WEBHOOK_PORT", "a TCP port from 0 to 65535", text)
        return cls(verifier_token=token, host=host, port=port)
