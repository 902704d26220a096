"""The webhooks' knobs, read from the environment when a sensor or check evaluates (each has a default; a bad value
fails with a :class:`~batchly_pipelines.settings.SettingsError` naming the variable)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta

from batchly_pipelines.services.read_budget import monthly_quota
from batchly_pipelines.services.webhooks.repair import REPAIR_EVERY, SILENCE_LIMIT
from batchly_pipelines.settings import LOCAL_CLIENT_ID, SettingsError

SWEEP_BATCH = 250  # realms per sweep_webhook_realms run


def _number(env: Mapping[str, str], variable: str, expected: str) -> float | None:
    text = env.get(variable, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SettingsError(variable, expected, text)
    return value


def repair_every(environ: Mapping[str, str] | None = None) -> timedelta:
    """How often each realm is swept: ``BATCHLY_WEBHOOK_REPAIR_MINUTES`` (default 15)."""
    env = os.environ if environ is None else environ
    minutes = _number(env, "BATCHLY_WEBHOOK_REPAIR_MINUTES", "minutes between CDC sweeps, more than 0")
    return REPAIR_EVERY if minutes is None else timedelta(minutes=minutes)


def sweep_batch(environ: Mapping[str, str] | None = None) -> int:
    """How many realms one ``sweep_webhook_realms`` run sweeps at most: ``BATCHLY_WEBHOOK_SWEEP_BATCH`` (250)."""
    env = os.environ if environ is None else environ
    expected = "realms per sweep run, a whole number more than 0"
    size = _number(env, "BATCHLY_WEBHOOK_SWEEP_BATCH", expected)
    if size is None:
        return SWEEP_BATCH
    if size != int(size):
        raise SettingsError(
            "BATCHLY_WEBHOOK_SWEEP_BATCH", expected, env["BATCHLY_WEBHOOK_SWEEP_BATCH"].strip()
        )
    return int(size)


def silence_limit(environ: Mapping[str, str] | None = None) -> timedelta:
    """How long a connected realm may send nothing before ``webhooks_flowing`` fails:
    ``BATCHLY_WEBHOOK_SILENCE_HOURS`` (default 24)."""
    env = os.environ if environ is None else environ
    hours = _number(env, "BATCHLY_WEBHOOK_SILENCE_HOURS", "hours without an event, more than 0")
    return SILENCE_LIMIT if hours is None else timedelta(hours=hours)


def read_quota(environ: Mapping[str, str] | None = None) -> int:
    """The app's monthly QuickBooks read quota: ``BATCHLY_READ_QUOTA`` (default 500,000, Intuit's Builder tier)."""
    return monthly_quota(environ)


def app_id(environ: Mapping[str, str] | None = None) -> str:
    """The Intuit app whose reads are metered: its OAuth client id (``QBO_CLIENT_ID``; the sandbox's locally)."""
    env = os.environ if environ is None else environ
    return env.get("QBO_CLIENT_ID") or LOCAL_CLIENT_ID
