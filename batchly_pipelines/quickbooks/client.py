"""The QuickBooks Online client for one realm: queries, CDC, reads by id, batched idempotent writes.

Every request goes through the realm's shared rate limiter, carries ``minorversion=75`` and a timeout, and is decoded
with exact decimals. Transient failures (connection errors, timeouts, 500/502/503/504) are retried with exponential
backoff and jitter — writes only ever with the same ``requestid``, so QuickBooks replays instead of writing twice. A 429
teaches the realm's limiter (it is raised inside the request's slot), pauses the realm for every process and is
retried without counting against the request — except a 429 to a read once the read meter says the app used up this
month's read quota: that is :class:`ReadQuotaExhausted`, raised at once. A 401 refreshes the token once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

import requests
import urllib3
import urllib3.connection
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from batchly_pipelines.quickbooks import query as q
from batchly_pipelines.quickbooks.errors import (
    AuthError,
    QboError,
    ReadQuotaExhausted,
    ReauthorizationRequired,
    ServerError,
    StaleObjectError,
    ThrottledError,
    error_from_fault,
    error_from_response,
)
from batchly_pipelines.quickbooks.wire import (
    BATCH_MAX,
    REQUEST_ID_MAX,
    assign_batch_ids,
    batch_request_id,
    decode_answer,
    format_qbo_time,
    qbo_last_updated,
)

MINOR_VERSION = "75"
CDC_CAP = 1000
SINGLE_REQUEST_ID_MAX = 50
RESERVED_QUERY_KEYS = frozenset({"startPosition", "maxResults", "totalCount"})
BATCH_VOIDABLE = frozenset({"Invoice"})  # other voids (a payment's is an update with include=void) go singly

CallKind = Literal["query", "read", "cdc", "batch", "write"]
READ_KINDS: frozenset[str] = frozenset({"query", "read", "cdc"})  # metered by Intuit per app and month
WRITE_KINDS: frozenset[str] = frozenset(
    {"batch", "write"}
)  # a batch may carry a query, but is fenced as a write
Operation = Literal["create", "update", "void"]


class TokenSource(Protocol):
    """Bearer tokens for one realm (``services.connections.RealmTokens`` in production)."""

    def access_token(self) -> str: ...

    def refresh(self, rejected_access_token: str) -> str: ...


class RateLimiter(Protocol):
    """Admission to a realm's request budget (``ratelimit.SharedRateLimiter``)."""

    def slot(self, batch: bool = False) -> AbstractContextManager[float]: ...

    def pause(self, seconds: float) -> None: ...

    def sending(self) -> None:
        """The calling thread's request (inside its slot) leaves now: its windows count it from this moment."""
        ...


class ReadMeter(Protocol):
    """Counts the metered reads QuickBooks answered (``store.read_budget.DatabaseReadMeter``)."""

    def count(self, kind: str) -> None: ...

    def exhausted(self) -> str | None:
        """Why the app's reads are blocked — this month's reads reached its quota — or ``None``."""
        ...


@dataclass(frozen=True)
class ClientConfig:
    """Timeouts, retry and concurrency settings; durations of waits are compressed by ``time_scale``."""

    time_scale: float = 1.0
    connect_timeout: float = 10.0
    read_timeout: float = 130.0  # QuickBooks gives up on a request after 120 s
    attempts: int = 6  # per request, for transient failures
    backoff_seconds: float = 0.5  # first retry waits up to this (scaled), doubling
    backoff_max_seconds: float = 30.0
    throttle_wait_seconds: float = 60.0  # a 429 without Retry-After waits for a window (scaled)
    max_throttled: int = 50  # 429s tolerated for one request before giving up
    in_flight: int = 10  # concurrent requests (the realm's limit)
    safety_lag: timedelta = timedelta(seconds=3)  # high-water marks stay this far behind the server's clock
    read_chunk: int = 1000  # ids per ``Id IN (…)`` query

    def scaled(self, seconds: float) -> float:
        """A documented duration compressed by the time scale."""
        return seconds / self.time_scale


@dataclass
class ClientStats:
    """What a client did: calls by kind, 429s, seconds waited after 429s and for rate-limit slots, retries.

    ``limit_wait_seconds`` adds up the waits of requests running at once, so it can exceed the wall-clock time.
    Thread-safe.
    """

    calls: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    limit_wait_seconds: float = 0.0
    throttle_wait_seconds: float = 0.0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        """Add to counters by name (``throttled=1``, ``retries=1``, ``limit_wait_seconds=0.2`` …)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def count_call(self, kind: str) -> None:
        """Count one HTTP call of a kind (query, read, cdc, batch, write, token)."""
        with self._lock:
            self.calls[kind] += 1

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for logs and Dagster metadata."""
        with self._lock:
            return {
                "calls": dict(self.calls),
                "calls_total": sum(self.calls.values()),
                "throttled": self.throttled,
                "limit_wait_seconds": round(self.limit_wait_seconds, 3),
                "throttle_wait_seconds": round(self.throttle_wait_seconds, 3),
                "retries": self.retries,
            }


@dataclass(frozen=True)
class QueryPage:
    """One page of a query: its rows, or ``total_count`` for ``COUNT(*)``."""

    entity: str | None
    rows: list[dict[str, Any]]
    start_position: int | None
    max_results: int | None
    total_count: int | None
    server_time: datetime | None


@dataclass(frozen=True)
class CdcResult:
    """Changes per entity since a moment, deletions included (``{"Id", "status": "Deleted", "MetaData"}``)."""

    objects: dict[str, list[dict[str, Any]]]
    high_water_mark: datetime
    calls: int

    def deleted_ids(self, entity: str) -> list[str]:
        """Ids of the entity's objects deleted in the window."""
        return [obj["Id"] for obj in self.objects.get(entity, []) if obj.get("status") == "Deleted"]


@dataclass(frozen=True)
class WriteOp:
    """One write: ``key`` is the caller's record, ``request_id`` its deterministic idempotency key."""

    key: Hashable
    entity: str
    operation: Operation
    body: dict[str, Any]
    request_id: str


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one :class:`WriteOp`; on a stale SyncToken (5010) ``current`` is the re-read object."""

    key: Hashable
    ok: bool
    entity_obj: dict[str, Any] | None = None
    error: QboError | None = None

    @property
    def current(self) -> dict[str, Any] | None:
        """The object as QuickBooks has it now, when the write failed with 5010."""
        return self.error.current if isinstance(self.error, StaleObjectError) else None


@dataclass(frozen=True)
class _Reply:
    payload: dict[str, Any]
    intuit_tid: str | None


class AnswerLost(ServerError):
    """The connection broke before QuickBooks' whole answer arrived: the request may have been applied or not."""


class WriteFenceLost(Exception):
    """The caller's write fence refused a write: whoever asked for it no longer holds the right to write."""


WriteFence = Callable[[], float]
"""Called right before every write request is sent (after any wait for a rate-limit slot). Returns the
``time.monotonic()`` instant by which the request must have left the process (the client checks it again at the last
moment and never connects for longer), or raises :class:`WriteFenceLost` to stop the write. Reads are never fenced."""


class QuickBooksClient:
    """One realm's data API. Thread-safe; up to ``config.in_flight`` requests run at once.

    ``write_fence`` (settable) is checked before every write that leaves the process, retries included.
    ``read_meter`` counts every query, read and CDC call QuickBooks answered with 200 (Intuit meters only those).
    """

    def __init__(
        self,
        realm_id: str,
        base_url: str,
        tokens: TokenSource,
        *,
        limiter: RateLimiter | None = None,
        config: ClientConfig | None = None,
        session: requests.Session | None = None,
        stats: ClientStats | None = None,
        write_fence: WriteFence | None = None,
        read_meter: ReadMeter | None = None,
    ) -> None:
        self.realm_id = realm_id
        self.read_meter = read_meter
        self.write_fence = write_fence
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.limiter = limiter
        self.config = config or ClientConfig()
        self.stats = stats or ClientStats()
        self.session = session or _pooled_session(self.config.in_flight)
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.in_flight, thread_name_prefix=f"qbo-{realm_id}"
        )

    def __repr__(self) -> str:
        return f"QuickBooksClient(realm_id={self.realm_id!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Stop the worker threads and close pooled connections."""
        self._pool.shutdown(wait=True)
        self.session.close()

    def __enter__(self) -> QuickBooksClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------------------------------------
    def query(self, statement: str) -> QueryPage:
        """Run one query statement and return its page."""
        reply = self._call("query", "POST", "query", data=statement.encode(), content_type="application/text")
        response = reply.payload.get("QueryResponse") or {}
        entity = next((key for key in response if key not in RESERVED_QUERY_KEYS), None)
        total = response.get("totalCount")
        return QueryPage(
            entity=entity,
            rows=list(response.get(entity, [])) if entity else [],
            start_position=response.get("startPosition"),
            max_results=response.get("maxResults"),
            total_count=int(total) if total is not None else None,
            server_time=_server_time(reply.payload),
        )

    def query_all(
        self, entity: str, where: Sequence[str] = (), order_by: str | None = None
    ) -> Iterator[dict]:
        """Every row matching ``where``, fetched in pages of 1000 until a short page (ordered by Id by default)."""
        for page in self._pages(entity, where, order_by or "Id"):
            yield from page.rows

    def count(self, entity: str, where: Sequence[str] = ()) -> int:
        """``COUNT(*)`` of the rows matching ``where``."""
        return self.query(q.count(entity, where)).total_count or 0

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> CdcResult:
        """Change data capture since ``changed_since`` (≤ 30 days), deletions included, past the 1000-object cap.

        A saturated answer is not a checkpoint: a group of entities is split in two and each half asked again; a
        single entity is asked again from the newest change it returned (answers are oldest first), de-duplicated.
        """
        latest: dict[str, dict[str, dict[str, Any]]] = {entity: {} for entity in entities}
        pending: list[tuple[list[str], datetime]] = [(list(entities), changed_since)]
        calls, times = 0, []
        while pending:
            group, since = pending.pop()
            reply = self._call(
                "cdc",
                "GET",
                "cdc",
                params={"entities": ",".join(group), "changedSince": format_qbo_time(since)},
            )
            calls += 1
            times.append(_server_time(reply.payload))
            returned = 0
            newest = since
            for response in reply.payload.get("CDCResponse", [{}])[0].get("QueryResponse", []):
                for entity, rows in response.items():
                    if entity in RESERVED_QUERY_KEYS or entity not in latest:
                        continue
                    for obj in rows:
                        returned += 1
                        _keep_newest(latest[entity], obj)
                        newest = max(newest, qbo_last_updated(obj))
            if returned < CDC_CAP:
                continue
            if len(group) > 1:
                middle = len(group) // 2
                pending += [(group[:middle], since), (group[middle:], since)]
            elif newest > since:
                pending.append((group, newest))
            else:
                raise QboError(
                    f"more than {CDC_CAP} {group[0]} changes share the second {since.isoformat()}; "
                    "read that second with a query instead",
                    detail="CDC saturated",
                )
        known = [t for t in times if t is not None]
        if not known:
            raise QboError("the CDC answer carried no server time")
        mark = _whole_second(min(known) - self.config.safety_lag)
        objects = {entity: sorted(rows.values(), key=_change_order) for entity, rows in latest.items()}
        return CdcResult(objects, max(mark, changed_since), calls)

    def read(self, entity: str, qbo_id: str) -> dict:
        """One object by Id (raises :class:`NotFoundError` when there is none)."""
        reply = self._call("read", "GET", f"{entity.lower()}/{qbo_id}")
        return dict(reply.payload[entity])

    def read_many(self, entity: str, ids: Iterable[str]) -> list[dict]:
        """Objects by Id through ``Id IN (…)`` queries, in chunks run concurrently (missing ids are left out)."""
        unique = list(dict.fromkeys(str(i) for i in ids))
        size = self.config.read_chunk
        chunks = [unique[i : i + size] for i in range(0, len(unique), size)]

        def fetch(chunk: list[str]) -> list[dict[str, Any]]:
            where = q.with_all_active_states(entity, [q.condition("Id", "IN", chunk)])
            return self.query(q.select(entity, where, max_results=q.MAX_RESULTS)).rows

        return [obj for rows in self._pool.map(fetch, chunks) for obj in rows]

    # -- writes ----------------------------------------------------------------------------------------------
    def write_batch(self, ops: Sequence[WriteOp], *, replay_lost: bool = True) -> list[WriteResult]:
        """Apply writes through ``/batch`` (≤ 30 per call, concurrently), one result per op in the same order.

        ``replay_lost=False``: a batch call whose answer is lost (:class:`AnswerLost`) is not replayed — each of its ops
        fails with that error, for a caller that finds what QuickBooks holds by a query (a read, not a batch call).

        Each batch call's ``requestid`` derives from its ops' ids, so a retried call is replayed, not re-executed;
        ops are chunked in the order given, so a caller that sends a failed group again in the same order gets the
        same ids (otherwise the invoice DocNumber guard has to catch a lost-but-applied create). Creates, sparse
        updates and invoice voids ride in batches; other voids go as single calls with their own ``requestid``. A
        stale SyncToken (5010) is answered with the re-read object on ``result.current``. Auth failures raise; every
        other fault is a failed result.
        """
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError("write_batch: every op needs its own key")
        for op in ops:
            _check_request_id(op.request_id, SINGLE_REQUEST_ID_MAX)
        batched = [op for op in ops if _batchable(op)]
        chunks = [batched[i : i + BATCH_MAX] for i in range(0, len(batched), BATCH_MAX)]
        singles = [op for op in ops if not _batchable(op)]
        if (
            len(chunks) == 1 and not singles
        ):  # one call: sent from the caller's thread, not queued behind others
            results = {result.key: result for result in self._write_chunk(chunks[0], replay_lost)}
            return self._with_current([results[key] for key in keys], {op.key: op for op in ops})
        futures = [self._pool.submit(self._write_chunk, chunk, replay_lost) for chunk in chunks]
        futures += [self._pool.submit(self._write_single, op) for op in singles]
        results = {result.key: result for future in futures for result in future.result()}
        return self._with_current([results[key] for key in keys], {op.key: op for op in ops})

    def _write_chunk(self, chunk: list[WriteOp], replay_lost: bool = True) -> list[WriteResult]:
        by_bid = assign_batch_ids([op.key for op in chunk])
        op_of = {op.key: op for op in chunk}
        items = [
            {"bId": bid, "operation": op_of[key].operation, op_of[key].entity: _write_body(op_of[key])}
            for bid, key in by_bid.items()
        ]
        request_id = batch_request_id(op.request_id for op in chunk)
        try:
            reply = self._call(
                "batch",
                "POST",
                "batch",
                params={"requestid": request_id},
                data=_dumps({"BatchItemRequest": items}),
                replay_lost=replay_lost,
            )
        except AuthError:
            raise
        except QboError as error:
            return [WriteResult(op.key, False, error=error) for op in chunk]
        results: dict[Hashable, WriteResult] = {}
        for item in reply.payload.get("BatchItemResponse", []):
            key = by_bid.get(str(item.get("bId")))
            if key is None:
                continue
            op = op_of[key]
            if "Fault" in item:
                fault = error_from_fault(item["Fault"], status=400, intuit_tid=reply.intuit_tid)
                results[key] = WriteResult(key, False, error=fault)
            else:
                results[key] = WriteResult(key, True, entity_obj=item.get(op.entity))
        missing = QboError("the batch answer has no item for this op", intuit_tid=reply.intuit_tid)
        return [results.get(op.key, WriteResult(op.key, False, error=missing)) for op in chunk]

    def _write_single(self, op: WriteOp) -> list[WriteResult]:
        """A void the batch endpoint does not carry (a payment's is ``operation=update&include=void``)."""
        params = {"requestid": op.request_id, "operation": "void"}
        if op.entity == "Payment":
            params.update(operation="update", include="void")
        try:
            reply = self._call(
                "write", "POST", op.entity.lower(), params=params, data=_dumps(_write_body(op))
            )
        except AuthError:
            raise
        except QboError as error:
            return [WriteResult(op.key, False, error=error)]
        return [WriteResult(op.key, True, entity_obj=reply.payload.get(op.entity))]

    def _with_current(self, results: list[WriteResult], ops: dict[Hashable, WriteOp]) -> list[WriteResult]:
        """Attach the re-read object to every 5010 result (one ``Id IN`` read per entity)."""
        stale: dict[str, dict[str, StaleObjectError]] = {}
        for result in results:
            op = ops[result.key]
            if isinstance(result.error, StaleObjectError) and op.body.get("Id"):
                stale.setdefault(op.entity, {})[str(op.body["Id"])] = result.error
        for entity, errors in stale.items():
            for obj in self.read_many(entity, errors):
                errors[obj["Id"]].current = obj
        return results

    # -- transport -------------------------------------------------------------------------------------------
    def _pages(self, entity: str, where: Sequence[str], order_by: str) -> Iterator[QueryPage]:
        start = 1
        while True:
            page = self.query(q.select(entity, where, order_by, start, q.MAX_RESULTS))
            yield page
            if len(page.rows) < q.MAX_RESULTS:
                return
            start += q.MAX_RESULTS

    def _call(
        self,
        kind: CallKind,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        replay_lost: bool = True,
    ) -> _Reply:
        """One logical request: retried on transient failures (a lost answer only with ``replay_lost``), waiting out
        429s, refreshing the token once on 401."""

        def count_retry(state: RetryCallState) -> None:
            self.stats.add(retries=1)

        retrying = Retrying(
            retry=retry_if_exception(
                lambda exc: isinstance(exc, ServerError) and (replay_lost or not isinstance(exc, AnswerLost))
            ),
            wait=wait_random_exponential(
                multiplier=self.config.scaled(self.config.backoff_seconds),
                max=self.config.scaled(self.config.backoff_max_seconds),
            ),
            stop=stop_after_attempt(self.config.attempts),
            before_sleep=count_retry,
            reraise=True,
        )

        def send(token: str) -> _Reply:
            return self._send(token, kind, method, path, params or {}, data, content_type)

        return retrying(self._through_throttle_and_auth, send)

    def _through_throttle_and_auth(self, send: Callable[[str], _Reply]) -> _Reply:
        throttled, refreshed = 0, False
        while True:
            token = self.tokens.access_token()
            try:
                return send(token)
            except ThrottledError as error:
                throttled += 1
                if throttled > self.config.max_throttled:
                    raise
                wait = error.retry_after
                if wait is None:  # Intuit sends no hint: back off from 2 s up to a whole window (scaled)
                    wait = self.config.scaled(min(self.config.throttle_wait_seconds, 2.0**throttled))
                if self.limiter is not None:
                    self.limiter.pause(wait)
                self.stats.add(throttled=1, throttle_wait_seconds=wait)
                time.sleep(wait)
            except ReauthorizationRequired:
                raise
            except AuthError as error:
                if refreshed or error.status != 401:
                    raise
                refreshed = True
                self.tokens.refresh(token)

    def _send(
        self,
        token: str,
        kind: CallKind,
        method: str,
        path: str,
        params: dict[str, str],
        data: bytes | None,
        content_type: str,
    ) -> _Reply:
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": content_type,
        }
        url = f"{self.base_url}/v3/company/{self.realm_id}/{path}"
        slot = self.limiter.slot(batch=kind == "batch") if self.limiter is not None else nullcontext(0.0)
        with slot as waited:
            self.stats.add(limit_wait_seconds=waited)
            connect_timeout = self.config.connect_timeout
            deadline: float | None = None
            if kind in WRITE_KINDS and self.write_fence is not None:
                deadline = self.write_fence()
                left = deadline - time.monotonic()  # a pause after the fence answered counts here
                if left <= 0:
                    raise WriteFenceLost("the write's lease ran out before it could be sent")
                connect_timeout = min(connect_timeout, left)
            if self.limiter is not None:
                # marked after the fence's deadline held, right before the bytes leave: a write refused because the
                # process was frozen while its lease check answered never counts as sent at the moment it resumed
                self.limiter.sending()
            self.stats.count_call(kind)
            _send_deadline.value = deadline if kind in WRITE_KINDS else None
            try:
                response = self.session.request(
                    method,
                    url,
                    params={**params, "minorversion": MINOR_VERSION},
                    data=data,
                    headers=headers,
                    timeout=(connect_timeout, self.config.read_timeout),
                )
            except _SendDeadlinePassed:
                raise WriteFenceLost(
                    "the write's lease ran out before its bytes left the process (it was paused or starved "
                    "between its lease check and the send): nothing was sent"
                ) from None
            except TRANSPORT_ERRORS as exc:
                raise AnswerLost(f"no answer from QuickBooks ({type(exc).__name__})", detail=path) from None
            finally:
                _send_deadline.value = None
            if response.status_code == 429:  # raised in the slot: the limiter learns from it, never counts it
                if kind in READ_KINDS and self.read_meter is not None:
                    self._refuse_if_quota(response)  # not a throttle: the limiter must not learn from it
                raise error_from_response(response.status_code, response.content, response.headers)
        tid = response.headers.get("intuit_tid")
        if response.status_code == 200:
            if kind in READ_KINDS and self.read_meter is not None:
                self.read_meter.count(kind)
            try:
                return _Reply(decode_answer(response.content), tid)
            except ValueError:
                raise ServerError(
                    "QuickBooks answered 200 with a body that is not JSON", intuit_tid=tid
                ) from None
        raise error_from_response(response.status_code, response.content, response.headers)

    def _refuse_if_quota(self, response: requests.Response) -> None:
        """A 429 to a read once the meter says the month's quota is used up is the quota, not a throttle (Intuit
        answers both with the same body): raise :class:`ReadQuotaExhausted`, never retried."""
        reason = self.read_meter.exhausted() if self.read_meter is not None else None
        if reason is not None:
            throttle = error_from_response(response.status_code, response.content, response.headers)
            raise ReadQuotaExhausted(
                reason, code=throttle.code, detail=throttle.detail, intuit_tid=throttle.intuit_tid, status=429
            )


# no (complete) answer: retried like any dropped connection — a connection cut in the middle of the body included
TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


_send_deadline = threading.local()  # .value: the monotonic instant the calling thread's write must leave by


class _SendDeadlinePassed(Exception):
    """A write's deadline passed before its first byte left (deliberately no OSError: urllib3 must not retry it)."""


def _check_send_deadline() -> None:
    deadline = getattr(_send_deadline, "value", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _SendDeadlinePassed()


class _DeadlineChecked:
    """Every byte of a request goes through :meth:`send`: a write whose deadline passed — its process was frozen
    (SIGSTOP, a VM pause) or starved after its lease check, while the request was built or its connection opened —
    is stopped here, right before the socket write, instead of reaching QuickBooks after another worker took over
    (an original created beside its correction, a chaos run found). What no client can close is left: the
    microseconds between this check and the system call."""

    def send(self, data: Any) -> None:
        _check_send_deadline()
        super().send(data)  # type: ignore[misc]


class _FencedHTTPConnection(_DeadlineChecked, urllib3.connection.HTTPConnection):
    pass


class _FencedHTTPSConnection(_DeadlineChecked, urllib3.connection.HTTPSConnection):
    pass


class _FencedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _FencedHTTPConnection


class _FencedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _FencedHTTPSConnection


class _FencedAdapter(HTTPAdapter):
    """requests' adapter over connections that check the write deadline before every byte they send."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _FencedHTTPPool, "https": _FencedHTTPSPool}


def _pooled_session(size: int) -> requests.Session:
    """The client's own session. A session passed in instead keeps its adapters: its writes are checked against
    their deadline only before the request is built, not again before its bytes leave."""
    session = requests.Session()
    adapter = _FencedAdapter(pool_connections=4, pool_maxsize=max(size, 10))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _server_time(payload: dict[str, Any]) -> datetime | None:
    value = payload.get("time")
    if isinstance(value, int | Decimal):
        return datetime.fromtimestamp(float(value) / 1000, UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value).astimezone(UTC)
    return None


def _whole_second(instant: datetime) -> datetime:
    return instant.replace(microsecond=0)


def _change_order(obj: dict[str, Any]) -> tuple[datetime, int]:
    return qbo_last_updated(obj), int(obj["Id"]) if str(obj["Id"]).isdigit() else 0


def _keep_newest(latest: dict[str, dict[str, Any]], obj: dict[str, Any]) -> None:
    """De-duplicate by (Id, SyncToken): keep the highest SyncToken of an Id; a deletion supersedes any version."""
    known = latest.get(obj["Id"])
    newer = known is None or (
        known.get("status") != "Deleted" and int(obj.get("SyncToken", 0)) > int(known.get("SyncToken", 0))
    )
    if newer or obj.get("status") == "Deleted":
        latest[obj["Id"]] = obj


def _batchable(op: WriteOp) -> bool:
    return op.operation in ("create", "update") or (op.operation == "void" and op.entity in BATCH_VOIDABLE)


def _write_body(op: WriteOp) -> dict[str, Any]:
    if op.operation == "void":
        return {"Id": op.body["Id"], "SyncToken": op.body["SyncToken"]}
    if op.operation == "update":
        return {"sparse": True, **op.body}
    return op.body


def _check_request_id(request_id: str, limit: int) -> None:
    if not request_id or len(request_id) > limit:
        raise ValueError(
            f"a requestid must have 1 to {limit} characters (batch ids are derived, ≤ {REQUEST_ID_MAX})"
        )


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, default=_json_number, separators=(",", ":"), ensure_ascii=False).encode()


def _json_number(value: object) -> float:
    """Decimals as JSON numbers; refused when a float would not carry the exact value."""
    if isinstance(value, Decimal):
        number = float(value)
        if Decimal(repr(number)) != value:
            raise ValueError(f"{value} cannot be sent exactly as a JSON number")
        return number
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
