"""Event subscriptions: the input model, storage with encrypted secrets, and event matching."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from store.crypto import SecretBox, SecretsUnavailable
from store.db import begin_write
from store.domain import ClientId, EntityName, EventType, format_time, new_event_id
from store.identity import TenantAws, tenant_aws
from store.limits import (
    ACCESS_KEY_MAX,
    ACCESS_KEY_MIN,
    ACCESS_SECRET_MAX,
    DESTINATION_MAX,
    EXTERNAL_ID_MAX,
    REGION_MAX,
    ROLE_ARN_MAX,
    full_pattern,
)
from store.models import Delivery, DeliveryAttempt, Subscription, Tenant

MASK = "********"
# Matched whole, with ASCII classes (store/limits.py): no trailing newline, no Unicode digits.
REGION_RE = full_pattern(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]{1,16}-[0-9]{1,2}")
SQS_AWS_URL_RE = full_pattern(
    r"https://(?:sqs\.(?P<r1>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|(?P<r2>[a-z0-9-]+)\.queue\.amazonaws\.com)"
    r"/(?P<account>[0-9]{12})/(?P<name>[A-Za-z0-9_-]{1,75}(?:\.fifo)?)"
)
QUEUE_PATH_RE = full_pattern(r"/(?P<account>[0-9]{12})/(?P<name>[A-Za-z0-9_-]{1,75}(?:\.fifo)?)")
TOPIC_ARN_RE = full_pattern(
    r"arn:aws(?:-cn|-us-gov)?:sns:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"(?P<name>[A-Za-z0-9_-]{1,256}(?:\.fifo)?)"
)
ACCESS_KEY_RE = full_pattern(rf"[A-Z0-9]{{{ACCESS_KEY_MIN},{ACCESS_KEY_MAX}}}")
ROLE_ARN_RE = full_pattern(
    r"arn:aws(?:-cn|-us-gov)?:iam::(?P<account>[0-9]{12}):role/[A-Za-z0-9+=,.@_/-]{1,512}")
# A queue URL or topic ARN is printable ASCII without spaces (urlsplit would silently drop a
# tab or newline from it).
URL_CHARS_RE = full_pattern(r"[!-~]+")
THREE_FORMS = (
    'say how Event Collector authenticates to AWS for this destination, in one of three forms: '
    '{"credentials": "keys", "accessKey": ..., "accessSecret": ...} (your own IAM keys; '
    '"credentials" may be left out when both keys are sent); '
    '{"credentials": "role", "roleArn": "arn:aws:iam::<account>:role/<name>"} (a role of yours '
    'that Event Collector assumes with STS, passing your tenant\'s externalId, which the '
    'response shows and which you require in the role\'s trust policy; you cannot choose it); '
    '{"credentials": "platform"} (the platform\'s own AWS identity: only when an operator has '
    'allowed it for your tenant, and only for queues and topics in the AWS accounts allowed)'
)

OPERATION_FLAGS = {
    "CREATE": "create",
    "BULK_CREATE": "create",
    "UPDATE": "change",
    "BULK_UPDATE": "change",
    "DELETE": "delete",
}


class SubscriptionError(Exception):
    """A subscription request that cannot be carried out; ``field`` names the culprit."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SubscriptionExists(SubscriptionError):
    pass


# --- input model -----------------------------------------------------------------------------

Secretish = Annotated[str, StringConstraints(min_length=1, max_length=ACCESS_SECRET_MAX)]
AccessKey = Annotated[str, StringConstraints(min_length=1, max_length=ACCESS_KEY_MAX)]
Target = Annotated[str, StringConstraints(max_length=DESTINATION_MAX)]


def _region_name(value: str) -> str:
    if not REGION_RE.fullmatch(value):
        raise ValueError("must be an AWS region name such as eu-west-1")
    return value


def _target_chars(value: str) -> None:
    if not URL_CHARS_RE.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces or control characters")


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    region: Annotated[str, StringConstraints(max_length=REGION_MAX)] | None = None
    credentials: Literal["keys", "role", "platform"] | None = Field(
        None, description="how deliveries authenticate to AWS: keys, role or platform")
    accessKey: AccessKey | None = None
    accessSecret: Secretish | None = None
    roleArn: Annotated[str, StringConstraints(max_length=ROLE_ARN_MAX)] | None = Field(
        None, description="credentials role: the IAM role assumed with STS AssumeRole")
    # Read-only: GET shows the tenant's ExternalId on a role destination. Sending it back
    # unchanged is accepted (and ignored); any other value is refused by _apply.
    externalId: Annotated[str, StringConstraints(max_length=EXTERNAL_ID_MAX)] | None = Field(
        None, description="read-only (generated per tenant): leave it out, or send back the "
                          "value a GET showed")

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return _region_name(value) if value is not None else None

    def _region_of_target(self, found: str, what: str) -> None:
        if not REGION_RE.fullmatch(found):
            raise ValueError(f"the {what} names no AWS region (such as eu-west-1)")
        if self.region and self.region != found:
            raise ValueError(f"region {self.region} differs from the {what}'s {found}")
        self.region = self.region or found

    @model_validator(mode="after")
    def _one_mode(self) -> _Keys:
        has_keys = self.accessKey is not None or self.accessSecret is not None
        mode = self.credentials
        if mode is None:
            # Seed 002's form: keys without a mode are explicit enough (the pair is checked
            # with the stored row, which may hold what a masked value stands for).
            if not has_keys or self.roleArn is not None:
                raise ValueError(THREE_FORMS)
            self.credentials = "keys"
        elif mode == "keys" and self.roleArn is not None:
            raise ValueError('"credentials": "keys" takes accessKey and accessSecret, not '
                             'roleArn; ' + THREE_FORMS)
        elif mode == "role":
            if has_keys:
                raise ValueError('"credentials": "role" takes roleArn, not accessKey or '
                                 'accessSecret; ' + THREE_FORMS)
            if self.roleArn is None:
                raise ValueError('"credentials": "role" needs roleArn; ' + THREE_FORMS)
            if not ROLE_ARN_RE.fullmatch(self.roleArn):
                raise ValueError("roleArn must be an IAM role ARN: "
                                 "arn:aws:iam::<12-digit account>:role/<name>")
        elif mode == "platform" and (has_keys or self.roleArn is not None):
            raise ValueError('"credentials": "platform" takes no accessKey, accessSecret or '
                             'roleArn; ' + THREE_FORMS)
        return self


class SqsDestinationIn(_Keys):
    queueUrl: Target

    @field_validator("queueUrl")
    @classmethod
    def _url_chars(cls, value: str) -> str:
        _target_chars(value)
        return value

    @model_validator(mode="after")
    def _queue(self, info: ValidationInfo) -> SqsDestinationIn:
        endpoint = (info.context or {}).get("sqs_endpoint")
        match = SQS_AWS_URL_RE.fullmatch(self.queueUrl)
        if match:
            self._region_of_target(match.group("r1") or match.group("r2"), "queue URL")
            return self
        if endpoint and _on_endpoint(self.queueUrl, endpoint):
            if not self.region:
                raise ValueError("region is required for a queue on a custom endpoint")
            return self
        raise ValueError(
            "queueUrl must be an SQS queue URL: https://sqs.<region>.amazonaws.com/<account>/<queue>"
        )


class SnsDestinationIn(_Keys):
    topicArn: Target

    @field_validator("topicArn")
    @classmethod
    def _arn_chars(cls, value: str) -> str:
        _target_chars(value)
        return value

    @model_validator(mode="after")
    def _topic(self) -> SnsDestinationIn:
        match = TOPIC_ARN_RE.fullmatch(self.topicArn)
        if not match:
            raise ValueError("topicArn must be an SNS topic ARN: arn:aws:sns:<region>:<account>:<topic>")
        self._region_of_target(match.group("region"), "topic ARN")
        return self


def target_account(destination_type: str, target: str) -> str | None:
    """The AWS account of a queue URL (on AWS or the endpoint override) or topic ARN."""
    if destination_type == "SNS":
        match = TOPIC_ARN_RE.fullmatch(target)
    else:
        match = SQS_AWS_URL_RE.fullmatch(target) or QUEUE_PATH_RE.fullmatch(urlsplit(target).path)
    return match.group("account") if match else None


def _on_endpoint(url: str, endpoint: str) -> bool:
    u, e = urlsplit(url), urlsplit(endpoint)
    return (u.scheme, u.netloc) == (e.scheme, e.netloc) and bool(QUEUE_PATH_RE.fullmatch(u.path))


_SQS_WITH_SNS_BLOCK = ('type is SQS but the destination holds an "sns" block: send '
                       '{"type": "SNS", "sns": {...}} or an "sqs" block with queueUrl')


class DestinationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["SQS", "SNS"]
    sqs: SqsDestinationIn | None = None
    sns: SnsDestinationIn | None = None

    @model_validator(mode="before")
    @classmethod
    def _type_matches_block(cls, data: Any) -> Any:
        # Seed 002's example pairs type SNS with an sqs block: say what to send instead, before
        # the block's own field errors drown that out.
        if isinstance(data, dict) and data.get("type") == "SNS" and "sns" not in data \
                and "sqs" in data:
            raise ValueError(
                'type is SNS but the destination holds an "sqs" block: to deliver to that '
                'queue send {"type": "SQS", "sqs": {"queueUrl": ..., "region": ...}}; to '
                'publish to a topic send {"type": "SNS", "sns": {"topicArn": '
                '"arn:aws:sns:<region>:<account>:<topic>", "region": ...}}'
            )
        if isinstance(data, dict) and data.get("type") == "SQS" and "sqs" not in data \
                and "sns" in data:
            raise ValueError(_SQS_WITH_SNS_BLOCK)
        return data

    @model_validator(mode="after")
    def _one_block(self) -> DestinationIn:
        if self.type == "SNS" and self.sns is None:
            raise ValueError('type SNS needs an "sns" block with topicArn')
        if self.type == "SQS" and self.sqs is None:
            if self.sns is not None:
                raise ValueError(_SQS_WITH_SNS_BLOCK)
            raise ValueError('type SQS needs an "sqs" block with queueUrl')
        if self.sqs is not None and self.sns is not None:
            raise ValueError('send either an "sqs" or an "sns" block, not both')
        return self

    @property
    def account(self) -> str | None:
        return target_account(self.type, self.target)

    @property
    def block(self) -> _Keys:
        chosen = self.sqs if self.type == "SQS" else self.sns
        assert chosen is not None
        return chosen

    @property
    def target(self) -> str:
        return self.sqs.queueUrl if self.sqs is not None else self.sns.topicArn  # type: ignore[union-attr]


class SubscriptionIn(BaseModel):
    """A subscription as clients send it (seed 002, camelCase)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: ClientId | None = None
    active: bool = True
    entityType: EntityName
    subscribeCreate: bool = False
    subscribeChange: bool = False
    subscribeDelete: bool = False
    eventTypes: list[EventType] = Field(
        default_factory=lambda: [EventType.ENTITY_EVENT], min_length=1, max_length=4,
        description="which event types match (default ENTITY_EVENT only; FAULT/WARNING opt in)",
    )
    destination: DestinationIn
    # Read-only fields that GET shows: accepted so a client can PUT back what it read, ignored.
    createdAt: Any = Field(None, exclude=True)
    updatedAt: Any = Field(None, exclude=True)
    failingSince: Any = Field(None, exclude=True)
    deactivatedAt: Any = Field(None, exclude=True)
    deactivationReason: Any = Field(None, exclude=True)

    @field_validator("entityType", mode="before")
    @classmethod
    def _entity(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return EntityName(value)
            except ValueError:
                raise ValueError("must be one of " + ", ".join(m.value for m in EntityName)) from None
        return value

    @field_validator("eventTypes", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        if isinstance(value, list):
            out = []
            for v in value:
                try:
                    out.append(EventType(v) if isinstance(v, str) else v)
                except ValueError:
                    raise ValueError("items must be ENTITY_EVENT, FAULT, WARNING or SYSTEM") from None
            return out
        return value

    @model_validator(mode="after")
    def _some_flag(self) -> SubscriptionIn:
        if not (self.subscribeCreate or self.subscribeChange or self.subscribeDelete):
            raise ValueError("at least one of subscribeCreate, subscribeChange, subscribeDelete must be true")
        return self


# --- storage ---------------------------------------------------------------------------------

def _bump_version(session: Session, tenant: str) -> None:
    session.execute(
        update(Tenant).where(Tenant.name == tenant)
        .values(subscriptions_version=Tenant.subscriptions_version + 1)
    )


def _apply(sub: Subscription, data: SubscriptionIn, box: SecretBox, now: datetime,
           tenant: TenantAws) -> None:
    block = data.destination.block
    mode = block.credentials
    if block.externalId is not None and block.externalId != tenant.external_id:
        raise SubscriptionError(
            "externalId is generated by Event Collector for your tenant and cannot be chosen: "
            "leave it out (responses show yours, to put in your role's trust policy)",
            "destination.externalId")
    if mode == "platform" and not tenant.platform_allows(data.destination.account):
        if tenant.platform_accounts is None:
            raise SubscriptionError(
                "platform credentials are not allowed for this tenant: use keys or a role "
                "(an operator can allow them for your AWS accounts)", "destination.credentials")
        raise SubscriptionError(
            f"platform credentials are allowed for this tenant only for queues and topics in its "
            f"allowed AWS accounts, and {data.destination.account} is not one of them: use keys "
            "or a role", "destination.credentials")
    if mode != "keys":
        sub.credentials = str(mode)
        sub.role_arn = block.roleArn if mode == "role" else None
        sub.access_key = None
        sub.access_secret_enc = None
        _apply_common(sub, data, now)
        return
    same_destination = sub.target == data.destination.target if sub.target else False
    access_key = block.accessKey
    secret = block.accessSecret
    # A client may PUT back what GET showed: masked values keep what is stored.
    if access_key is not None and access_key.startswith("****") and sub.access_key:
        if access_key != mask_key(sub.access_key):
            raise SubscriptionError("accessKey is masked but does not match the stored key",
                                    "destination.accessKey")
        access_key = sub.access_key
    elif access_key is not None and not ACCESS_KEY_RE.fullmatch(access_key):
        raise SubscriptionError("accessKey must be an AWS access key id", "destination.accessKey")
    keep_secret = secret == MASK and sub.access_secret_enc is not None and same_destination
    if secret == MASK and not keep_secret:
        raise SubscriptionError("accessSecret is masked but no secret is stored for this destination",
                                "destination.accessSecret")
    if access_key is None or secret is None:
        raise SubscriptionError(
            'send accessKey and accessSecret together: "credentials": "keys" needs both (send '
            "the masked values a GET shows to keep the stored ones)", "destination.accessSecret")
    if not keep_secret:
        try:
            sub.access_secret_enc = box.encrypt(secret)
        except SecretsUnavailable:
            raise SubscriptionError(
                "this deployment has no EC_SECRET_KEY, so it cannot store AWS keys: use "
                '"credentials": "role" with a roleArn instead', "destination.accessSecret"
            ) from None
    sub.credentials = "keys"
    sub.role_arn = None
    sub.access_key = access_key
    _apply_common(sub, data, now)


def _apply_common(sub: Subscription, data: SubscriptionIn, now: datetime) -> None:
    block = data.destination.block
    sub.active = data.active
    sub.entity_type = data.entityType.value
    sub.subscribe_create = data.subscribeCreate
    sub.subscribe_change = data.subscribeChange
    sub.subscribe_delete = data.subscribeDelete
    sub.event_types = " ".join(sorted({t.value for t in data.eventTypes}))
    sub.destination_type = data.destination.type
    sub.target = data.destination.target
    assert block.region is not None
    sub.region = block.region
    sub.updated_at = now
    if data.active:
        sub.deactivated_at = None
        sub.deactivation_reason = None
        sub.failing_since = None


def create_subscription(session: Session, tenant: str, data: SubscriptionIn, box: SecretBox) -> Subscription:
    begin_write(session)
    now = datetime.now(UTC)
    sub_id = data.id or new_event_id()
    if get_subscription(session, tenant, sub_id) is not None:
        raise SubscriptionExists(f"a subscription with id {sub_id!r} already exists", "id")
    sub = Subscription(id=sub_id, tenant=tenant, created_at=now, target="")
    _apply(sub, data, box, now, _tenant_aws(session, tenant))
    if not data.active:
        sub.deactivated_at = now
        sub.deactivation_reason = "created inactive"
    session.add(sub)
    _bump_version(session, tenant)
    session.commit()
    return sub


def update_subscription(
    session: Session, tenant: str, sub_id: str, data: SubscriptionIn, box: SecretBox
) -> Subscription | None:
    begin_write(session)
    sub = get_subscription(session, tenant, sub_id)
    if sub is None:
        return None
    now = datetime.now(UTC)
    was_active = sub.active
    _apply(sub, data, box, now, _tenant_aws(session, tenant))
    if was_active and not data.active:
        sub.deactivated_at = now
        sub.deactivation_reason = "deactivated by update"
    _bump_version(session, tenant)
    session.commit()
    return sub


def _tenant_aws(session: Session, tenant: str) -> TenantAws:
    found = tenant_aws(session, tenant)
    if found is None:
        raise SubscriptionError(f"no tenant named {tenant!r}")
    return found


def get_subscription(session: Session, tenant: str, sub_id: str) -> Subscription | None:
    return session.execute(
        select(Subscription).where(Subscription.tenant == tenant, Subscription.id == sub_id)
    ).scalar_one_or_none()


def list_subscriptions(session: Session, tenant: str, *, include_inactive: bool,
                       from_pk: int | None = None, limit: int | None = None) -> list[Subscription]:
    """In creation order; from internal key ``from_pk`` on, at most ``limit``."""
    stmt = select(Subscription).where(Subscription.tenant == tenant)
    if not include_inactive:
        stmt = stmt.where(Subscription.active.is_(True))
    if from_pk is not None:
        stmt = stmt.where(Subscription.pk >= from_pk)
    return list(session.execute(stmt.order_by(Subscription.pk).limit(limit)).scalars())


def deactivate_subscription(session: Session, sub: Subscription, reason: str, now: datetime) -> None:
    """Mark inactive with the reason; does not commit."""
    sub.active = False
    sub.deactivated_at = now
    sub.deactivation_reason = reason[:1024]
    sub.updated_at = now
    _bump_version(session, sub.tenant)


def delete_subscription(session: Session, tenant: str, sub_id: str) -> bool:
    begin_write(session)
    sub = get_subscription(session, tenant, sub_id)
    if sub is None:
        return False
    # Gone means gone: a subscription created later under the same id starts with a clean log.
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.tenant == tenant,
                                                  DeliveryAttempt.subscription_id == sub_id))
    session.execute(
        update(Delivery)
        .where(Delivery.tenant == tenant, Delivery.subscription_id == sub_id,
               Delivery.status == "pending")
        .values(status="cancelled", last_error="subscription deleted")
    )
    session.delete(sub)
    _bump_version(session, tenant)
    session.commit()
    return True


def mask_key(access_key: str) -> str:
    return "****" + access_key[-4:]


def to_api(sub: Subscription, external_id: str | None) -> dict[str, Any]:
    """The subscription as responses show it: secrets masked, never returned; a role
    destination shows the tenant's ``external_id`` (read-only)."""
    block: dict[str, Any] = {
        "queueUrl" if sub.destination_type == "SQS" else "topicArn": sub.target,
        "region": sub.region,
        "credentials": sub.credentials,
        "accessKey": mask_key(sub.access_key) if sub.access_key else None,
        "accessSecret": MASK if sub.access_secret_enc else None,
        "roleArn": sub.role_arn,
        "externalId": external_id if sub.credentials == "role" else None,
    }
    return {
        "id": sub.id,
        "active": sub.active,
        "entityType": sub.entity_type,
        "subscribeCreate": sub.subscribe_create,
        "subscribeChange": sub.subscribe_change,
        "subscribeDelete": sub.subscribe_delete,
        "eventTypes": sub.event_types.split(),
        "destination": {"type": sub.destination_type, sub.destination_type.lower(): block},
        "createdAt": format_time(sub.created_at),
        "updatedAt": format_time(sub.updated_at),
        "failingSince": format_time(sub.failing_since) if sub.failing_since else None,
        "deactivatedAt": format_time(sub.deactivated_at) if sub.deactivated_at else None,
        "deactivationReason": sub.deactivation_reason,
    }


# --- matching --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubscriptionIndex:
    """Active subscriptions of one tenant keyed for O(1) matching per event.

    Attributes:
        version: the tenant's ``subscriptions_version`` this index was built from.
        by_key: (entity type, flag) → [(subscription id, event types)]; flag ``*`` holds every
            subscription of the entity type (FAULT/WARNING events without an operation).
    """

    version: int
    by_key: dict[tuple[str, str], list[tuple[str, frozenset[str]]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.by_key

    def match(self, doc: dict[str, Any]) -> list[str]:
        entity = doc.get("entity_name")
        if not entity or self.empty:
            return []
        event_type = doc.get("event_type")
        operation = (doc.get("event_payload") or {}).get("operation")
        flag = OPERATION_FLAGS.get(operation or "")
        if flag is None:
            if event_type == "ENTITY_EVENT" or operation:
                return []  # READ, or an entity event without a matching operation
            flag = "*"
        return [sid for sid, types in self.by_key.get((entity, flag), ()) if event_type in types]


def build_index(subs: list[Subscription], version: int) -> SubscriptionIndex:
    by_key: dict[tuple[str, str], list[tuple[str, frozenset[str]]]] = {}
    for sub in subs:
        if not sub.active:
            continue
        types = frozenset(sub.event_types.split())
        flags = [f for f, on in (("create", sub.subscribe_create), ("change", sub.subscribe_change),
                                 ("delete", sub.subscribe_delete)) if on]
        for flag in [*flags, "*"]:
            by_key.setdefault((sub.entity_type, flag), []).append((sub.id, types))
    return SubscriptionIndex(version=version, by_key=by_key)


class IndexCache:
    """Per-process cache of each tenant's index, reloaded when its version moves."""

    def __init__(self) -> None:
        self._indexes: dict[str, SubscriptionIndex] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, tenant: str) -> SubscriptionIndex:
        version = session.execute(
            select(Tenant.subscriptions_version).where(Tenant.name == tenant)
        ).scalar_one_or_none()
        if version is None:
            return SubscriptionIndex(version=-1)
        cached = self._indexes.get(tenant)
        if cached is not None and cached.version == version:
            return cached
        index = build_index(list_subscriptions(session, tenant, include_inactive=False), version)
        with self._lock:
            self._indexes[tenant] = index
        return index


def create_deliveries(
    session: Session, tenant: str, docs: list[dict[str, Any]], index: SubscriptionIndex,
    *, replay: bool = False,
) -> int:
    """Insert one pending delivery per (event, matching subscription); does not commit."""
    now = datetime.now(UTC)
    rows = [
        {"tenant": tenant, "subscription_id": sid, "event_id": doc["id"], "status": "pending",
         "attempts": 0, "replay": replay, "created_at": now}
        for doc in docs for sid in index.match(doc)
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return len(rows)


def pending_by_event(session: Session, tenant: str,
                     event_ids: list[str]) -> list[tuple[int, str]]:
    """(delivery id, event id) of the never-attempted deliveries of these events (to be enqueued
    after the commit), by subscription then id so that consecutive ids share a batch call."""
    if not event_ids:
        return []
    return [(int(r[0]), str(r[1])) for r in session.execute(
        select(Delivery.id, Delivery.event_id).where(
            Delivery.tenant == tenant, Delivery.event_id.in_(event_ids),
            Delivery.status == "pending", Delivery.attempts == 0,
        ).order_by(Delivery.subscription_id, Delivery.id)
    ).all()]


def count_deliveries(session: Session, tenant: str, sub_id: str) -> int:
    return int(session.execute(
        select(func.count()).where(Delivery.tenant == tenant, Delivery.subscription_id == sub_id)
    ).scalar_one())
