"""Every pattern-validated string is matched whole (issue 11, "validation that means what it says").

Python's ``re.match(r"^...$")`` accepts a value with a final ``"\\n"`` (``$`` matches before it),
and its ``\\d`` / ``\\s`` match any Unicode digit or space. Each pattern below is tried through
the code that uses it (the pydantic model, the route, the store function) with a valid value,
then with that value plus a trailing newline and other whitespace and control characters, and,
where the pattern reads digits, with non-ASCII digits: every variant is refused.

``test_every_pattern_in_the_product_is_covered_here`` reads the product's source (AST) for every
regular expression (``re.compile``, ``re.match``/``search``/``fullmatch``, ``pattern=``) and fails
if one is not covered by a case here, so a pattern added later is tested too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.settings import ConfigError
from tests.conftest import Caller, mint

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["api", "cli", "config", "events", "infra", "ingest", "jobs", "scheduler", "subscriptions",
           "tenants", "workers"]

# A trailing newline (the `$` hole), and what else must never pass as part of a matched value.
SUFFIXES = ["\n", "\r\n", "\r", " ", "\t", "\x00", "\x0b", "\x0c", "\x85", "\u2028", "\u00a0"]
PREFIXES = ["\n", " ", "\t"]


def accepts(check: Callable[[str], Any], value: str) -> bool:
    try:
        result = check(value)
    except (ValueError, ValidationError, LookupError, ConfigError):
        return False
    return result is not False and result is not None


# --- the checks: each calls the product code that validates the value ----------------------

def _event_id(value: str) -> Any:
    from events.contract import EventIn

    return EventIn.model_validate({"id": value, "event_source": "CONNECTOR", "event_type": "FAULT"})


def _path_id(value: str) -> bool:
    from api.events import valid_event_id

    return valid_event_id(value)


def _subscription(**block: Any) -> Any:
    from subscriptions.contract import SubscriptionIn

    kind = "sqs" if "queueUrl" in block else "sns"
    if "accessKey" not in block and "credentials" not in block:  # issue 12: a stated identity
        block = {"credentials": "role", "roleArn": ROLE, **block}
    return SubscriptionIn.model_validate(
        {"entityType": "ORDER", "subscribeCreate": True,
         "destination": {"type": kind.upper(), kind: block}},
        context={"sqs_endpoint": "http://127.0.0.1:5055"})


QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/orders"
ARN = "arn:aws:sns:us-east-1:123456789012:orders"
ROLE = "arn:aws:iam::123456789012:role/ec-delivery"


def _region(value: str) -> Any:
    return _subscription(queueUrl="http://127.0.0.1:5055/123456789012/orders", region=value)


def _queue_url(value: str) -> Any:
    return _subscription(queueUrl=value)


def _endpoint_queue_path(value: str) -> Any:
    return _subscription(queueUrl="http://127.0.0.1:5055" + value, region="us-east-1")


def _topic_arn(value: str) -> Any:
    return _subscription(topicArn=value)


def _access_key(value: str) -> Any:
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from infra.crypto import SecretBox
    from infra.db import Base
    from subscriptions.contract import SubscriptionError
    from subscriptions.repository import create_subscription

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    data = _subscription(queueUrl=QUEUE, accessKey=value, accessSecret="s" * 40)
    with Session(engine) as session:
        from tenants.auth import create_tenant

        create_tenant(session, "acme")
        try:
            return create_subscription(session, "acme", data,
                                       SecretBox(Fernet.generate_key().decode()))
        except SubscriptionError as exc:
            raise ValueError(str(exc)) from None


def _role_arn(value: str) -> Any:
    return _subscription(queueUrl=QUEUE, credentials="role", roleArn=value)


def _account(value: str) -> Any:
    from tenants.aws_identity import InvalidAccount, parse_accounts

    try:
        return parse_accounts([value])
    except InvalidAccount as exc:
        raise ValueError(str(exc)) from None


def _attempt_status(value: str) -> Any:
    from api.subscriptions import AttemptParams

    return AttemptParams.model_validate({"status": value})


def _tenant_name(value: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from infra.db import Base
    from tenants.auth import InvalidTenantName, create_tenant

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        try:
            return create_tenant(session, value)
        except InvalidTenantName as exc:
            raise ValueError(str(exc)) from None


def _request_id(value: str) -> bool:
    from api.observability import valid_request_id

    return valid_request_id(value)


def _fifo_id(value: str) -> bool:
    from subscriptions.service import _fifo_id

    return _fifo_id(value) == value  # an id that is not safe as it is gets hashed


def _sendgrid_from(value: str) -> Any:
    from config.settings import load_settings

    return load_settings({"EC_DATA_DIR": "/tmp/ec-patterns", "EC_TOKEN_SECRET": "x" * 40,
                          "DATABASE_URL": "sqlite:///:memory:", "SENDGRID_API_KEY": "SG.k",
                          "SENDGRID_FROM_EMAIL": value})


def _schedule_expression(value: str) -> Any:
    from jobs.contract import JobIn

    return JobIn.model_validate({"notification": "REMINDER", "template_id": "d-1",
                                 "scheduleExpression": value})


def _schedule(value: str) -> Any:
    from jobs.contract import JobIn

    return JobIn.model_validate({"notification": "REMINDER", "template_id": "d-1",
                                 "schedule": value})


# name -> (check, valid values, values with non-ASCII digits or letters that must be refused)
CASES: dict[str, tuple[Callable[[str], Any], list[str], list[str]]] = {
    "event id (EventIn.id)": (_event_id, ["evt-1", "a" * 128], ["evt-١", "évt"]),
    "event id in a path (api.events.valid_event_id)": (_path_id, ["evt-1", "12"], ["evt-١"]),
    "region": (_region, ["us-east-1", "us-gov-west-1", "eu-central-2"],
               ["us-east-١", "us-east-𝟏", "ｕs-east-1"]),
    "SQS queue URL": (_queue_url, [QUEUE, QUEUE + ".fifo",
                                   "https://eu-west-1.queue.amazonaws.com/123456789012/q"],
                      ["https://sqs.us-east-1.amazonaws.com/١٢٣٤٥٦٧٨٩٠١٢/orders"]),
    "queue path on the endpoint override": (_endpoint_queue_path, ["/123456789012/orders"],
                                            ["/١٢٣٤٥٦٧٨٩٠١٢/orders"]),
    "SNS topic ARN": (_topic_arn, [ARN, ARN + ".fifo"],
                      ["arn:aws:sns:us-east-1:١٢٣٤٥٦٧٨٩٠١٢:orders"]),
    "access key id": (_access_key, ["AKIAIOSFODNN7EXAMPLE"], ["AKIAIOSFODNN7EXAMPLＥ"]),
    "role ARN": (_role_arn, [ROLE, "arn:aws:iam::123456789012:role/path/ec+x=y,z.@_-"],
                 ["arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/ec", "arn:aws:iam::123456789012:role/é"]),
    "AWS account id (tenant allow-platform-credentials)": (_account, ["123456789012"],
                                                           ["١٢٣٤٥٦٧٨٩٠١٢"]),
    "attempt log status": (_attempt_status, ["succeeded", "retrying", "failed"], []),
    "tenant name": (_tenant_name, ["acme", "a.b_c-1", "t" * 64], ["acmé"]),
    "X-Request-ID": (_request_id, ["req-1", "a:b.c_d-e"], ["réq"]),
    "FIFO group / deduplication id": (_fifo_id, ["acme:order-1", "a!b#c"], ["acme:órder"]),
    "SENDGRID_FROM_EMAIL": (_sendgrid_from, ["ann@example.com"], []),
    "scheduleExpression": (_schedule_expression,
                           ["rate(5 minutes)", "cron(0 9 * * ? *)", "0 9 * * 1"],
                           ["rate(٥ minutes)", "cron(0 9 * * ١ *)"]),
    "schedule (5-field cron)": (_schedule, ["0 9 * * 1", "*/5 * * * *"], ["0 ٩ * * 1"]),
}


TRIMMED: dict[str, str | None] = {"scheduleExpression": " ", "schedule (5-field cron)": " ",
                                  "SENDGRID_FROM_EMAIL": None,
                                  # comma-separated on the command line, each entry trimmed
                                  "AWS account id (tenant allow-platform-credentials)": None}


@pytest.mark.parametrize("name", list(CASES))
def test_a_pattern_accepts_its_valid_values(name: str) -> None:
    check, valid, _ = CASES[name]
    for value in valid:
        assert accepts(check, value), (name, value)


@pytest.mark.parametrize("name", list(CASES))
def test_a_pattern_refuses_a_trailing_newline_and_other_whitespace_or_controls(name: str) -> None:
    check, valid, _ = CASES[name]
    # Given a value the pattern accepts
    value = valid[0]
    # When a newline (or another space or control character) is added before or after it
    variants = [value + s for s in SUFFIXES] + [p + value for p in PREFIXES]
    # (what is trimmed by design is not part of the value: a schedule's surrounding spaces,
    # an environment variable's surrounding whitespace)
    if name in TRIMMED:
        variants = [v for v in variants if v.strip(TRIMMED[name]) != value]
    # Then every variant is refused
    accepted = [v for v in variants if accepts(check, v)]
    assert accepted == [], (name, accepted)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2]])
def test_a_pattern_refuses_non_ascii_digits_and_letters(name: str) -> None:
    check, _, lookalikes = CASES[name]
    accepted = [v for v in lookalikes if accepts(check, v)]
    assert accepted == [], (name, accepted)


# --- through the HTTP surface -----------------------------------------------------------------

def test_a_tenant_header_with_a_trailing_newline_is_malformed(acme: Caller) -> None:
    # Given acme's token, and X-TWC-Tenant "acme\n" (as a WSGI server may pass it on)
    headers = {"Authorization": acme.headers()["Authorization"]}
    # When it lists events
    resp = acme.client.get("/api/v1/events", headers=headers,
                           environ_overrides={"HTTP_X_TWC_TENANT": "acme\n"})
    # Then the header is malformed (400), not "another tenant" (403) and not acme
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["error"]["code"] == "invalid_tenant"


def test_a_request_id_with_a_trailing_newline_is_replaced(acme: Caller) -> None:
    resp = acme.client.get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": "req-1\n"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] not in ("req-1", "req-1\n")
    assert len(resp.headers["X-Request-ID"]) == 32


def test_a_subscription_region_with_a_trailing_newline_is_a_400(embedded: Any) -> None:
    caller = Caller(embedded.test_client(), "acme", mint("acme"))
    body = {"entityType": "ORDER", "subscribeCreate": True, "destination": {
        "type": "SQS", "sqs": {"queueUrl": QUEUE, "region": "us-east-1\n",
                                   "credentials": "role", "roleArn": ROLE}}}
    resp = caller.client.post("/api/v1/event-subscription", json=body, headers=caller.headers())
    assert resp.status_code == 400, resp.get_data(as_text=True)
    fields = [d["field"] for d in resp.get_json()["error"]["details"]]
    assert any("region" in f for f in fields), fields


# --- every pattern in the product is covered ------------------------------------------------

# Where each regular expression of the product is used (file: the names or call sites found
# below), and the case above that tests it. A new pattern fails the test until it is added.
COVERED = {
    ("infra/limits.py", "EVENT_ID"): "event id (EventIn.id)",
    ("infra/limits.py", "EVENT_ID_RE"): "event id in a path (api.events.valid_event_id)",
    ("infra/limits.py", "TENANT"): "tenant name",
    ("infra/limits.py", "TENANT_RE"): "tenant name",
    ("subscriptions/contract.py", "REGION_RE"): "region",
    ("subscriptions/contract.py", "SQS_AWS_URL_RE"): "SQS queue URL",
    ("subscriptions/contract.py", "QUEUE_PATH_RE"): "queue path on the endpoint override",
    ("subscriptions/contract.py", "TOPIC_ARN_RE"): "SNS topic ARN",
    ("subscriptions/contract.py", "ACCESS_KEY_RE"): "access key id",
    ("subscriptions/contract.py", "URL_CHARS_RE"): "SQS queue URL",
    ("subscriptions/contract.py", "ROLE_ARN_RE"): "role ARN",
    ("tenants/aws_identity.py", "ACCOUNT_RE"): "AWS account id (tenant allow-platform-credentials)",
    ("jobs/schedules.py", "_RATE_RE"): "scheduleExpression",
    ("jobs/schedules.py", "_CRON_WRAP_RE"): "scheduleExpression",
    ("jobs/schedules.py", "_CRON_CHARS_RE"): "schedule (5-field cron)",
    ("api/observability.py", "_ID_RE"): "X-Request-ID",
    ("subscriptions/service.py", "_SAFE_ID"): "FIFO group / deduplication id",
    ("config/settings.py", "_EMAIL_RE"): "SENDGRID_FROM_EMAIL",
}
# Regular expressions that validate nothing a client or operator sends (they rewrite or scrub
# text the product made itself), with the reason.
NOT_VALIDATION = {
    ("jobs/schedules.py", "_DOW_NUMBER_RE"): "rewrites AWS day numbers of a cron(...) that "
                                              "_CRON_CHARS_RE already checked",
    ("tenants/aws_identity.py", "_SESSION_CHARS"): "rewrites the role session name the product builds "
                                             "(tests/unit/test_aws_identity.py)",
    **{("infra/redact.py", name): "scrubs SDK error text (tests/unit/test_redact.py)"
       for name in ("_AUTH_VALUE", "_SECRETISH", "_KEY_ID", "_SIGNATURE", "_MARKER")},
}


def _regex_sites(path: Path) -> set[tuple[str, str]]:
    """(file, name) of every regular expression in ``path``: a name bound to re.compile(...) or
    full_pattern(...), a *_PATTERN constant, a ``pattern=`` keyword (Class.field), or an inline
    re.match/search/fullmatch call (flagged as "inline": use a named pattern)."""
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text())
    sites: set[tuple[str, str]] = set()
    compilers = {"compile", "full_pattern"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if isinstance(value, ast.Call):
                func = value.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name in compilers:
                    sites |= {(rel, t.id) for t in targets if isinstance(t, ast.Name)}
            for t in targets:
                if isinstance(t, ast.Name) and t.id.endswith("_PATTERN"):
                    sites.add((rel, t.id.removesuffix("_PATTERN")))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                    and func.value.id == "re" and func.attr in ("match", "search", "fullmatch"):
                sites.add((rel, f"inline re.{func.attr} at line {node.lineno}"))
    for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        for item in cls.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                for sub in ast.walk(item):
                    if isinstance(sub, ast.keyword) and sub.arg == "pattern":
                        sites.add((rel, f"{cls.name}.{item.target.id}"))
    return sites


def test_every_pattern_in_the_product_is_covered_here() -> None:
    found: set[tuple[str, str]] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found |= _regex_sites(path)
    untested = sorted(found - set(COVERED) - set(NOT_VALIDATION))
    assert untested == [], f"patterns without a case in this module: {untested}"
    stale = sorted((set(COVERED) | set(NOT_VALIDATION)) - found)
    assert stale == [], f"listed here but gone from the product: {stale}"


def test_python_patterns_are_never_matched_with_match_or_search() -> None:
    # `.match(value)` on a pattern ending in `$` is the newline hole: every product pattern is
    # compiled with store.limits.full_pattern and used with .fullmatch.
    offenders = []
    exempt = {name for _, name in NOT_VALIDATION}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "infra" / "limits.py":
                continue  # full_pattern itself
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if line.split(" = ")[0].strip() in exempt:
                    continue
                if any(s in line for s in ("_RE.match(", "_RE.search(", "_ID.match(",
                                           "re.compile(", "re.match(", "re.search(")):
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert offenders == []
