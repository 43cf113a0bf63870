"""What the API accepts, the store stores: every length and value range an input model accepts
fits the column it lands in, on PostgreSQL and on SQLite (issue 11).

The walk reads the pydantic models themselves (EventIn, SubscriptionIn, JobIn, ReplayIn and every
query model), field by field down to dict keys, dict values and list items, and the SQLAlchemy
columns of store/models.py. Each leaf must be mapped here to the column(s) it lands in (or be
declared as stored nowhere, with the reason): a field added later without a mapping fails. Then:

- a String(n) column takes the leaf's longest accepted value (its max_length, or its longest
  enum/literal value); a filter's max_length equals the column's (shorter would make long values
  unsearchable);
- an INTEGER / BIGINT column (and a JSON one, read back with orjson: 64 bits) takes its range;
- Text and JSON columns hold any length.

``tests/integration/test_quarantine.py`` checks the migrated PostgreSQL schema against these
columns, and ``tests/integration/test_integrity_property.py`` stores generated events.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo
from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, Integer, String, Text
from sqlalchemy.types import TypeDecorator

from events.models import EventRecord, QuarantinedEvent
from infra import limits
from infra.db import Base
from jobs.models import Job
from subscriptions.models import DeliveryAttempt, Subscription
from tenants.models import Tenant


class Leaf(typing.NamedTuple):
    path: str
    kind: str  # str | int | float | bool | datetime | enum | literal | any
    max_length: int | None = None
    ge: int | None = None
    le: int | None = None
    finite: bool = False  # a float that refuses inf and nan


def _meta(items: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in items:
        if isinstance(m, FieldInfo):
            out.update(_meta(list(m.metadata)))
        elif isinstance(m, StringConstraints):
            if m.max_length is not None:
                out["max_length"] = m.max_length
        elif isinstance(m, annotated_types.MaxLen):
            out["max_length"] = m.max_length
        elif isinstance(m, annotated_types.Ge):
            out["ge"] = m.ge
        elif isinstance(m, annotated_types.Gt):
            out["ge"] = m.gt + 1
        elif isinstance(m, annotated_types.Le):
            out["le"] = m.le
        elif isinstance(m, annotated_types.Lt):
            out["le"] = m.lt - 1
        elif type(m).__name__ == "AllowInfNan":
            out["finite"] = not m.allow_inf_nan
    return out


def leaves(tp: Any, path: str, meta: list[Any] | None = None) -> list[Leaf]:
    """The scalar leaves of a type (a model's fields, dict keys ``{}`` / values ``[]``, list
    items ``[]``) with the constraints pydantic enforces on them."""
    meta = list(meta or [])
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        return leaves(base, path, meta + extra)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        return [leaf for a in options for leaf in leaves(a, path, meta)]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [leaf for name, field in tp.model_fields.items()
                for leaf in leaves(field.annotation, f"{path}.{name}", list(field.metadata))]
    if origin is dict:
        key, value = get_args(tp)
        return leaves(key, path + "{}") + leaves(value, path + "[]")
    if origin is list:
        (item,) = get_args(tp)
        return leaves(item, path + "[]")
    info = _meta(meta)
    if origin is Literal:
        return [Leaf(path, "literal", max(len(str(v)) for v in get_args(tp)))]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [Leaf(path, "enum", max(len(str(m.value)) for m in tp))]
    if tp is bool:
        return [Leaf(path, "bool")]
    if tp is int:
        return [Leaf(path, "int", ge=info.get("ge"), le=info.get("le"))]
    if tp is float:
        return [Leaf(path, "float", finite=info.get("finite", False))]
    if tp is str:
        return [Leaf(path, "str", max_length=info.get("max_length"))]
    if tp is datetime:
        return [Leaf(path, "datetime")]
    if tp is Any:
        return [Leaf(path, "any")]
    raise AssertionError(f"{path}: teach this walk about {tp!r}")


def _models() -> dict[str, type[BaseModel]]:
    from api.events import EventListParams
    from api.jobs import ListParams as JobListParams
    from api.open_loyalty import OpenLoyaltyParams
    from api.quarantine import QuarantineParams
    from api.subscriptions import AttemptParams, ReplayIn
    from api.subscriptions import ListParams as SubscriptionListParams
    from events.contract import EventIn
    from jobs.contract import JobIn
    from subscriptions.contract import SubscriptionIn

    return {"EventIn": EventIn, "SubscriptionIn": SubscriptionIn, "JobIn": JobIn,
            "ReplayIn": ReplayIn, "EventListParams": EventListParams,
            "OpenLoyaltyParams": OpenLoyaltyParams, "AttemptParams": AttemptParams,
            "SubscriptionListParams": SubscriptionListParams, "JobListParams": JobListParams,
            "QuarantineParams": QuarantineParams}


def all_leaves() -> dict[str, list[Leaf]]:
    """Path -> its leaves (a union field has one per member: str | int | ...)."""
    out: dict[str, list[Leaf]] = {}
    for name, model in _models().items():
        for leaf in leaves(model, name):
            out.setdefault(leaf.path, []).append(leaf)
    return out


E, S, J, Q = EventRecord.__table__.c, Subscription.__table__.c, Job.__table__.c, \
    QuarantinedEvent.__table__.c
NOT_STORED = "a request option (page size, order, flag): compared with nothing stored"
FILTER = "filter"  # a query value compared with a column: same length as the column

# leaf path -> the columns it lands in (a value stored) or is compared with (FILTER ones), or
# a string saying why it is stored nowhere.
MAPPING: dict[str, Any] = {
    "EventIn.id": [E.event_id, Q.event_id],
    "EventIn.entity_id": [E.entity_id],
    "EventIn.entity_name": [E.entity_name],
    "EventIn.event_source": [E.event_source],
    "EventIn.event_type": [E.event_type],
    "EventIn.event_payload.base64_encoded_payload_json": [E.payload_b64],
    "EventIn.event_payload.base64_encoded_fault_json": [E.fault_b64],
    "EventIn.event_payload.entity_id": [E.payload_entity_id],
    "EventIn.event_payload.key_attributes{}": [E.key_attributes],
    # a value may be the correlationId, which events.correlation_id holds
    "EventIn.event_payload.key_attributes[]": [E.key_attributes, E.correlation_id],
    "EventIn.event_payload.operation": [E.operation],
    "SubscriptionIn.id": [S.id],
    "SubscriptionIn.active": [S.active],
    "SubscriptionIn.entityType": [S.entity_type],
    "SubscriptionIn.subscribeCreate": [S.subscribe_create],
    "SubscriptionIn.subscribeChange": [S.subscribe_change],
    "SubscriptionIn.subscribeDelete": [S.subscribe_delete],
    "SubscriptionIn.eventTypes[]": "joined into events_types: test_event_types_fit_their_column",
    "SubscriptionIn.destination.type": [S.destination_type],
    "SubscriptionIn.destination.sqs.region": [S.region],
    "SubscriptionIn.destination.sqs.accessKey": [S.access_key],
    "SubscriptionIn.destination.sqs.accessSecret": [S.access_secret_enc],
    "SubscriptionIn.destination.sqs.credentials": [S.credentials],
    "SubscriptionIn.destination.sqs.roleArn": [S.role_arn],
    "SubscriptionIn.destination.sqs.externalId": "read-only: compared with the tenant's, stored nowhere",
    "SubscriptionIn.destination.sqs.queueUrl": [S.target],
    "SubscriptionIn.destination.sns.region": [S.region],
    "SubscriptionIn.destination.sns.accessKey": [S.access_key],
    "SubscriptionIn.destination.sns.accessSecret": [S.access_secret_enc],
    "SubscriptionIn.destination.sns.credentials": [S.credentials],
    "SubscriptionIn.destination.sns.roleArn": [S.role_arn],
    "SubscriptionIn.destination.sns.externalId": "read-only: compared with the tenant's, stored nowhere",
    "SubscriptionIn.destination.sns.topicArn": [S.target],
    "SubscriptionIn.createdAt": "read-only field a client may send back: ignored",
    "SubscriptionIn.updatedAt": "read-only field a client may send back: ignored",
    "SubscriptionIn.failingSince": "read-only field a client may send back: ignored",
    "SubscriptionIn.deactivatedAt": "read-only field a client may send back: ignored",
    "SubscriptionIn.deactivationReason": "read-only field a client may send back: ignored",
    "JobIn.id": [J.id],
    "JobIn.deleted": [J.deleted],
    "JobIn.is_active": [J.is_active],
    "JobIn.is_scheduled": [J.is_scheduled],
    "JobIn.job_parameters{}": [J.job_parameters],
    "JobIn.job_parameters[]": [J.job_parameters],
    "JobIn.notification": [J.notification],
    "JobIn.number_of_items_in_email": [J.number_of_items_in_email],
    "JobIn.schedule": [J.schedule],
    "JobIn.scheduleExpression": [J.schedule_expression],
    "JobIn.template_id": [J.template_id],
    "JobIn.timezone": [J.timezone],
    "ReplayIn.since": [E.received_at],
    "ReplayIn.until": [E.received_at],
    "EventListParams.from_id": [E.seq, E.tenant_seq],
    "EventListParams.per_page": NOT_STORED,
    "EventListParams.sort": NOT_STORED,
    "EventListParams.direction": NOT_STORED,
    "EventListParams.event_type": [E.event_type],
    "EventListParams.event_source": [E.event_source],
    "EventListParams.entity_name": [E.entity_name],
    "EventListParams.entity_id": (FILTER, E.entity_id),
    "EventListParams.operation": [E.operation],
    "EventListParams.correlation_id": (FILTER, E.correlation_id),
    "EventListParams.since": [E.received_at],
    "EventListParams.until": [E.received_at],
    "OpenLoyaltyParams.fromId": [E.seq, E.tenant_seq],
    "OpenLoyaltyParams.perPage": NOT_STORED,
    "OpenLoyaltyParams.sort": NOT_STORED,
    "OpenLoyaltyParams.direction": NOT_STORED,
    "AttemptParams.status": [DeliveryAttempt.__table__.c.status],
    "AttemptParams.since": [DeliveryAttempt.__table__.c.attempted_at],
    "AttemptParams.from_id": [DeliveryAttempt.__table__.c.id],
    "AttemptParams.per_page": NOT_STORED,
    "SubscriptionListParams.include_inactive": NOT_STORED,
    "SubscriptionListParams.per_page": NOT_STORED,
    "SubscriptionListParams.from_id": [Subscription.__table__.c.pk],  # opaque cursor of a pk
    "JobListParams.include_deleted": NOT_STORED,
    "JobListParams.per_page": NOT_STORED,
    "JobListParams.from_id": [Job.__table__.c.pk],
    "QuarantineParams.from_id": [Q.id],
    "QuarantineParams.per_page": NOT_STORED,
}

INT_RANGES = {"postgresql": {Integer: (-(2**31), 2**31 - 1), BigInteger: (-(2**63), 2**63 - 1)},
              # SQLite's INTEGER is 64 bits whatever the declared type
              "sqlite": {Integer: (-(2**63), 2**63 - 1), BigInteger: (-(2**63), 2**63 - 1)}}
JSON_INT_RANGE = (limits.INT64_MIN, 2**64 - 1)  # what orjson writes back


def _type_on(column: Column[Any], dialect: str) -> Any:
    kind = column.type
    variants = getattr(kind, "_variant_mapping", {})
    kind = variants.get(dialect, kind)
    # A TypeDecorator (infra.db.UtcDateTime) stores what its impl stores.
    return kind.impl_instance if isinstance(kind, TypeDecorator) else kind


def problems_of(leaf: Leaf, column: Column[Any], *, is_filter: bool = False) -> list[str]:
    where = f"{leaf.path} -> {column.table.name}.{column.name}"
    out = []
    for dialect in ("postgresql", "sqlite"):
        kind = _type_on(column, dialect)
        if isinstance(kind, JSON) or type(kind).__name__ == "JSONB":
            if leaf.kind == "int" and not (leaf.ge is not None and leaf.le is not None
                                           and JSON_INT_RANGE[0] <= leaf.ge
                                           and leaf.le <= JSON_INT_RANGE[1]):
                out.append(f"{where}: an unbounded integer cannot be read back from JSON")
            if leaf.kind == "float" and not leaf.finite:
                out.append(f"{where}: inf or nan cannot be written as JSON")
        elif isinstance(kind, Text) or (isinstance(kind, String) and kind.length is None):
            if leaf.kind not in ("str", "enum", "literal"):
                out.append(f"{where}: {leaf.kind} in a text column")
        elif isinstance(kind, String):
            if leaf.kind not in ("str", "enum", "literal"):
                out.append(f"{where}: {leaf.kind} in a string column")
            elif leaf.max_length is None:
                out.append(f"{where}: no max_length, the column holds {kind.length}")
            elif dialect == "postgresql" and leaf.max_length > kind.length:
                out.append(f"{where}: accepts {leaf.max_length} characters, the column holds "
                           f"{kind.length}")
            elif is_filter and leaf.max_length != kind.length:
                out.append(f"{where}: a filter of {leaf.max_length} characters for a column "
                           f"of {kind.length}")
        elif isinstance(kind, Integer):  # BigInteger is one too
            low, high = INT_RANGES[dialect][BigInteger if isinstance(kind, BigInteger) else Integer]
            if leaf.kind != "int":
                out.append(f"{where}: {leaf.kind} in an integer column")
            elif leaf.ge is None or leaf.le is None or leaf.ge < low or leaf.le > high:
                out.append(f"{where} ({dialect}): accepts [{leaf.ge}, {leaf.le}], the column "
                           f"holds [{low}, {high}]")
        elif isinstance(kind, Boolean):
            if leaf.kind != "bool":
                out.append(f"{where}: {leaf.kind} in a boolean column")
        elif isinstance(kind, DateTime):
            if leaf.kind != "datetime":
                out.append(f"{where}: {leaf.kind} in a timestamp column")
        elif isinstance(kind, Float):
            if leaf.kind not in ("float", "int"):
                out.append(f"{where}: {leaf.kind} in a float column")
        else:
            out.append(f"{where}: teach this test about {kind!r}")
    return sorted(set(out))


def test_every_field_of_every_input_model_is_mapped_to_where_it_lands() -> None:
    found = all_leaves()
    unmapped = sorted(set(found) - set(MAPPING))
    stale = sorted(set(MAPPING) - set(found))
    assert unmapped == [], f"say where these land: {unmapped}"
    assert stale == [], f"no longer fields: {stale}"


@pytest.mark.parametrize("path", sorted(MAPPING))
def test_what_a_field_accepts_fits_its_columns(path: str) -> None:
    target = MAPPING[path]
    if isinstance(target, str):
        return  # stored nowhere (the reason is in MAPPING)
    for leaf in all_leaves()[path]:
        if isinstance(target, tuple):
            assert problems_of(leaf, target[1], is_filter=True) == []
        else:
            assert [p for column in target for p in problems_of(leaf, column)] == []


def test_event_types_fit_their_column() -> None:
    from events.contract import EventType

    joined = " ".join(sorted(t.value for t in EventType))
    assert len(joined) <= S.event_types.type.length


def _longest_match(pattern: Any, alphabet: str = "a") -> int:
    """The longest string of ``alphabet`` characters (after a valid first one) it accepts."""
    n = 1
    while pattern.fullmatch("a" + alphabet * n):
        n += 1
    return n


def test_every_tenant_and_event_id_column_takes_the_longest_valid_name_and_id() -> None:
    from infra.limits import EVENT_ID_RE, TENANT_RE

    assert _longest_match(TENANT_RE) == limits.TENANT_MAX
    assert _longest_match(EVENT_ID_RE) == limits.EVENT_ID_MAX
    short = []
    for table in Base.metadata.tables.values():
        for column in table.columns:
            need = {"tenant": limits.TENANT_MAX, "event_id": limits.EVENT_ID_MAX,
                    "last_event_id": limits.EVENT_ID_MAX}.get(column.name)
            if need and isinstance(column.type, String) and column.type.length is not None \
                    and column.type.length < need:
                short.append(f"{table.name}.{column.name}: {column.type.length} < {need}")
    assert short == []


def test_a_tenants_rate_limit_is_bounded_by_what_its_columns_hold() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from tenants.auth import InvalidRateLimit, create_tenant, set_rate_limit

    assert limits.RATE_BURST_MAX <= INT_RANGES["postgresql"][Integer][1]
    assert isinstance(Tenant.__table__.c.rate_burst.type, Integer)
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        create_tenant(session, "acme")
        set_rate_limit(session, "acme", float(limits.RATE_PER_SECOND_MAX), limits.RATE_BURST_MAX)
        for per_second, burst in ((1.0, 2**31), (float("nan"), 10), (float("inf"), 10),
                                  (-1.0, 10), (1.0, 0), (limits.RATE_PER_SECOND_MAX + 1.0, 10)):
            with pytest.raises(InvalidRateLimit):
                set_rate_limit(session, "acme", per_second, burst)


def test_the_quarantine_holds_any_accepted_document() -> None:
    # (the document is kept as ASCII JSON text: nothing an accepted event holds can fail there)
    assert isinstance(Q.document.type, Text)
    assert Q.reason.type.length >= limits.ERROR_TEXT_MAX


def test_migration_0006_on_a_sqlite_database_that_holds_rows(tmp_path: Any) -> None:
    from tests.support.migration_rows import check_migration_0006

    check_migration_0006(f"sqlite:///{tmp_path / 'm.db'}")
