"""The ``intuit-signature`` header: base64(HMAC-SHA256(key = the app's verifier token, message = the raw body))."""

from __future__ import annotations

import base64
import hashlib
import hmac

HEADER = "intuit-signature"


def sign(verifier_token: str, body: bytes) -> str:
    """The signature Intuit sends with ``body``."""
    return base64.b64encode(hmac.new(verifier_token.encode(), body, hashlib.sha256).digest()).decode()


def signature_valid(verifier_token: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of exactly ``body``, compared in constant time."""
    if not header:
        return False
    expected = sign(verifier_token, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))
