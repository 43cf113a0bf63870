"""Subscriptions as the HTTP contract defines them: the input models and their validation, and
the response models (subscriptions, the attempt log, replay and test-send answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self
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

from events.contract import ClientId, EntityName, EventType
from infra.contract import ResponseModel, Timestamp
from infra.limits import (
    ACCESS_KEY_MAX,
    ACCESS_KEY_MIN,
    ACCESS_SECRET_MAX,
    DESTINATION_MAX,
    EXTERNAL_ID_MAX,
    REGION_MAX,
    ROLE_ARN_MAX,
    full_pattern,
)

if TYPE_CHECKING:
    from subscriptions.models import DeliveryAttempt, Subscription

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


# --- response models ---------------------------------------------------------------------------


def mask_key(access_key: str) -> str:
    return "****" + access_key[-4:]


class DestinationBlockOut(ResponseModel):
    """An ``sqs`` or ``sns`` block as responses show it (secrets masked, never returned)."""

    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"queueUrl", "topicArn"})

    queueUrl: str | None = Field(None, description="SQS destinations")
    topicArn: str | None = Field(None, description="SNS destinations")
    region: str
    credentials: Literal["keys", "role", "platform"] = Field(
        description="how deliveries authenticate to AWS")
    accessKey: str | None = Field(description="masked: '****' + the last 4 characters")
    accessSecret: str | None = Field(description="masked: '********' when one is stored")
    roleArn: str | None = Field(description="the role assumed with STS (credentials: role)")
    externalId: str | None = Field(
        description="read-only, role destinations: the ExternalId Event Collector passes when "
                    "it assumes the role (generated per tenant; require it in the role's trust "
                    "policy)")


class DestinationOut(ResponseModel):
    omitted_when_none: ClassVar[frozenset[str]] = frozenset({"sqs", "sns"})

    type: str
    sqs: DestinationBlockOut | None = None
    sns: DestinationBlockOut | None = None


class SubscriptionOut(ResponseModel):
    """A subscription as responses show it (secrets masked)."""

    id: str
    active: bool
    entityType: str
    subscribeCreate: bool
    subscribeChange: bool
    subscribeDelete: bool
    eventTypes: list[str]
    destination: DestinationOut
    createdAt: Timestamp
    updatedAt: Timestamp
    failingSince: Timestamp | None
    deactivatedAt: Timestamp | None
    deactivationReason: str | None

    @classmethod
    def from_row(cls, sub: Subscription, external_id: str | None) -> Self:
        """Secrets masked, never returned; a role destination shows the tenant's
        ``external_id`` (read-only)."""
        block = DestinationBlockOut(
            queueUrl=sub.target if sub.destination_type == "SQS" else None,
            topicArn=sub.target if sub.destination_type != "SQS" else None,
            region=sub.region,
            credentials=sub.credentials,  # type: ignore[arg-type]
            accessKey=mask_key(sub.access_key) if sub.access_key else None,
            accessSecret=MASK if sub.access_secret_enc else None,
            roleArn=sub.role_arn,
            externalId=external_id if sub.credentials == "role" else None,
        )
        destination = DestinationOut.model_validate(
            {"type": sub.destination_type, sub.destination_type.lower(): block})
        return cls(id=sub.id, active=sub.active, entityType=sub.entity_type,
                   subscribeCreate=sub.subscribe_create, subscribeChange=sub.subscribe_change,
                   subscribeDelete=sub.subscribe_delete, eventTypes=sub.event_types.split(),
                   destination=destination, createdAt=sub.created_at, updatedAt=sub.updated_at,
                   failingSince=sub.failing_since, deactivatedAt=sub.deactivated_at,
                   deactivationReason=sub.deactivation_reason)


class Deactivated(ResponseModel):
    body: dict[str, Any]
    statusCode: str
    statusCodeValue: int


class AttemptOut(ResponseModel):
    """One delivery attempt in the attempt log."""

    id: int = Field(description="opaque (says nothing about other tenants); pass as from_id")
    deliveryId: int = Field(description="opaque, the same for every attempt of a delivery")
    eventId: str
    attempt: int
    attemptedAt: Timestamp
    status: str
    errorCode: str | None
    errorMessage: str | None
    messageId: str | None
    latencyMs: int

    @classmethod
    def from_row(cls, row: DeliveryAttempt) -> Self:
        return cls(id=row.id, deliveryId=row.delivery_id, eventId=row.event_id,
                   attempt=row.attempt, attemptedAt=row.attempted_at, status=row.status,
                   errorCode=row.error_code, errorMessage=row.error_message,
                   messageId=row.message_id, latencyMs=row.latency_ms)


class AttemptList(ResponseModel):
    deliveries: list[AttemptOut]
    total: int
    next_from_id: int | None


class Queued(ResponseModel):
    queued: int
    deferred: bool = Field(
        description="true when the broker could not be reached: the deliveries are recorded "
                    "and the scheduler's sweep sends them (do not retry: that replays again)")


class TestResult(ResponseModel):
    """The outcome of a test send. A secret that cannot be decrypted is answered without
    ``messageId`` and ``transient``."""

    ok: bool
    messageId: str | None
    errorCode: str | None
    errorMessage: str | None
    transient: bool | None
