"""Helpers of the webhook tests: deliveries in both formats (built by the sandbox's own emitter), signed posts to the
receiver app without a network, and the inbox as rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message

from batchly_pipelines.quickbooks.oauth import TokenSet
from batchly_pipelines.services.webhooks.receiver import PATH
from batchly_pipelines.services.webhooks.signature import sign
from batchly_pipelines.store import schema as s
from batchly_pipelines.store.connections import ConnectionStore
from qbo_sandbox.admin_client import SandboxAdmin
from qbo_sandbox.state import Event
from qbo_sandbox.webhooks import cloudevents_payload, legacy_payload
from qbo_sandbox.wire import dumps

VERIFIER = "webhook-verifier-token"
MOMENT = datetime(2026, 12, 1, 9, 30, 15, 250000, tzinfo=UTC)


def change(
    realm_id: str, entity: str, entity_id: str, operation: str = "Update", at: datetime = MOMENT
) -> Event:
    """One change as the sandbox's emitter reports it."""
    return Event(realm_id, entity, entity_id, operation, at)


def legacy(*changes: Event) -> bytes:
    """A legacy ``eventNotifications`` delivery, exactly as the sandbox sends it."""
    return dumps(legacy_payload(list(changes)))


def cloudevents(*changes: Event) -> bytes:
    """A CloudEvents array delivery, exactly as the sandbox sends it (each event gets a new id)."""
    return dumps(cloudevents_payload(list(changes)))


@dataclass(frozen=True)
class Answer:
    """The receiver's answer."""

    status: int
    body: dict[str, Any]


def post(
    app: ASGIApp,
    body: bytes,
    *,
    signature: str | None = None,
    token: str = VERIFIER,
    path: str = PATH,
    method: str = "POST",
) -> Answer:
    """Deliver ``body`` to the app over ASGI, signed with ``token`` unless ``signature`` is given ("" sends none)."""
    header = sign(token, body) if signature is None else signature
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if header:
        headers.append((b"intuit-signature", header.encode()))
    return asyncio.run(_call(app, method, path, headers, body))


async def _call(
    app: ASGIApp, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8767),
    }
    sent = False
    messages: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    try:
        return Answer(status, json.loads(content) if content else {})
    except ValueError:
        return Answer(status, {"text": content.decode()})


def inbox(engine: Engine) -> list[dict[str, Any]]:
    """Every inbox row, oldest first."""
    with engine.connect() as conn:
        table = s.qbo_webhook_events
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


def connect(engine: Engine, organization_id: int, realm_id: str, base_url: str, secret_key: str) -> None:
    """Connect an organisation to a sandbox realm through the token store, as ``batchly-sync connect`` does."""
    tokens = SandboxAdmin(base_url).tokens(realm_id)
    ConnectionStore(engine, secret_key).save(
        organization_id, realm_id, "local", base_url, TokenSet.from_response(tokens)
    )


def statuses(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The status of each inbox row."""
    return [row["status"] for row in rows]


def wait_until(condition: Callable[[], object], timeout: float = 10.0, every: float = 0.02) -> None:
    """Wait until ``condition()`` is true (another process or thread is making it so), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(every)
