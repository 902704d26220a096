"""OpenID Connect on top of the sandbox's OAuth: an RS256 signing key, its JWKS document, ID tokens and the userinfo
claims — in pure Python (the sandbox needs only the standard library).

Intuit answers an ``authorization_code`` exchange whose grant asked for the ``openid`` scope with an ``id_token``: a
JWT signed with RS256 by a key published at ``jwks_uri``, with claims ``sub``, ``aud`` (a list holding the client id),
``realmid``, ``auth_time``, ``iss``, ``iat`` and ``exp``. The userinfo endpoint answers the claims the grant's scopes
allow (``email``, ``profile``, ``phone``, ``address``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

OPENID_SCOPES = ("openid", "email", "profile", "phone", "address")
KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
# DER prefix of the DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1)
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, math.isqrt(p) + 1, 2))]


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def _probable_prime(candidate: int, rounds: int = 40) -> bool:
    """Trial division by small primes, then Miller-Rabin with random bases."""
    for p in _SMALL_PRIMES:
        if candidate % p == 0:
            return candidate == p
    d, s = candidate - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(candidate - 3) + 2, d, candidate)
        if x in (1, candidate - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, candidate)
            if x == candidate - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    """A random prime of exactly ``bits`` bits whose top two bits are set (so p·q has 2·bits bits)."""
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if _probable_prime(candidate):
            return candidate


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair for RS256 (RSASSA-PKCS1-v1_5 with SHA-256)."""

    kid: str
    n: int
    e: int
    d: int

    @classmethod
    def generate(cls, bits: int = KEY_BITS) -> SigningKey:
        """A fresh key (about a second of CPU for 2048 bits)."""
        while True:
            p, q = _prime(bits // 2), _prime(bits // 2)
            phi = math.lcm(p - 1, q - 1)
            if p != q and math.gcd(PUBLIC_EXPONENT, phi) == 1:
                break
        n = p * q
        kid = hashlib.sha256(_int_bytes(n)).hexdigest()[:20]
        return cls(kid, n, PUBLIC_EXPONENT, pow(PUBLIC_EXPONENT, -1, phi))

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK."""
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": b64url(_int_bytes(self.n)),
            "e": b64url(_int_bytes(self.e)),
        }

    def sign(self, message: bytes) -> bytes:
        """The RS256 signature of ``message``."""
        size = (self.n.bit_length() + 7) // 8
        digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        encoded = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
        return pow(int.from_bytes(encoded, "big"), self.d, self.n).to_bytes(size, "big")


def jwt(key: SigningKey, claims: dict[str, Any]) -> str:
    """A compact JWS of ``claims`` signed with RS256."""
    header = {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def scopes(scope: str) -> set[str]:
    """The scopes of a space-separated ``scope`` parameter."""
    return set(scope.split())


def subject(realm_id: str) -> str:
    """The user who approved the connection: one stable id per company (its administrator)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qbo-sandbox:user:{realm_id}"))


def id_token_claims(
    issuer: str, client_id: str, realm_id: str, now: float, lifetime: float
) -> dict[str, Any]:
    """Intuit's ID token claims."""
    issued = int(now)
    return {
        "sub": subject(realm_id),
        "aud": [client_id],
        "realmid": realm_id,
        "auth_time": issued,
        "iss": issuer,
        "exp": issued + max(1, round(lifetime)),
        "iat": issued,
    }


def userinfo(realm_id: str, granted: set[str]) -> dict[str, Any]:
    """The userinfo answer for a grant's scopes (Intuit's claim names)."""
    claims: dict[str, Any] = {"sub": subject(realm_id)}
    if "email" in granted:
        claims.update(email=f"admin.{realm_id}@example.com", emailVerified=True)
    if "profile" in granted:
        claims.update(givenName="Sandbox", familyName="Administrator")
    if "phone" in granted:
        claims.update(phoneNumber="+1 6505550100", phoneNumberVerified=False)
    if "address" in granted:
        claims["address"] = {
            "streetAddress": "2700 Coast Avenue",
            "locality": "Mountain View",
            "region": "CA",
            "postalCode": "94043",
            "country": "US",
        }
    return claims
