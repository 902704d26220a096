"""The pull's fixtures (an unthrottled sandbox, a realm and an organisation per test, a connected variant)."""

from batchly_pipelines_tests.pull.conftest import company, connected, sandbox

__all__ = ["company", "connected", "sandbox"]
