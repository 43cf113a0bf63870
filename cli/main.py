"""``eventcollector`` sub-commands; each builds what it needs from the environment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from config.logging import configure_logging
from config.settings import ConfigError, Settings, load_settings

_EXAMPLE = (
    '{"entity_id":"o-1","entity_name":"ORDER","event_source":"CONNECTOR",'
    '"event_type":"ENTITY_EVENT","event_payload":{"operation":"CREATE",'
    '"base64_encoded_payload_json":"eyJpZCI6ICJvLTEifQ==","key_attributes":{"correlationId":"c-1"}}}'
)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from infra.db import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print("database is at the latest revision")
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    from infra.db import UnitOfWork, make_engine, make_session_factory, upgrade
    from tenants.auth import AuthError, create_tenant

    settings = _settings()
    if settings.is_sqlite:
        upgrade(settings.database_url)  # the embedded default needs no separate step
    engine = make_engine(settings.database_url)
    try:
        with UnitOfWork(make_session_factory(engine), write=True) as uow:
            creds = create_tenant(uow.session, args.name)
            uow.commit()
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    _print_credentials(creds, args.json)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from infra.db import make_engine, make_session_factory, upgrade
    from tenants.auth import InvalidScope, mint_token, parse_scopes, tenant_exists
    from tenants.revocation import operator_generation

    settings = _settings()
    if settings.is_sqlite:
        upgrade(settings.database_url)  # a fresh embedded data dir has no tables yet
    try:
        scopes = parse_scopes(args.scope)
    except InvalidScope as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.tenant is None:
        print("error: --tenant is required", file=sys.stderr)
        return 2
    if args.ttl is not None and not 1 <= args.ttl <= settings.token_max_ttl_seconds:
        print(f"error: --ttl must be 1 to {settings.token_max_ttl_seconds} seconds "
              "(EC_TOKEN_MAX_TTL_SECONDS)", file=sys.stderr)
        return 2
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if not tenant_exists(session, args.tenant):
                print(f"error: no tenant named {args.tenant!r}", file=sys.stderr)
                return 1
            generation = operator_generation(session)
    finally:
        engine.dispose()
    ttl = args.ttl or min(settings.token_ttl_seconds, settings.token_max_ttl_seconds)
    token = mint_token(settings.token_secret, tenant=args.tenant, client_id="cli:operator",
                       scopes=scopes, ttl_seconds=ttl, generation=generation)
    print(token)
    print(f"# jti {_jti(token)}, expires in {ttl} s (eventcollector token revoke JTI)",
          file=sys.stderr)
    return 0


def _jti(token: str) -> str:
    import jwt

    return str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from tenants.revocation import revoke_operator_tokens, revoke_token

    settings = _settings()
    if bool(args.all) == bool(args.jti):
        print("error: give a JTI or --all (not both)", file=sys.stderr)
        return 2
    def revoke(session: Any) -> int:
        if args.all:
            return revoke_operator_tokens(session)
        revoke_token(session, args.jti, settings.token_max_ttl_seconds)
        return 0

    done = _tenant_session(revoke)
    if done is None:
        return 1
    print("every operator token issued so far is revoked (operator generation "
          f"{done})" if args.all else f"token {args.jti} revoked",
          f"(refused by every web process within {settings.revocation_check_seconds} s)")
    return 0


def _run_access(action):  # type: ignore[no-untyped-def]
    """``_tenant_session`` that also turns an unknown client into exit 1."""
    from tenants.auth import AuthError
    from tenants.revocation import UnknownClient

    try:
        return _tenant_session(action)
    except (UnknownClient, AuthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_tenant_disable(args: argparse.Namespace) -> int:
    from tenants.revocation import disable_tenant, enable_tenant

    settings = _settings()
    if args.tenant_command == "disable":
        changed = _run_access(lambda session: disable_tenant(session, args.name))
        if changed is None:
            return 1
        print(f"{args.name}: disabled" + ("" if changed else " (already)") + "; its requests are "
              f"refused within {settings.revocation_check_seconds} s, its deliveries and jobs "
              "pause; events already accepted are still stored")
        return 0
    from subscriptions.deliveries import resume_paused

    def enable(session: Any) -> list[int]:
        return resume_paused(session, args.name) if enable_tenant(session, args.name) else []

    ids = _run_access(enable)
    if ids is None:
        return 1
    if ids and settings.redis_url:
        from config.runtime import build_broker
        from infra.broker.dispatch import enqueue_deliveries

        try:
            enqueue_deliveries(build_broker(settings), ids)
        except Exception as exc:  # noqa: BLE001 - they are due: the pool's own messages bring them
            print(f"warning: paused deliveries not enqueued ({type(exc).__name__}); they resume "
                  "within a minute", file=sys.stderr)
    print(f"{args.name}: enabled; {len(ids)} paused deliveries resume")
    return 0


def _print_credentials(creds, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print(json.dumps({"tenant": creds.tenant, "client_id": creds.client_id,
                          "client_secret": creds.client_secret}))
        return
    print(f"tenant:        {creds.tenant}")
    print(f"client_id:     {creds.client_id}")
    print(f"client_secret: {creds.client_secret}")
    print("(the secret is stored hashed and cannot be shown again)")


def cmd_client(args: argparse.Namespace) -> int:
    from tenants.revocation import create_client, revoke_client, rotate_client

    settings = _settings()
    if args.client_command == "revoke":
        changed = _run_access(lambda session: revoke_client(session, args.client_id))
        if changed is None:
            return 1
        print(f"client {args.client_id} revoked" + ("" if changed else " (already)") +
              f"; its tokens are refused within {settings.revocation_check_seconds} s")
        return 0
    if args.client_command == "create":
        creds = _run_access(lambda session: create_client(session, args.tenant))
    else:
        creds = _run_access(lambda session: rotate_client(session, args.client_id))
    if creds is None:
        return 1
    _print_credentials(creds, args.json)
    return 0


def cmd_tenant_limits(args: argparse.Namespace) -> int:
    from infra.db import UnitOfWork, make_engine, make_session_factory
    from tenants.auth import InvalidRateLimit, UnknownTenant, set_rate_limit

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with UnitOfWork(make_session_factory(engine), write=True) as uow:
            set_rate_limit(uow.session, args.name, None if args.reset else args.per_second,
                           None if args.reset else args.burst)
            uow.commit()
    except (UnknownTenant, InvalidRateLimit) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print("limits reset to the defaults" if args.reset else
          f"{args.name}: {args.per_second} requests/s, burst {args.burst} (applies within 30 s)")
    return 0


def _tenant_session(func):  # type: ignore[no-untyped-def]
    """Run ``func(session)`` on the configured database in one writer unit of work, committed
    when it returns; unknown tenants and bad account ids exit 1 with the message."""
    from infra.db import UnitOfWork, make_engine, make_session_factory
    from tenants.aws_identity import InvalidAccount, UnknownTenant

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with UnitOfWork(make_session_factory(engine), write=True) as uow:
            result = func(uow.session)
            uow.commit()
            return result
    except (UnknownTenant, InvalidAccount) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    finally:
        engine.dispose()


def cmd_tenant_show(args: argparse.Namespace) -> int:
    from subscriptions.platform import tenant_report
    from tenants.revocation import access_report

    defaults = _settings().quotas
    report = _tenant_session(lambda session: {**tenant_report(session, args.name),
                                              **access_report(session, args.name),
                                              "quotas": _quota_report(session, args.name,
                                                                      defaults)})
    if report is None:
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    platform = report["platformCredentials"]
    counts = report["subscriptions"]
    active = sum(c["active"] for c in counts.values())
    total = active + sum(c["inactive"] for c in counts.values())
    print(f"tenant:               {report['tenant']}")
    print(f"created:              {report['createdAt']}")
    print("state:                " + (f"disabled since {report['disabledAt']}"
                                      if report["disabled"] else "enabled"))
    for client in report["clients"]:
        when = (f" since {client['revokedAt']}" if client["revokedAt"] else
                f", rotated {client['rotatedAt']}" if client["rotatedAt"] else "")
        print(f"client:               {client['clientId']}  {client['state']}{when}")
    print(f"externalId:           {report['externalId']}  (give it to the tenant for its role's "
          "trust policy: sts:ExternalId)")
    print("platform credentials: " + ("allowed for AWS accounts " + ", ".join(platform["accounts"])
                                      if platform["allowed"] else "not allowed"))
    print(f"subscriptions:        {total} ({active} active): " + ", ".join(
        f"{mode} {c['active']} active/{c['inactive']} inactive" for mode, c in counts.items()))
    rule = report["deactivatedByPlatformRule"]
    print(f"deactivated because platform credentials are not allowed: {len(rule)}")
    for sub in rule:
        print(f"  {sub['id']}  {sub['type']} {sub['target']}  at {sub['deactivatedAt']}: "
              f"{sub['reason']}")
    risk = report["platformNotAllowedYetActive"]
    if risk:
        print(f"active platform-credential subscriptions outside the allowed accounts "
              f"(deactivated at their next delivery): {len(risk)}")
        for sub in risk:
            print(f"  {sub['id']}  {sub['type']} {sub['target']}")
    _print_quotas(report["quotas"])
    return 0


def _print_quotas(quotas: dict[str, dict[str, object]]) -> None:
    print("quotas:               " + ", ".join(
        f"{name} {q['limit']} ({q['source']}"
        + (f", {q['used']} used)" if q["used"] is not None else ")")
        for name, q in quotas.items()) + "; one queued replay per subscription")


def _quota_report(session: Any, tenant: str, defaults: Any) -> dict[str, Any]:
    """The tenant's quotas with the use each feature counts."""
    from jobs.quotas import count_jobs
    from subscriptions.quotas import count_subscriptions
    from tenants.quotas import quota_report

    used: dict[str, int | None] = {"subscriptions": count_subscriptions(session, tenant),
                                   "jobs": count_jobs(session, tenant), "replay_events": None}
    return quota_report(session, tenant, defaults, used)


def cmd_tenant_quota(args: argparse.Namespace) -> int:
    from tenants.auth import UnknownTenant
    from tenants.quotas import InvalidQuota, set_quotas

    settings = _settings()
    values: dict[str, int | None] = {}
    for name in ("subscriptions", "jobs", "replay_events"):
        given = getattr(args, name)
        if given == "default" or args.reset:
            values[name] = None
        elif given is not None:
            if not (given.isascii() and given.isdigit()):  # int() would take " 5" and "٥"
                print(f"error: --{name.replace('_', '-')} must be an integer 0 to 100000000 "
                      "or 'default'", file=sys.stderr)
                return 1
            values[name] = int(given)
    if not values:
        print("error: give --subscriptions, --jobs, --replay-events (N or 'default') or --reset",
              file=sys.stderr)
        return 1

    def apply(session):  # type: ignore[no-untyped-def]
        set_quotas(session, args.name, values)
        return _quota_report(session, args.name, settings.quotas)

    try:
        report = _tenant_session(apply)
    except (UnknownTenant, InvalidQuota) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report is None:
        return 1
    print(f"{args.name}:")
    _print_quotas(report)
    return 0


def cmd_tenant_allow_platform(args: argparse.Namespace) -> int:
    from tenants.aws_identity import allow_platform_credentials

    allowed = _tenant_session(
        lambda session: allow_platform_credentials(session, args.name, args.accounts))
    if allowed is None:
        return 1
    print(f"{args.name}: platform credentials allowed for queues and topics in AWS accounts "
          + ", ".join(allowed))
    return 0


def cmd_tenant_revoke_platform(args: argparse.Namespace) -> int:
    from subscriptions.platform import revoke_platform_credentials, tenant_report

    def revoke(session):  # type: ignore[no-untyped-def]
        stopped = revoke_platform_credentials(session, args.name, args.accounts)
        return stopped, tenant_report(session, args.name)["platformCredentials"]

    done = _tenant_session(revoke)
    if done is None:
        return 1
    stopped, platform = done
    left = ("still allowed for AWS accounts " + ", ".join(platform["accounts"])
            if platform["allowed"] else "platform credentials no longer allowed")
    print(f"{args.name}: {left}; {len(stopped)} subscription(s) deactivated"
          + (": " + ", ".join(stopped) if stopped else ""))
    return 0


def _dlq_embedded(args: argparse.Namespace, settings: Settings) -> int:
    """Dead letters of the embedded default: in its database (the running eventcollector dev
    re-enqueues the ones a retry asks for, at its next scheduler tick)."""
    import dramatiq

    from infra.broker import deadletter_store as deadletters
    from infra.broker.deadletters import QUEUES, DeadLetter
    from infra.db import UnitOfWork, make_engine, make_session_factory, upgrade

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    queues = [args.queue] if args.queue else list(QUEUES)
    try:
        with UnitOfWork(make_session_factory(engine), write=True) as uow:
            session = uow.session
            for queue in queues:
                if args.dlq_command == "list":
                    for row in deadletters.listed(session, queue, args.limit):
                        letter = DeadLetter(queue, str(row.id), dramatiq.Message.decode(
                            row.message.encode()), int(row.dead_at.timestamp() * 1000))
                        print(json.dumps({**letter.summary(),
                                          "retry_requested": row.retry_requested_at is not None}))
                    print(f"# {queue}: {deadletters.count(session, queue)} dead-lettered",
                          file=sys.stderr)
                elif args.dlq_command == "retry":
                    n = deadletters.request_retry(session, queue, args.id or None)
                    uow.commit()
                    print(f"{queue}: re-enqueue requested for {n} (eventcollector dev does it "
                          f"within a scheduler tick)")
                else:
                    if not args.yes:
                        print("error: purge deletes messages for good; add --yes",
                              file=sys.stderr)
                        return 1
                    purged = deadletters.purge(session, queue)
                    uow.commit()
                    print(f"{queue}: purged {purged}")
    finally:
        engine.dispose()
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from config.runtime import build_broker, build_redis
    from infra.broker.deadletters import QUEUES, DeadLetters

    settings = _settings()
    if not settings.redis_url:
        return _dlq_embedded(args, settings)
    letters = DeadLetters(build_redis(settings), build_broker(settings))
    queues = [args.queue] if args.queue else list(QUEUES)
    if args.dlq_command == "list":
        for queue in queues:
            for letter in letters.list(queue, limit=args.limit):
                print(json.dumps(letter.summary()))
            print(f"# {queue}: {letters.size(queue)} dead-lettered", file=sys.stderr)
    elif args.dlq_command == "retry":
        for queue in queues:
            n = letters.retry(queue, args.id or None)
            print(f"{queue}: re-enqueued {n}")
    else:
        if not args.yes:
            print("error: purge deletes messages for good; add --yes", file=sys.stderr)
            return 1
        for queue in queues:
            print(f"{queue}: purged {letters.purge(queue)}")
    return 0


def _quarantined(sessions: Any, args: argparse.Namespace, limit: int | None) -> list[Any]:
    """The quarantine rows ``args`` selects (--tenant, --id), oldest first, up to ``limit``."""
    from events.quarantine import list_quarantined

    rows: list[Any] = []
    from_id = None
    while limit is None or len(rows) < limit:
        size = 500 if limit is None else min(500, limit - len(rows))
        with sessions() as session:
            page = list_quarantined(session, tenant=args.tenant, event_ids=args.id or None,
                                    from_id=from_id, per_page=size)
        rows += page.rows
        if page.next_from_id is None:
            break
        from_id = page.next_from_id
    return rows


def cmd_quarantine(args: argparse.Namespace) -> int:
    from events.quarantine import details, document_of, purge
    from infra.db import UnitOfWork, make_engine, make_session_factory, upgrade

    settings = _settings()
    if settings.is_sqlite:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    try:
        if args.quarantine_command == "list":
            rows = _quarantined(sessions, args, args.limit)
            for row in rows:
                entry = {"tenant": row.tenant, "event_id": row.event_id, **details(row)}
                if args.documents:
                    entry["document"] = document_of(row)
                print(json.dumps(entry))
            print(f"# {len(rows)} quarantined event(s) listed", file=sys.stderr)
            return 0
        if args.quarantine_command == "purge":
            if not args.yes:
                print("error: purge deletes quarantined events for good (they were accepted with "
                      "a 201 and are stored nowhere else); add --yes", file=sys.stderr)
                return 1
            with UnitOfWork(sessions, write=True) as uow:
                purged = purge(uow.session, tenant=args.tenant, event_ids=args.id or None)
                uow.commit()
            print(f"purged {purged}")
            return 0
        return _redrive(settings, sessions, _quarantined(sessions, args, None))
    finally:
        engine.dispose()


def _redrive(settings: Settings, sessions: Any, rows: list[Any]) -> int:
    """Store the rows' events again through the persist path; 0 when all are stored."""
    from events.quarantine import document_of
    from infra.broker.dispatch import enqueue_deliveries
    from subscriptions.matching import IndexCache
    from subscriptions.persist import redrive

    broker = None
    if settings.redis_url:
        from config.runtime import build_broker

        broker = build_broker(settings)
    deferred: list[int] = []

    def send(due: list[int]) -> None:
        try:
            if broker is None:
                raise RuntimeError("no REDIS_URL")
            enqueue_deliveries(broker, due)
        except Exception as exc:  # noqa: BLE001 - the deliveries are committed: swept later
            deferred.extend(due)
            print(f"warning: {len(due)} deliveries not enqueued ({type(exc).__name__}); the "
                  "scheduler's sweep sends them (EC_DELIVERY_SWEEP_AFTER_SECONDS)",
                  file=sys.stderr)

    indexes = IndexCache()
    counts = {"stored": 0, "quarantined": 0}
    for start in range(0, len(rows), 1000):
        chunk = rows[start:start + 1000]
        outcome = redrive(sessions, indexes,
                          [(r.tenant, document_of(r)) for r in chunk], after_commit=send)
        reasons: dict[tuple[str, str], str] = {}
        if any(v == "quarantined" for v in outcome.values()):
            again = _quarantined(sessions, argparse.Namespace(
                tenant=None, id=[k[1] for k, v in outcome.items() if v == "quarantined"]), None)
            reasons = {(r.tenant, r.event_id): r.reason for r in again}
        for (tenant, event_id), status in outcome.items():
            counts[status] += 1
            line = {"tenant": tenant, "event_id": event_id, "status": status}
            if status == "quarantined":
                line["reason"] = reasons.get((tenant, event_id), "")
            print(json.dumps(line))
    print(f"# stored {counts['stored']}, still quarantined {counts['quarantined']}",
          file=sys.stderr)
    return 0 if counts["quarantined"] == 0 else 1


class StartupError(RuntimeError):
    """A start-up failure the user can fix; the message is one line that says how."""


def _address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def cmd_dev(args: argparse.Namespace) -> int:
    import dramatiq
    from werkzeug.serving import WSGIRequestHandler, make_server

    from api.app import create_app
    from config.runtime import build_runtime
    from infra.broker.queues import PERSIST_QUEUE
    from infra.db import UnitOfWork, upgrade
    from scheduler.loop import run_forever
    from tenants.auth import SCOPES, create_tenant, mint_token, tenant_exists
    from tenants.revocation import operator_generation
    from workers.main import declare_actors

    class _QuietRequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # the app logs each request once (api/observability.py)

    settings = dataclasses.replace(_settings(), redis_url=None, port=args.port)
    # Human-readable unless LOG_FORMAT says json; one line per request (the app's), so werkzeug's
    # own access line is left out.
    configure_logging(settings.log_level, settings.log_format, default="text")
    upgrade(settings.database_url)
    runtime = build_runtime(settings)
    app = create_app(runtime=runtime)
    # Bound here, not by werkzeug (which prints its own advice and exits on a port in use).
    try:
        listener = socket.create_server((args.host, args.port), backlog=128,
                                        family=_address_family(args.host))
    except OSError as exc:
        runtime.close()
        raise StartupError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose another "
            f"port with --port (and the interface with --host), e.g. eventcollector dev "
            f"--port {args.port + 1}") from None
    server = make_server(args.host, args.port, app, threaded=True,
                         request_handler=_QuietRequestHandler, fd=listener.fileno())
    # The demo tenant first, before the pools and the scheduler write to the same SQLite file;
    # as a writer from the start (a read then a write fails on SQLite if another wrote between).
    with UnitOfWork(runtime.sessions, write=True) as uow:
        if not tenant_exists(uow.session, args.tenant):
            creds = create_tenant(uow.session, args.tenant)
            uow.commit()
            print(f"created tenant {creds.tenant!r}: client_id={creds.client_id} "
                  f"client_secret={creds.client_secret} (shown once)")
    dramatiq.set_broker(runtime.broker)
    declare_actors(runtime)
    worker = dramatiq.Worker(runtime.broker, worker_threads=4)
    worker.start()
    stop_scheduler = threading.Event()
    scheduler = threading.Thread(
        target=run_forever, name="scheduler", daemon=True,
        kwargs={"sessions": runtime.sessions, "broker": runtime.broker,
                "interval": settings.scheduler_tick_seconds, "stop": stop_scheduler,
                "sweep_after": settings.delivery_sweep_after_seconds,
                "redrive_dead_letters": True})
    scheduler.start()
    mail_note = ("SendGrid" if settings.sendgrid_api_key else
                 "no SENDGRID_API_KEY: e-mails are written to this log instead")

    dev_ttl = min(86400, settings.token_max_ttl_seconds)
    with runtime.sessions() as session:
        generation = operator_generation(session)
    token = mint_token(settings.token_secret, tenant=args.tenant, client_id="cli:dev",
                       scopes=frozenset(SCOPES), ttl_seconds=dev_ttl, generation=generation)

    base = f"http://{args.host}:{listener.getsockname()[1]}"
    print(f"""
Event Collector (embedded: {settings.database_url}; in-process broker, persist, deliver and
notify pools, scheduler; mail: {mail_note})
listening on {base}   docs: {base}/docs
token for tenant {args.tenant!r} ({dev_ttl} s):
export TOKEN={token}
curl -s -X POST {base}/api/v1/events -H "Authorization: Bearer $TOKEN" \\
  -H "X-TWC-Tenant: {args.tenant}" -H "Content-Type: application/json" \\
  -d '{_EXAMPLE}'
""", flush=True)

    def _stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop_scheduler.set()
        scheduler.join(10)
        # The in-process queue lives in memory: drain it before leaving.
        try:
            runtime.broker.join(PERSIST_QUEUE, timeout=20_000)
            worker.join()
        except Exception as exc:  # noqa: BLE001
            print(f"warning: stopping with unpersisted events: {exc}", file=sys.stderr)
        worker.stop()
        runtime.close()
        print("stopped", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventcollector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the API, every pool and the scheduler in one process")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--tenant", default="demo", help="tenant to create and mint a token for")
    dev.set_defaults(func=cmd_dev)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate to the latest revision").set_defaults(
        func=cmd_db_upgrade)

    tenant = sub.add_parser("tenant", help="manage tenants")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_sub.add_parser("create", help="create a tenant and print its client")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_tenant_create)

    limits = tenant_sub.add_parser("limits", help="set a tenant's request rate limit")
    limits.add_argument("name")
    limits.add_argument("--per-second", type=float, default=None)
    limits.add_argument("--burst", type=int, default=None)
    limits.add_argument("--reset", action="store_true", help="back to the deployment defaults")
    limits.set_defaults(func=cmd_tenant_limits)

    for name, text in (("disable", "refuse the tenant's requests and tokens (within "
                                   "EC_REVOCATION_CHECK_SECONDS); its deliveries and jobs pause; "
                                   "events already accepted are still stored"),
                       ("enable", "enable a disabled tenant again; its paused deliveries resume")):
        cmd = tenant_sub.add_parser(name, help=text)
        cmd.add_argument("name")
        cmd.set_defaults(func=cmd_tenant_disable)

    show = tenant_sub.add_parser(
        "show", help="a tenant's state (enabled or disabled), its clients (active or revoked; never a "
        "secret), its AWS identity: its ExternalId, whether it may use the platform's "
        "credentials (and for which accounts), its subscriptions by credential mode, and those "
        "deactivated because platform credentials are not allowed")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_tenant_show)

    quota = tenant_sub.add_parser(
        "quota", help="set a tenant's quotas (N, or 'default' for the deployment's EC_QUOTA_*)")
    quota.add_argument("name")
    quota.add_argument("--subscriptions", help="subscriptions it may hold (active or not)")
    quota.add_argument("--jobs", help="jobs it may hold (deleted ones not counted)")
    quota.add_argument("--replay-events", dest="replay_events",
                       help="events one replay may cover")
    quota.add_argument("--reset", action="store_true", help="every quota back to the defaults")
    quota.set_defaults(func=cmd_tenant_quota)

    allow = tenant_sub.add_parser(
        "allow-platform-credentials",
        help="let a tenant's subscriptions use the platform's own AWS credentials, only for "
        "queues and topics in these AWS accounts (added to any already allowed)")
    allow.add_argument("name")
    allow.add_argument("--accounts", action="append", required=True,
                       help="12-digit AWS account ids, comma-separated (repeatable)")
    allow.set_defaults(func=cmd_tenant_allow_platform)

    revoke = tenant_sub.add_parser(
        "revoke-platform-credentials",
        help="take back a tenant's use of the platform's credentials (all accounts, or only "
        "--accounts); its platform-credential subscriptions no longer allowed are deactivated "
        "at once with the reason 'platform credentials are no longer allowed for this tenant: "
        "use keys or a role'")
    revoke.add_argument("name")
    revoke.add_argument("--accounts", action="append",
                        help="only these 12-digit account ids, comma-separated (repeatable)")
    revoke.set_defaults(func=cmd_tenant_revoke_platform)

    dlq = sub.add_parser("dlq", help="dead-lettered messages: list, retry, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name in ("list", "retry", "purge"):
        cmd = dlq_sub.add_parser(name)
        cmd.add_argument("--queue", choices=["persist", "deliveries", "notifications"])
        if name == "list":
            cmd.add_argument("--limit", type=int, default=100)
        if name == "retry":
            cmd.add_argument("--id", action="append", help="a dead letter's id (default: all)")
        if name == "purge":
            cmd.add_argument("--yes", action="store_true")
        cmd.set_defaults(func=cmd_dlq)

    quarantine = sub.add_parser(
        "quarantine", help="events the database refused (accepted, not stored): list, retry, purge",
        description="Accepted events the database refused for a data reason are kept in the "
        "quarantine with the reason. retry stores them again through the persist path (after "
        "the column was widened or the cause fixed): a stored event leaves the quarantine and "
        "is delivered to its subscriptions; one refused again stays, with the new reason.")
    quarantine_sub = quarantine.add_subparsers(dest="quarantine_command", required=True)
    for name, text in (("list", "print one JSON line per quarantined event (oldest first)"),
                       ("retry", "re-drive through the persist path; exit 1 if any stays "
                                 "quarantined"),
                       ("purge", "delete quarantined events for good (needs --yes)")):
        cmd = quarantine_sub.add_parser(name, help=text)
        cmd.add_argument("--tenant", help="only this tenant's (default: every tenant's)")
        cmd.add_argument("--id", action="append", help="an event id (repeatable; default: all)")
        if name == "list":
            cmd.add_argument("--limit", type=int, default=100)
            cmd.add_argument("--documents", action="store_true",
                             help="include each accepted event document")
        if name == "purge":
            cmd.add_argument("--yes", action="store_true")
        cmd.set_defaults(func=cmd_quarantine)

    client = sub.add_parser("client", help="a tenant's OAuth clients: create, revoke, rotate")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    cmd = client_sub.add_parser("create", help="a new client for the tenant (secret shown once)")
    cmd.add_argument("tenant")
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.set_defaults(func=cmd_client)
    cmd = client_sub.add_parser("revoke", help="revoke a client: no new tokens, its tokens "
                                "refused within EC_REVOCATION_CHECK_SECONDS")
    cmd.add_argument("client_id")
    cmd.set_defaults(func=cmd_client)
    cmd = client_sub.add_parser("rotate", help="a new secret (shown once); the old one and the "
                                "tokens issued with it stop working")
    cmd.add_argument("client_id")
    cmd.add_argument("--json", action="store_true", help="print one JSON object")
    cmd.set_defaults(func=cmd_client)

    token = sub.add_parser("token", help="mint an access token for operators (its jti is "
                           "printed on stderr); 'token revoke' revokes tokens")
    token.add_argument("--tenant", help="required to mint")
    token.add_argument("--scope", action="append", help="scope(s); default: all")
    token.add_argument("--ttl", type=int,
                       help="lifetime in seconds, at most EC_TOKEN_MAX_TTL_SECONDS")
    token.set_defaults(func=cmd_token)
    token_sub = token.add_subparsers(dest="token_command")
    cmd = token_sub.add_parser("revoke", help="revoke a token by its jti (any token), or with "
                               "--all every operator token issued so far")
    cmd.add_argument("jti", nargs="?")
    cmd.add_argument("--all", action="store_true")
    cmd.set_defaults(func=cmd_token_revoke)
    return parser


def _startup_failure(exc: BaseException) -> str | None:
    """One line saying what to do about a failure the user can cause (configuration, the data
    directory, a port, a database or broker that cannot be reached); None for anything else."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from sqlalchemy.exc import OperationalError

    from infra.db import DataDirError

    if isinstance(exc, StartupError | DataDirError):
        return str(exc)
    if isinstance(exc, ConfigError):
        return f"configuration error: {exc}"
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        if type(exc.orig).__module__.startswith("sqlite3"):
            return (f"cannot use the SQLite database: {reason}; check that EC_DATA_DIR (or the "
                    f"file DATABASE_URL names) is a writable directory on a disk with room")
        return (f"cannot use the database: {reason}; check DATABASE_URL and that the database "
                f"server is running")
    if isinstance(exc, RedisConnectionError):
        reason = str(exc).strip().splitlines()[0]
        return f"cannot reach Redis: {reason}; check REDIS_URL and that Redis is running"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:
        line = _startup_failure(exc)
        if line is None:
            raise
        debug = os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG"
        print(f"error: {line}" + ("" if debug else " (LOG_LEVEL=DEBUG shows the traceback)"),
              file=sys.stderr)
        if debug:
            traceback.print_exception(exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
