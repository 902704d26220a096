"""Sandbox throughput with throttling off: simple reads per second and 30-write batch calls per minute.

Starts ``qbo-sandbox`` in this process on an ephemeral port; the clients run in separate processes (one
``requests.Session`` each) so that they do not compete with the server for this interpreter's GIL. Two timed
phases: GET of one customer by id, then batch calls of 30 customer creates.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import requests

from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.server import SandboxConfig, SandboxServer

BATCH_SIZE = 30
STARTUP_GRACE = 3.0  # seconds for the client processes to start before the measured window opens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario options."""
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--read-clients", type=int, default=4, help="concurrent reader processes")
    parser.add_argument("--batch-clients", type=int, default=2, help="concurrent batch writer processes")


def _client(
    kind: str, client_no: int, url: str, headers: dict[str, str], window: tuple[float, float]
) -> tuple[int, int]:
    """One client process: call in a loop during the wall-clock ``window``; returns (successful, failed) calls."""
    ok = failed = 0
    start, end = window
    time.sleep(max(0.0, start - time.time()))
    with requests.Session() as session:
        while time.time() < end:
            if kind == "read":
                success = session.get(url, headers=headers, timeout=30).status_code == 200
            else:
                items = [
                    {
                        "bId": str(n),
                        "operation": "create",
                        "Customer": {"DisplayName": f"Bench {client_no}-{ok}-{n}"},
                    }
                    for n in range(BATCH_SIZE)
                ]
                response = session.post(url, json={"BatchItemRequest": items}, headers=headers, timeout=30)
                answers = response.json().get("BatchItemResponse", []) if response.status_code == 200 else []
                success = len(answers) == BATCH_SIZE and not any("Fault" in answer for answer in answers)
            ok, failed = (ok + 1, failed) if success else (ok, failed + 1)
    return ok, failed


def _phase(kind: str, clients: int, url: str, headers: dict[str, str], seconds: float) -> tuple[int, int]:
    """Run ``clients`` client processes over the same ``seconds``-long window; returns (ok, failed)."""
    start = time.time() + STARTUP_GRACE
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=clients, mp_context=context) as pool:
        futures = [
            pool.submit(_client, kind, n, url, headers, (start, start + seconds)) for n in range(clients)
        ]
        results = [future.result() for future in futures]
    return sum(r[0] for r in results), sum(r[1] for r in results)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure ``reads_per_s`` and ``batch_calls_per_min`` (targets: ≥ 500 and ≥ 300)."""
    with SandboxServer(SandboxConfig(throttle=False)) as sandbox:
        admin = SandboxAdmin(sandbox.base_url)
        realm = admin.new_realm()
        token = admin.access_token(realm)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        api = f"{sandbox.base_url}/v3/company/{realm}"
        customer = requests.post(
            f"{api}/customer", json={"DisplayName": "Bench O'Mark"}, headers=headers, timeout=10
        )
        read_url = f"{api}/customer/{customer.json()['Customer']['Id']}"
        reads, read_failures = _phase("read", args.read_clients, read_url, headers, args.seconds)
        batches, batch_failures = _phase("batch", args.batch_clients, f"{api}/batch", headers, args.seconds)
    return {
        "reads_per_s": round(reads / args.seconds, 1),
        "batch_calls_per_min": round(batches * 60 / args.seconds, 1),
        "entity_writes_per_s": round(batches * BATCH_SIZE / args.seconds, 1),
        "read_failures": read_failures,
        "batch_failures": batch_failures,
        "read_clients": args.read_clients,
        "batch_clients": args.batch_clients,
        "seconds_per_phase": args.seconds,
    }
