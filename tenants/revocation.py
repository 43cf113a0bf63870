"""Revocation: disabled tenants, revoked and rotated clients, revoked tokens (by jti), and the
generation of every operator token.

An issued token is a signed JWT that any web process accepts without the database. To make a
revocation bite within a bound, every change here bumps the ``epoch`` counter in the database
in the same transaction; each web process keeps a snapshot of what is revoked
(``RevocationCache``) and looks at the epoch every ``EC_REVOCATION_CHECK_SECONDS`` (≤ 30) from a
background thread, reloading the snapshot when it moved. Every request is checked against the
snapshot (a few dict and set lookups), including requests whose token signature was already
verified (store.auth's cache of verified tokens only saves the signature check).

What a token carries for this: its ``jti``; its client id (``sub``); and ``gen``, the
generation of its client's secret when it was issued (every rotation bumps the client's), or
for operator tokens (``sub`` ``cli:…``, minted by the CLI) the operator generation that
``eventcollector token revoke --all`` bumps. A token whose ``gen`` is below the current one is
refused; tokens of a revoked (inactive) client and of a disabled tenant are refused whatever
they carry.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from infra.db import UnitOfWork
from infra.timefmt import format_time
from tenants.auth import Credentials, Principal, add_client, new_secret
from tenants.aws_identity import UnknownTenant
from tenants.models import ApiClient, RevocationCounter, RevokedToken, Tenant

log = logging.getLogger(__name__)

EPOCH = "epoch"
OPERATOR_GENERATION = "operator_generation"
OPERATOR_PREFIX = "cli:"
REVOKED = "the access token has been revoked"
# How long a paused delivery (its tenant disabled) waits before the deliver pool looks again;
# ``tenant enable`` makes them due at once.
PAUSE_RECHECK_SECONDS = 60.0


class UnknownClient(Exception):
    pass


class TenantDisabled(Exception):
    """The principal's tenant is disabled (HTTP 403 ``tenant_disabled``)."""


class TokenRevoked(Exception):
    """The token was revoked (HTTP 401)."""


# --- counters --------------------------------------------------------------------------------

def _counter(session: Session, name: str) -> int:
    value = session.execute(
        select(RevocationCounter.value).where(RevocationCounter.name == name)).scalar_one_or_none()
    return int(value or 0)


def _bump(session: Session, name: str) -> int:
    row = session.get(RevocationCounter, name)
    if row is None:
        row = RevocationCounter(name=name, value=0)
        session.add(row)
    row.value = int(row.value) + 1
    session.flush()
    return int(row.value)


def _changed(session: Session) -> None:
    """Record that what is revoked changed (every web process reloads within its interval)."""
    _bump(session, EPOCH)


# --- tenants ---------------------------------------------------------------------------------

def _tenant(session: Session, name: str) -> Tenant:
    row = session.execute(select(Tenant).where(Tenant.name == name)).scalar_one_or_none()
    if row is None:
        raise UnknownTenant(f"no tenant named {name!r}")
    return row


def disable_tenant(session: Session, name: str) -> bool:
    """Disable the tenant; False when it already was."""
    row = _tenant(session, name)
    if row.disabled_at is not None:
        return False
    row.disabled_at = datetime.now(UTC)
    _changed(session)
    return True


def enable_tenant(session: Session, name: str) -> bool:
    """Enable the tenant again; False when it was not disabled. Its paused deliveries are the
    subscriptions feature's to resume (subscriptions.deliveries.resume_paused)."""
    row = _tenant(session, name)
    if row.disabled_at is None:
        return False
    row.disabled_at = None
    _changed(session)
    return True


def disabled_tenants(session: Session, names: set[str] | None = None) -> set[str]:
    """Which of ``names`` (default: all tenants) are disabled, read from the database now."""
    stmt = select(Tenant.name).where(Tenant.disabled_at.is_not(None))
    if names is not None:
        if not names:
            return set()
        stmt = stmt.where(Tenant.name.in_(sorted(names)))
    return set(session.execute(stmt).scalars())


def disabled_tenant_names():  # type: ignore[no-untyped-def]
    """A subquery of the disabled tenants' names (for ``Job.tenant.not_in(...)``)."""
    return select(Tenant.name).where(Tenant.disabled_at.is_not(None))


# --- clients ---------------------------------------------------------------------------------

def create_client(session: Session, tenant: str) -> Credentials:
    """A new client (every scope) for the tenant (tenants.auth.add_client, as a tenant's first
    client is made); its secret is shown only here."""
    return add_client(session, tenant)


def _client(session: Session, client_id: str) -> ApiClient:
    row = session.get(ApiClient, client_id)
    if row is None:
        raise UnknownClient(f"no client {client_id!r}")
    return row


def revoke_client(session: Session, client_id: str) -> bool:
    """Revoke the client for good: no new tokens, its tokens refused. False if it already was."""
    row = _client(session, client_id)
    if not row.active:
        return False
    row.active = False
    row.revoked_at = datetime.now(UTC)
    _changed(session)
    return True


def rotate_client(session: Session, client_id: str) -> Credentials:
    """Give the client a new secret; the old secret and every token issued before stop working."""
    row = _client(session, client_id)
    if not row.active:
        raise UnknownClient(f"client {client_id!r} is revoked: create a new one")
    secret, row.secret_hash = new_secret()
    # The old secret's fingerprint would refuse the new one before its hash is checked; the new
    # fingerprint is written at the first successful token request (store.auth).
    row.secret_fingerprint = None
    row.generation = int(row.generation or 0) + 1
    row.rotated_at = datetime.now(UTC)
    tenant = row.tenant
    _changed(session)
    return Credentials(tenant=tenant, client_id=client_id, client_secret=secret)


# --- tokens ----------------------------------------------------------------------------------

def revoke_token(session: Session, jti: str, max_ttl_seconds: int) -> None:
    """Refuse the token with this jti from now on; kept until any token issued now would have
    expired (``max_ttl_seconds``: no token lives longer). Expired entries are dropped."""
    now = datetime.now(UTC)
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    row = session.get(RevokedToken, jti)
    if row is None:
        session.add(RevokedToken(jti=jti, revoked_at=now,
                                 expires_at=now + timedelta(seconds=max_ttl_seconds)))
    _changed(session)


def revoke_operator_tokens(session: Session) -> int:
    """Refuse every operator token issued so far; returns the new operator generation."""
    generation = _bump(session, OPERATOR_GENERATION)
    _changed(session)
    return generation


def operator_generation(session: Session) -> int:
    return _counter(session, OPERATOR_GENERATION)


# --- what `tenant show` lists ------------------------------------------------------------------

def access_report(session: Session, tenant: str) -> dict[str, Any]:
    """The tenant's disabled state and its clients (never a secret or its hash)."""
    row = _tenant(session, tenant)
    clients = session.execute(select(ApiClient).where(ApiClient.tenant == tenant)
                              .order_by(ApiClient.created_at, ApiClient.client_id)).scalars()
    return {
        "disabled": row.disabled_at is not None,
        "disabledAt": format_time(row.disabled_at) if row.disabled_at else None,
        "clients": [{
            "clientId": c.client_id,
            "state": "active" if c.active else "revoked",
            "createdAt": format_time(c.created_at),
            "revokedAt": format_time(c.revoked_at) if c.revoked_at else None,
            "rotatedAt": format_time(c.rotated_at) if c.rotated_at else None,
            "scopes": c.scopes,
        } for c in clients],
    }


# --- the web processes' view -----------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    epoch: int = -1
    disabled: frozenset[str] = frozenset()
    # client id → (generation, active), for clients ever rotated or revoked
    clients: dict[str, tuple[int, bool]] = field(default_factory=dict)
    jtis: frozenset[str] = frozenset()
    operator_generation: int = 0

    def check(self, principal: Principal) -> None:
        """Raise TenantDisabled or TokenRevoked when the principal's token may not be used."""
        if principal.tenant in self.disabled:
            raise TenantDisabled(f"tenant {principal.tenant!r} is disabled")
        if principal.jti and principal.jti in self.jtis:
            raise TokenRevoked(REVOKED)
        if principal.client_id.startswith(OPERATOR_PREFIX):
            if principal.generation < self.operator_generation:
                raise TokenRevoked(REVOKED)
            return
        client = self.clients.get(principal.client_id)
        if client is not None and (not client[1] or principal.generation < client[0]):
            raise TokenRevoked(REVOKED)


def current_epoch(session: Session) -> int:
    return _counter(session, EPOCH)


def load_snapshot(session: Session) -> Snapshot:
    epoch = current_epoch(session)
    now = datetime.now(UTC)
    clients = {cid: (int(gen or 0), bool(active)) for cid, gen, active in session.execute(
        select(ApiClient.client_id, ApiClient.generation, ApiClient.active).where(
            (ApiClient.generation > 0) | (ApiClient.active.is_(False)))).all()}
    return Snapshot(
        epoch=epoch,
        disabled=frozenset(disabled_tenants(session)),
        clients=clients,
        jtis=frozenset(session.execute(select(RevokedToken.jti).where(
            RevokedToken.expires_at >= now)).scalars()),
        operator_generation=operator_generation(session),
    )


class RevocationCache:
    """One process's snapshot of what is revoked, refreshed every ``interval`` seconds by a
    daemon thread (started on first use, again after a fork). The first check of a process
    waits up to ``first_wait`` seconds for the first load. While the database cannot be read
    the last snapshot stays in force (revoking needs the database too)."""

    def __init__(self, sessions: sessionmaker[Session], interval: float,
                 first_wait: float = 2.0) -> None:
        self._sessions = sessions
        self.interval = interval
        self._first_wait = first_wait
        self._snapshot = Snapshot()
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()

    def refresh(self) -> Snapshot:
        """Look at the epoch now; reload the snapshot when it moved."""
        with UnitOfWork(self._sessions) as uow:  # a reader: nothing to commit
            epoch = current_epoch(uow.session)
            if epoch != self._snapshot.epoch:
                self._snapshot = load_snapshot(uow.session)
        self._loaded.set()
        return self._snapshot

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the thread must keep going
                if self._stop.is_set():
                    return
                log.warning("revocation snapshot not refreshed: %s", type(exc).__name__,
                            exc_info=not isinstance(exc, SQLAlchemyError))
            self._loaded.set()  # tried once: requests no longer wait for it
            self._stop.wait(self.interval)

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._loaded.clear()
            threading.Thread(target=self._run, name="revocations", daemon=True).start()

    def check(self, principal: Principal) -> None:
        self._ensure_started()
        if not self._loaded.is_set():
            self._loaded.wait(self._first_wait)
        self._snapshot.check(principal)

    def stop(self) -> None:
        self._stop.set()

