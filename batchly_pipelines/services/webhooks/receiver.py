"""The webhook receiver: a Starlette app that verifies, parses and stores Intuit's deliveries (and nothing else).

``POST /webhooks/quickbooks``:

- ``intuit-signature`` must be base64(HMAC-SHA256(verifier token, raw body)), compared in constant time → else 401;
- a body that is not a delivery of either format → 400; a body over ``max_body_bytes`` → 413; nothing is stored;
- otherwise every event is stored in the inbox once (a replay or a repeated event is a duplicate), in one transaction,
  and the answer is 200 with the counts. Intuit wants an answer within 3 s: when the database does not commit within
  ``answer_within`` seconds (or fails) the answer is 503, so Intuit delivers again — and the retry is de-duplicated.

No QuickBooks call is made here; the inbox is drained by the targeted pull runs. ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from batchly_pipelines.services.webhooks.events import BadDelivery, WebhookEvent, parse_delivery
from batchly_pipelines.services.webhooks.intake import Intake, record_delivery
from batchly_pipelines.services.webhooks.signature import HEADER, signature_valid
from batchly_pipelines.store.db import Engine

logger = logging.getLogger(__name__)

PATH = "/webhooks/quickbooks"
ANSWER_WITHIN_SECONDS = 2.5  # Intuit gives up after 3 s
MAX_BODY_BYTES = 1_000_000

Store = Callable[[Sequence[WebhookEvent]], Intake]


class _TooLarge(Exception):
    pass


def create_app(
    engine: Engine,
    verifier_token: str,
    *,
    answer_within: float = ANSWER_WITHIN_SECONDS,
    max_body_bytes: int = MAX_BODY_BYTES,
    store: Store | None = None,
) -> Starlette:
    """The receiver for one Batchly database; ``store`` replaces the inbox write (tests)."""
    if not verifier_token:
        raise ValueError("the receiver needs the webhook verifier token")

    def record(events: Sequence[WebhookEvent]) -> Intake:
        return record_delivery(engine, events)

    write = store or record

    async def receive(request: Request) -> JSONResponse:
        try:
            body = await _body(request, max_body_bytes)
        except _TooLarge:
            return _answer(413, error=f"the body is larger than {max_body_bytes} bytes")
        if not signature_valid(verifier_token, body, request.headers.get(HEADER)):
            logger.warning("webhook delivery refused: missing or wrong %s (%d bytes)", HEADER, len(body))
            return _answer(401, error="the intuit-signature header does not match the body")
        try:
            events = parse_delivery(body)
        except BadDelivery as exc:
            logger.warning("webhook delivery refused: %s", exc)
            return _answer(400, error=str(exc))
        try:
            intake = await asyncio.wait_for(run_in_threadpool(write, events), timeout=answer_within)
        except TimeoutError:
            logger.error(
                "webhook delivery of %d event(s) not stored within %.1f s: 503", len(events), answer_within
            )
            return _answer(503, error="the inbox is busy; deliver again")
        except Exception:
            logger.exception("webhook delivery of %d event(s) could not be stored: 503", len(events))
            return _answer(503, error="the inbox could not store the delivery; deliver again")
        logger.info("webhook delivery: %s", intake.as_dict())
        return JSONResponse(intake.as_dict())

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route(PATH, receive, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


async def _body(request: Request, limit: int) -> bytes:
    """The raw body, refused once it grows past ``limit`` (whatever Content-Length claims)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, *, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)
