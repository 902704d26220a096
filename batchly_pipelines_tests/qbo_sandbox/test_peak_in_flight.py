"""The sandbox counts each realm's peak of requests in flight (``peak_in_flight``), which the night benchmark reports
as the most concurrent requests any realm saw."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from batchly_pipelines_tests.support.sandbox_client import Qbo
from qbo_sandbox.server import SandboxConfig, SandboxServer


def test_the_peak_of_concurrent_requests_is_counted_per_realm() -> None:
    with SandboxServer(SandboxConfig(port=0, throttle=True)) as sandbox:
        busy, quiet = Qbo(sandbox), Qbo(sandbox)
        busy.admin.set_faults(busy.realm_id, slow=1.0, slow_ms=400)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: busy.get("companyinfo/" + busy.realm_id).status_code, range(4)))
        assert quiet.get("companyinfo/" + quiet.realm_id).status_code == 200
        realms = busy.admin.counters()["realms"]
    assert answers == [200] * 4
    assert realms[busy.realm_id]["peak_in_flight"] == 4
    assert realms[quiet.realm_id]["peak_in_flight"] == 1
