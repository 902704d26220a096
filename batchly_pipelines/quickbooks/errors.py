"""Typed QuickBooks errors, parsed from every envelope Intuit answers with.

Three shapes reach a client: the data API's ``{"Fault": {"Error": [...], "type": ...}}``, the API gateway's lower-case
``{"fault": {"error": [...]}}`` (expired or invalid tokens), and the XML ``IntuitResponse`` Intuit sends for throttling
even to JSON clients. :func:`error_from_response` turns any of them (or an HTML 5xx page) into one of the classes
below, each carrying ``code``, ``message``, ``detail``, ``element``, ``intuit_tid`` and the HTTP ``status``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# Gateway details echo the start of the bearer token ("Token expired: eyJlbmMiOi..."): never keep it.
_TOKEN_ECHO = re.compile(r"(Token \w+:\s*)\S+")


class QboError(Exception):
    """A fault answered by QuickBooks (or the transport on its behalf)."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        detail: str = "",
        element: str = "",
        intuit_tid: str | None = None,
        status: int | None = None,
        fault_type: str = "",
    ) -> None:
        self.code = code
        self.message = message
        self.detail = _TOKEN_ECHO.sub(r"\1[redacted]", detail)
        self.element = element
        self.intuit_tid = intuit_tid
        self.status = status
        self.fault_type = fault_type
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [f"{self.code} {self.message}".strip()]
        if self.detail:
            parts.append(self.detail)
        if self.element:
            parts.append(f"element={self.element}")
        parts.append(f"status={self.status} intuit_tid={self.intuit_tid}")
        return "; ".join(parts)


class AuthError(QboError):
    """401 / 403: the access token is expired, invalid, revoked, or not for this company (100, 3200, 3100)."""


class ReauthorizationRequired(AuthError):
    """The refresh token no longer works: a person must connect the company again."""


class ThrottledError(QboError):
    """429 / 3001: a per-realm limit was reached. ``retry_after`` is the server's hint in seconds, if any."""

    retryable = True
    retry_after: float | None = None


class ReadQuotaExhausted(QboError):
    """429 to a read once the app's monthly read quota is used up: Intuit blocks the app's reads until the month
    resets. Its answer is the throttling body (3001 ThrottleExceeded, which limit tripped is not said), so the client
    raises this only when its read meter says the month's reads reached the quota; never retried (waiting a minute
    cannot help). The message names the app and when the month resets."""

    def __str__(self) -> str:
        return f"{self.message} (QuickBooks answered {self.status} {self.code}; intuit_tid={self.intuit_tid})"


class ValidationError(QboError):
    """400: the request was understood and refused (never retried)."""


class StaleObjectError(ValidationError):
    """5010: the SyncToken is not the current one. ``current`` holds the re-read object when the client fetched it."""

    current: dict[str, Any] | None = None


class DuplicateNameError(ValidationError):
    """6240 (names unique across Customer/Vendor/Employee) or 6140 / 6210 (duplicate document number)."""


class NotFoundError(ValidationError):
    """610: an unknown, deleted or inactive object, by id or by reference."""


class ServerError(QboError):
    """500 / 502 / 503 / 504, a SystemFault (10000), a timeout or a broken connection: retried with backoff."""

    retryable = True


TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})

_BY_CODE: dict[str, type[QboError]] = {
    "100": AuthError,
    "3200": AuthError,
    "3100": AuthError,
    "3001": ThrottledError,
    "5010": StaleObjectError,
    "6240": DuplicateNameError,
    "6140": DuplicateNameError,
    "6210": DuplicateNameError,
    "610": NotFoundError,
}


def error_class(code: str, status: int | None) -> type[QboError]:
    """The class for a fault code, falling back on the HTTP status."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status in (401, 403):
        return AuthError
    if status == 429:
        return ThrottledError
    if status in TRANSIENT_STATUSES or code == "10000":
        return ServerError
    if status is not None and status >= 500:
        return QboError
    return ValidationError


def error_from_fault(
    fault: Mapping[str, Any], *, status: int | None = None, intuit_tid: str | None = None
) -> QboError:
    """A typed error from a ``Fault`` object (either letter case), as found in envelopes and batch items."""
    errors = _get(fault, "Error") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = str(_get(first, "code") or "")
    cls = error_class(code, status)
    return cls(
        str(_get(first, "Message") or "QuickBooks fault"),
        code=code,
        detail=str(_get(first, "Detail") or ""),
        element=str(_get(first, "element") or ""),
        intuit_tid=intuit_tid,
        status=status,
        fault_type=str(_get(fault, "type") or ""),
    )


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> QboError:
    """A typed error for a non-2xx answer: JSON fault (either envelope), XML fault, or anything else (HTML 503 …).

    A throttled answer keeps the ``Retry-After`` header's seconds, if the server sent one.
    """
    intuit_tid = headers.get("intuit_tid")
    text = body.decode("utf-8", "replace").strip()
    error: QboError
    if text.startswith("<") and "IntuitResponse" in text[:200]:
        error = _xml_error(text, status, intuit_tid)
    else:
        payload = _json_or_none(text)
        fault = _get(payload, "Fault") if isinstance(payload, dict) else None
        if isinstance(fault, dict):
            error = error_from_fault(fault, status=status, intuit_tid=intuit_tid)
        else:
            cls = error_class("", status)
            snippet = re.sub(r"<[^>]+>", " ", text)
            error = cls(
                f"HTTP {status}", detail=" ".join(snippet.split())[:300], intuit_tid=intuit_tid, status=status
            )
    if isinstance(error, ThrottledError):
        error.retry_after = _seconds(headers.get("Retry-After"))
    return error


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _xml_error(text: str, status: int, intuit_tid: str | None) -> QboError:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return error_class("", status)(
            f"HTTP {status}", detail=text[:300], intuit_tid=intuit_tid, status=status
        )
    node = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Error"), None)
    fault = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Fault"), None)

    def child(name: str) -> str:
        found = (
            next((el for el in node.iter() if el.tag.rsplit("}", 1)[-1] == name), None)
            if node is not None
            else None
        )
        return (found.text or "").strip() if found is not None else ""

    code = node.get("code", "") if node is not None else ""
    cls = error_class(code, status)
    return cls(
        child("Message") or f"HTTP {status}",
        code=code,
        detail=child("Detail"),
        element=node.get("element", "") if node is not None else "",
        intuit_tid=intuit_tid,
        status=status,
        fault_type=fault.get("type", "") if fault is not None else "",
    )


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return None


def _get(mapping: Any, key: str) -> Any:
    """``mapping[key]`` trying the exact key, then lower-case (the gateway's envelope)."""
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    return mapping.get(key.lower())
