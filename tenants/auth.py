"""Tenants, their OAuth 2.0 client credentials, and the signed access tokens they obtain."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from infra.limits import RATE_BURST_MAX, RATE_PER_SECOND_MAX, TENANT_RE
from tenants.models import ApiClient, Tenant

SCOPES = ("events:write", "events:read", "subscriptions", "jobs")
TOKEN_ISSUER = "eventcollector"
TOKEN_ALGORITHM = "HS256"
_CLOCK_SKEW = 30  # seconds of iat in the future tolerated


class AuthError(Exception):
    """Base of this module's errors."""


class TenantExists(AuthError):
    pass


class InvalidTenantName(AuthError):
    pass


class UnknownTenant(AuthError):
    pass


class InvalidClient(AuthError):
    """Unknown client id, wrong secret, or inactive client."""


class InvalidScope(AuthError):
    pass


class InvalidRateLimit(AuthError):
    """A rate limit outside what the limiter (and the tenants table) can hold."""


class InvalidToken(AuthError):
    """Missing, malformed, forged or expired token; the message says which, never the token."""


@dataclass(frozen=True)
class Credentials:
    tenant: str
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    tenant: str
    client_id: str
    scopes: frozenset[str]
    # What store.revocation checks: the token's jti and the generation it carries (``gen``;
    # absent = 0) of its client's secret, or of the operator keys for ``cli:`` tokens.
    jti: str = ""
    generation: int = 0


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        secret.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(digest.hex(), digest_hex)


def parse_scopes(raw: str | list[str] | None) -> frozenset[str]:
    """Scopes from a space-separated string or a list; None means every scope."""
    if raw is None:
        return frozenset(SCOPES)
    items = raw.split() if isinstance(raw, str) else [s for part in raw for s in part.split()]
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise InvalidScope(f"unknown scope(s): {', '.join(unknown)}; allowed: {' '.join(SCOPES)}")
    return frozenset(items) if items else frozenset(SCOPES)


def create_tenant(session: Session, name: str) -> Credentials:
    """Create a tenant with one client holding every scope; the secret is shown only here."""
    if not TENANT_RE.fullmatch(name):
        raise InvalidTenantName(
            "tenant names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    now = datetime.now(UTC)
    session.add(Tenant(name=name, created_at=now))
    try:
        session.flush()
    except IntegrityError:  # the caller's unit of work rolls back
        raise TenantExists(f"tenant {name!r} already exists") from None
    return _new_client(session, name, now)


def add_client(session: Session, tenant: str) -> Credentials:
    """Issue another client id/secret for an existing tenant."""
    if session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one_or_none() is None:
        raise UnknownTenant(f"no tenant named {tenant!r}")
    return _new_client(session, tenant, datetime.now(UTC))


def new_secret() -> tuple[str, str]:
    """A fresh client secret (shown once) and the hash kept of it (a new client's, a rotation's)."""
    secret = secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


def _new_client(session: Session, tenant: str, now: datetime) -> Credentials:
    client_id = "ec_" + secrets.token_hex(12)
    client_secret, secret_hash = new_secret()
    session.add(
        ApiClient(
            client_id=client_id,
            tenant=tenant,
            secret_hash=secret_hash,
            scopes=" ".join(SCOPES),
            active=True,
            created_at=now,
        )
    )
    return Credentials(tenant=tenant, client_id=client_id, client_secret=client_secret)


def tenant_exists(session: Session, tenant: str) -> bool:
    return (
        session.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one_or_none()
        is not None
    )


def authenticate_client(session: Session, client_id: str, client_secret: str, *,
                        fingerprint_key: str | None = None,
                        slow_check: SlowCheck | None = None) -> ApiClient:
    """The active client ``client_id`` whose secret is ``client_secret``, or InvalidClient.

    With ``fingerprint_key`` a wrong secret is refused by its fingerprint, without the slow hash
    (``verify_client_secret``). ``slow_check`` runs the scrypt check (default ``check_secret``;
    the web process passes one bounded per process)."""
    client = session.get(ApiClient, client_id)
    if not verify_client_secret(session, client, client_secret, fingerprint_key=fingerprint_key,
                                slow_check=slow_check or check_secret):
        raise InvalidClient("invalid client credentials")
    assert client is not None
    return client


# --- cheap refusal of wrong secrets (issue 13) -------------------------------------------------
#
# Beside the scrypt hash each client keeps a fingerprint of its secret: HMAC-SHA256 under a key
# derived from EC_TOKEN_SECRET, prefixed with that key's id. A secret whose fingerprint differs
# is wrong and is refused without the slow hash, so a flood of wrong secrets costs an HMAC each;
# a matching one is still confirmed by scrypt. A missing fingerprint, or one made under another
# key (EC_TOKEN_SECRET rotated), is ignored: the slow hash decides and, on success, the
# fingerprint is (re)written. An unknown or inactive client id goes through the same steps
# against a dummy hash and a dummy fingerprint, so it does the same work as a wrong secret.

SlowCheck = Callable[[str, str], bool]
_dummy: dict[str, str] = {}


def _fingerprint_key_id(fingerprint_key: str) -> tuple[bytes, str]:
    key = hmac.new(fingerprint_key.encode(), b"ec client secret fingerprint", "sha256").digest()
    return key, hashlib.sha256(key).hexdigest()[:8]


def secret_fingerprint(fingerprint_key: str, secret: str) -> str:
    key, key_id = _fingerprint_key_id(fingerprint_key)
    return f"{key_id}${hmac.new(key, secret.encode(), 'sha256').hexdigest()}"


def _dummy_hash() -> str:
    if "hash" not in _dummy:  # a hash of a secret nobody knows, with real parameters
        _dummy["hash"] = hash_secret(secrets.token_urlsafe(32))
    return _dummy["hash"]


def verify_client_secret(session: Session, client: ApiClient | None, secret: str, *,
                         fingerprint_key: str | None, slow_check: SlowCheck) -> bool:
    """True when ``client`` is active and ``secret`` is its secret (see above)."""
    known = client is not None and client.active
    stored_hash = client.secret_hash if known and client is not None else _dummy_hash()
    fingerprint = None
    if fingerprint_key:
        fingerprint = secret_fingerprint(fingerprint_key, secret)
        key_id = fingerprint.partition("$")[0]
        expected = (client.secret_fingerprint if known and client is not None
                    else f"{key_id}${'0' * 64}")
        if expected and expected.partition("$")[0] == key_id:
            if not hmac.compare_digest(expected, fingerprint):
                return False
    ok = slow_check(secret, stored_hash) and known
    if ok and client is not None and fingerprint and client.secret_fingerprint != fingerprint:
        client.secret_fingerprint = fingerprint  # lazily backfilled (the caller commits)
    return ok


def mint_token(
    secret: str,
    *,
    tenant: str,
    client_id: str,
    scopes: frozenset[str],
    ttl_seconds: int,
    now: float | None = None,
    generation: int = 0,
) -> str:
    """Return a signed JWT carrying the tenant and scopes, valid for ``ttl_seconds``, and
    ``generation`` (store.revocation) as ``gen``."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": TOKEN_ISSUER,
        "sub": client_id,
        "tenant": tenant,
        "scope": " ".join(sorted(scopes)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": secrets.token_hex(8),
        "gen": generation,
    }
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


# Tokens already verified, with their expiry: a connector sends the same token with every
# request, and checking its signature again was 13 % of a web worker's CPU (bench B1). Only
# successes are kept; a hit re-checks the expiry (nbf and iat only move further into the past).
_VERIFIED: OrderedDict[tuple[str, str], tuple[Principal, float]] = OrderedDict()
_VERIFIED_MAX = 4096
_verified_lock = threading.Lock()


def verify_token(secret: str, token: str) -> Principal:
    """Check signature, algorithm, issuer, expiry and iat; return who the token speaks for."""
    key = (secret, token)
    hit = _VERIFIED.get(key)
    if hit is not None:
        if time.time() < hit[1] + _CLOCK_SKEW:
            return hit[0]
        with _verified_lock:
            _VERIFIED.pop(key, None)
        raise InvalidToken("the access token has expired")
    principal, expires = _verify(secret, token)
    with _verified_lock:
        _VERIFIED[key] = (principal, expires)
        while len(_VERIFIED) > _VERIFIED_MAX:
            _VERIFIED.popitem(last=False)
    return principal


def _verify(secret: str, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[TOKEN_ALGORITHM],
            issuer=TOKEN_ISSUER,
            leeway=_CLOCK_SKEW,
            options={"require": ["exp", "iat", "iss", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired") from None
    except jwt.PyJWTError:
        raise InvalidToken("the access token is invalid") from None
    if not isinstance(claims.get("iat"), int) or claims["iat"] > time.time() + _CLOCK_SKEW:
        raise InvalidToken("the access token is invalid")
    tenant = claims.get("tenant")
    scope = claims.get("scope", "")
    generation = claims.get("gen", 0)
    if not isinstance(tenant, str) or not isinstance(scope, str) or \
            not isinstance(generation, int) or isinstance(generation, bool):
        raise InvalidToken("the access token is invalid")
    principal = Principal(tenant=tenant, client_id=str(claims["sub"]),
                          scopes=frozenset(scope.split()), jti=str(claims.get("jti", "")),
                          generation=generation)
    return principal, float(claims["exp"])


def set_rate_limit(session: Session, tenant: str, per_second: float | None,
                   burst: int | None) -> None:
    """Set (or, with None, reset to the defaults) a tenant's request rate limit: 0 (no limit) to
    RATE_PER_SECOND_MAX requests/s, a burst of 1 to RATE_BURST_MAX."""
    if per_second is not None and not (math.isfinite(per_second)
                                       and 0 <= per_second <= RATE_PER_SECOND_MAX):
        raise InvalidRateLimit(f"--per-second must be 0 to {RATE_PER_SECOND_MAX}")
    if burst is not None and not 1 <= burst <= RATE_BURST_MAX:
        raise InvalidRateLimit(f"--burst must be 1 to {RATE_BURST_MAX}")
    row = session.execute(select(Tenant).where(Tenant.name == tenant)).scalar_one_or_none()
    if row is None:
        raise UnknownTenant(f"no tenant named {tenant!r}")
    row.rate_per_second = per_second
    row.rate_burst = burst


def rate_limits(session: Session, tenant: str) -> tuple[float | None, int | None]:
    row = session.execute(
        select(Tenant.rate_per_second, Tenant.rate_burst).where(Tenant.name == tenant)
    ).first()
    return (row[0], row[1]) if row else (None, None)
