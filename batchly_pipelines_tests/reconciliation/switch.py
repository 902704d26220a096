"""An operator switching an organisation to another QuickBooks company while its full reconciliation runs."""

from __future__ import annotations

import os
from typing import Any

import pytest

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.reconciliation import company as company_module
from batchly_pipelines.store.connections import ConnectionStore, unlink_organization
from batchly_pipelines_tests.support.pull import Company
from batchly_pipelines_tests.support.sandbox_client import Qbo


def switch_after_the_read(company: Company, monkeypatch: pytest.MonkeyPatch) -> Qbo:
    """Between the reconciliation's read of the books and its repairs, the organisation is unlinked and connected
    to a new sandbox company (returned): what the old books say must then not be written."""
    other = Qbo(company.sandbox)
    real = company_module._confirm_absent

    def switched(*args: Any) -> Any:
        found = real(*args)
        unlink_organization(company.engine, company.org)
        ConnectionStore(company.engine, os.environ["BATCHLY_SECRET_KEY"]).save(
            company.org,
            other.realm_id,
            "local",
            company.sandbox.base_url,
            TokenSet.from_response(other.admin.tokens(other.realm_id)),
        )
        return found

    monkeypatch.setattr(company_module, "_confirm_absent", switched)
    return other
