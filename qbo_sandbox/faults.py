"""Per-realm fault injection: 500/503 answers, slow answers, connections dropped after a write or a token refresh
was applied."""

from __future__ import annotations

import random
import time
from dataclasses import fields
from typing import Any

from qbo_sandbox.clock import Clock
from qbo_sandbox.state import FaultConfig, Realm
from qbo_sandbox.wire import Response, fault_response, system_fault

PROBABILITIES = ("error_500", "error_503", "drop_after_write", "token_drop_after_refresh", "slow")


def configure(realm: Realm, payload: dict[str, Any]) -> FaultConfig:
    """Replace a realm's fault settings (unknown keys and probabilities outside [0, 1] are rejected)."""
    known = {f.name for f in fields(FaultConfig)}
    unknown = set(payload) - known
    if unknown:
        raise ValueError(f"unknown fault settings: {sorted(unknown)}")
    config = FaultConfig(**payload)
    for name in PROBABILITIES:
        value = float(getattr(config, name))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability")
        setattr(config, name, value)
    with realm.lock:
        realm.faults = config
        realm.rng = random.Random(config.seed)
        realm.pinned_second = None
    return config


def roll(realm: Realm, name: str) -> bool:
    """Draw from the realm's seedable RNG: does the fault ``name`` happen to this request?"""
    probability = getattr(realm.faults, name)
    if probability <= 0:
        return False
    with realm.lock:
        return realm.rng.random() < probability


def before_request(realm: Realm, clock: Clock) -> Response | None:
    """Sleep for a slow answer, or answer 500 / 503 instead of executing the request."""
    if roll(realm, "slow"):
        time.sleep(clock.scaled(realm.faults.slow_ms / 1000.0))
    if roll(realm, "error_503"):
        body = b"<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>"
        return Response(503, body, "text/html")
    if roll(realm, "error_500"):
        detail = "System Failure Error: An unexpected error occurred while accessing or saving your data."
        return fault_response(system_fault(detail), clock.now_dt())
    return None
