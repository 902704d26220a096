"""The Dagster resource hands out clients built from the environment, like the CLI and the assets will use them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from batchly_pipelines.defs.resources import QuickBooksResource
from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.store.connections import ConnectionStore
from batchly_pipelines.store.schema import organizations
from batchly_pipelines_tests.support.quickbooks import TIME_SCALE
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxServer


def test_resource_builds_a_working_client_from_the_environment(
    engine: Engine, sandbox: SandboxServer, realm_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    url = engine.url.render_as_string(hide_password=False)
    for name, value in {
        "QBO_ENVIRONMENT": "local",
        "QBO_BASE_URL": sandbox.base_url,
        "BATCHLY_DATABASE_URL": url,
        "BATCHLY_SECRET_KEY": key,
    }.items():
        monkeypatch.setenv(name, value)
    with engine.begin() as conn:
        org = conn.execute(sa.insert(organizations).values(name="Resource Co")).inserted_primary_key[0]  # type: ignore[index]
    tokens = TokenSet.from_response(SandboxAdmin(sandbox.base_url).tokens(realm_id))
    ConnectionStore(engine, key).save(org, realm_id, "local", sandbox.base_url, tokens)

    resource = QuickBooksResource(time_scale=TIME_SCALE)
    with resource.client_for(org) as client:
        assert client.realm_id == realm_id and client.count("Account") > 0
        assert client.config.time_scale == TIME_SCALE
    assert tokens.access_token not in repr(resource) and key not in repr(resource)
