"""Wire format: exact-decimal JSON, the request/response pair handlers exchange, and Intuit's fault envelopes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from qbo_sandbox.clock import envelope_time

JSON_TYPE = "application/json;charset=UTF-8"


def _encode_decimal(value: object) -> float:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# what orjson would write itself but json refuses: left to _encode_decimal (which refuses it too), as with json
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def dumps(payload: Any) -> bytes:
    """Serialise to compact UTF-8 JSON; Decimals become JSON numbers. orjson writes it (most of the sandbox's CPU
    went to ``json`` encoding pages of 1,000 objects); what orjson refuses — an unpaired surrogate, an integer beyond
    64 bits, a key that is not a string — is written by ``json`` as before."""
    try:
        return orjson.dumps(payload, default=_encode_decimal, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(
            payload, default=_encode_decimal, separators=(",", ":"), ensure_ascii=False
        ).encode()


def clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): much cheaper than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value


def loads(raw: bytes | str) -> Any:
    """Parse JSON keeping every non-integer number as a Decimal."""
    return json.loads(raw, parse_float=Decimal)


class QboError(Exception):
    """A fault answered in Intuit's ``{"Fault": {"Error": [...], "type": ...}}`` envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: str = "",
        element: str = "",
        fault_type: str = "ValidationFault",
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.fault_type = fault_type

    def fault(self) -> dict[str, Any]:
        """The ``Fault`` object (without the envelope's ``time``)."""
        error = {"Message": self.message, "Detail": self.detail, "code": self.code, "element": self.element}
        return {"Error": [error], "type": self.fault_type}


def validation(code: str, message: str, detail: str, element: str = "") -> QboError:
    """A 400 ValidationFault."""
    return QboError(400, code, message, detail, element)


def invalid(detail: str, element: str = "") -> QboError:
    """2010: an invalid or unsupported property or request."""
    return validation("2010", "Request has invalid or unsupported property", detail, element)


def unsupported(detail: str) -> QboError:
    """500 (as a 400 ValidationFault): an operation the entity does not support."""
    return validation("500", "Unsupported Operation", detail)


def required(element: str) -> QboError:
    """2020: a required field is missing."""
    return validation(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {element} is missing in the request",
        element,
    )


def not_found(entity: str, detail: str = "") -> QboError:
    """610: an unknown, deleted or inactive object (by id or by reference)."""
    return validation(
        "610",
        "Object Not Found",
        detail
        or "Object Not Found : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. ({entity})",
    )


def business(detail: str, element: str = "") -> QboError:
    """6000: a business validation error."""
    return validation(
        "6000", "A business validation error has occurred while processing your request", detail, element
    )


def too_long(element: str, limit: int) -> QboError:
    """2050: a string longer than the field allows."""
    return validation(
        "2050",
        "String length is either shorter or longer than supported by specification",
        f"String length specified does not match the supported length. Max length: {limit}",
        element,
    )


def system_fault(detail: str = "System Failure Error") -> QboError:
    """10000: an unexpected server-side error (HTTP 500, SystemFault)."""
    return QboError(
        500,
        "10000",
        "An application error has occurred while processing your request",
        detail,
        fault_type="SystemFault",
    )


def out_of_range(element: str, limit: Any) -> QboError:
    """2050: a number beyond what QuickBooks stores."""
    return validation(
        "2050",
        "Number is either smaller or larger than supported by specification",
        f"The value of {element} is out of range. Max magnitude: {limit}",
        element,
    )


def query_error(detail: str) -> QboError:
    """4000: the query could not be parsed or validated."""
    return validation("4000", "Error parsing query", detail)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


@dataclass
class Request:
    """An HTTP request as the handlers see it; header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""

    def text(self) -> str:
        """The body as UTF-8 text; undecodable bytes are a 400 fault."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid(f"The body is not UTF-8: {exc}") from exc

    def json(self) -> Any:
        """The body parsed as JSON (decimals exact); malformed JSON is a 400 fault."""
        try:
            return json.loads(self.body or b"{}", parse_float=Decimal, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise invalid(f"Malformed JSON: {exc}") from exc


@dataclass
class Response:
    """What a handler answers. ``drop`` closes the connection without sending anything."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(status, dumps(payload), JSON_TYPE, dict(headers or {}))


def fault_response(error: QboError, now: datetime) -> Response:
    """A fault in Intuit's ``{"Fault": ..., "time": ...}`` envelope, stamped with the sandbox time ``now``."""
    return json_response(error.status, {"Fault": error.fault(), "time": envelope_time(now)})
