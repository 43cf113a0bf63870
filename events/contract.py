"""Events as the HTTP contract defines them: enums, the validated input model (EventIn), the
response models (EventOut and the shapes built on it), ids, hashing, payload views.

A field of an event is declared here twice, once as clients send it (EventIn) and once as it is
stored and returned (EventOut); event_document, EventOut.from_row and event_columns map it onto
the EventRecord column of the same name (``_COLUMN_OF`` lists the few that differ)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import time
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from infra.contract import ErrorBody, ResponseModel, Timestamp
from infra.limits import (
    ATTR_KEY_MAX,
    ATTR_VALUE_MAX,
    ENTITY_ID_MAX,
    EVENT_ID_MAX,
    EVENT_ID_PATTERN,
    MAX_KEY_ATTRIBUTES,
)
from infra.timefmt import format_time

if TYPE_CHECKING:
    from events.models import EventRecord, QuarantinedEvent


class EventType(StrEnum):
    ENTITY_EVENT = "ENTITY_EVENT"
    FAULT = "FAULT"
    WARNING = "WARNING"
    SYSTEM = "SYSTEM"


class EntityName(StrEnum):
    ORDER = "ORDER"
    ORDER_ENTRY = "ORDER_ENTRY"
    CUSTOMER = "CUSTOMER"
    ADDRESS = "ADDRESS"
    PRODUCT = "PRODUCT"
    VARIANT_PRODUCT = "VARIANT_PRODUCT"
    PRICE = "PRICE"
    INVENTORY_LEVEL = "INVENTORY_LEVEL"
    INVENTORY_LOCATION = "INVENTORY_LOCATION"
    INVENTORY_ITEM = "INVENTORY_ITEM"
    STORE = "STORE"
    MERCHANT = "MERCHANT"
    WISHLIST = "WISHLIST"
    WISHLIST_ITEM = "WISHLIST_ITEM"
    OTHER = "OTHER"
    EVENT = "EVENT"


class EventSource(StrEnum):
    """Where an event comes from. Seed 002 lists the four kinds of source; seeds 000/001 list the
    entities (``ORDER``, ``PRICE``, ...) instead: both are accepted, stored and read back as sent.
    An entity named as the source is also the event's ``entity_name`` when that is left out."""

    SYSTEM = "SYSTEM"
    CONNECTOR = "CONNECTOR"
    APPLICATION = "APPLICATION"
    SERVERLESS = "SERVERLESS"
    CUSTOMER = "CUSTOMER"
    INVENTORY_LEVEL = "INVENTORY_LEVEL"
    INVENTORY_LOCATION = "INVENTORY_LOCATION"
    ORDER = "ORDER"
    PRICE = "PRICE"
    PRODUCT = "PRODUCT"
    VARIANT_PRODUCT = "VARIANT_PRODUCT"
    WISHLIST = "WISHLIST"


class Operation(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    READ = "READ"
    BULK_CREATE = "BULK_CREATE"
    BULK_UPDATE = "BULK_UPDATE"


# Matched whole (fullmatch; pydantic and JSON Schema get them anchored): see store/limits.py.


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail in the persist pool.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
ShortText = Annotated[str, StringConstraints(max_length=ENTITY_ID_MAX), AfterValidator(_no_nul)]
AttrKey = Annotated[str, StringConstraints(min_length=1, max_length=ATTR_KEY_MAX),
                    AfterValidator(_no_nul)]
AttrValue = Annotated[str, StringConstraints(max_length=ATTR_VALUE_MAX), AfterValidator(_no_nul)]
# A client-chosen id (events, subscriptions, jobs).
ClientId = Annotated[str, StringConstraints(max_length=EVENT_ID_MAX, pattern=EVENT_ID_PATTERN)]


def _standard_base64(value: str | None) -> str | None:
    # The content is what the upstream said (JSON, an HTML error page, XML, a form): it is stored
    # as sent; only the encoding is checked.
    if value is None:
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be standard base64") from None
    return value


Base64Content = Annotated[Text, AfterValidator(_standard_base64), Field(
    description="standard base64 (RFC 4648 section 4); the content need not be JSON: it is stored "
                "as sent")]


class EventPayloadIn(BaseModel):
    """The ``event_payload`` object of an event."""

    model_config = ConfigDict(extra="forbid", strict=True)

    base64_encoded_payload_json: Base64Content | None = None
    base64_encoded_fault_json: Base64Content | None = None
    entity_id: ShortText | None = None
    key_attributes: dict[AttrKey, AttrValue] = Field(default_factory=dict)
    operation: Operation | None = None

    @field_validator("key_attributes", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) > MAX_KEY_ATTRIBUTES:
            raise ValueError(f"at most {MAX_KEY_ATTRIBUTES} key attributes are allowed")
        return value

    @field_validator("operation", mode="before")
    @classmethod
    def _operation_enum(cls, value: Any) -> Any:
        return _enum_value(Operation, value)


def _enum_value(enum: type[StrEnum], value: Any) -> Any:
    # Strict mode refuses plain strings for enums; convert here, with a clear message.
    if value is None or isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(m.value for m in enum)
            raise ValueError(f"must be one of {allowed}") from None
    raise ValueError("must be a string")


class EventIn(BaseModel):
    """An event as a client posts it (seeds 000-002), validated and normalised."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: ClientId | None = None
    entity_id: ShortText | None = None
    entity_name: EntityName | None = None
    event_source: EventSource
    event_type: EventType
    event_payload: EventPayloadIn = Field(default_factory=EventPayloadIn)

    @model_validator(mode="before")
    @classmethod
    def _seed_002_form(cls, data: Any) -> Any:
        # Seed 002 lists entity names under event_type: read that as an ENTITY_EVENT of that entity.
        if isinstance(data, dict):
            event_type = data.get("event_type")
            if (
                isinstance(event_type, str)
                and event_type in EntityName.__members__
                and event_type not in EventType.__members__
                and data.get("entity_name") is None
            ):
                data = {**data, "entity_name": event_type, "event_type": "ENTITY_EVENT"}
            source = data.get("event_source")
            # Seeds 000/001 name the entity in event_source: it is the entity, unless named.
            if (isinstance(source, str) and source in EntityName.__members__
                    and source in EventSource.__members__ and data.get("entity_name") is None):
                data = {**data, "entity_name": source}
        return data

    @field_validator("entity_name", mode="before")
    @classmethod
    def _entity_enum(cls, value: Any) -> Any:
        return _enum_value(EntityName, value)

    @field_validator("event_source", mode="before")
    @classmethod
    def _source_enum(cls, value: Any) -> Any:
        return _enum_value(EventSource, value)

    @field_validator("event_type", mode="before")
    @classmethod
    def _type_enum(cls, value: Any) -> Any:
        return _enum_value(EventType, value)



def entity_event_problems(event: EventIn) -> list[dict[str, str]]:
    """What an ENTITY_EVENT lacks (subscriptions match on entity name and operation)."""
    if event.event_type is not EventType.ENTITY_EVENT:
        return []
    problems = []
    if event.entity_name is None:
        problems.append({"field": "entity_name", "message": "required for an ENTITY_EVENT",
                         "type": "missing"})
    if event.event_payload.operation is None:
        problems.append({"field": "event_payload.operation",
                         "message": "required for an ENTITY_EVENT", "type": "missing"})
    return problems


_ID_LOCK = threading.Lock()
_last_ms = 0
_last_counter = 0


def new_event_id() -> str:
    """Return a time-ordered UUIDv7 string (RFC 9562), increasing within this process.

    Within one millisecond the 12-bit ``rand_a`` field is a counter (RFC 9562 method 1), so ids
    made in a burst still sort in creation order.
    """
    global _last_ms, _last_counter
    with _ID_LOCK:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _last_counter += 1
            if _last_counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                _last_counter = int.from_bytes(os.urandom(1), "big")
        else:
            _last_counter = int.from_bytes(os.urandom(1), "big")  # leave room to count up
        _last_ms = ms
        counter = _last_counter
    rand = int.from_bytes(os.urandom(8), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (counter & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_document(event: EventIn, event_id: str, received_at: datetime) -> dict[str, Any]:
    """The event as it is stored and returned by ``GET /api/v1/events/{id}`` (EventOut's shape:
    EventIn's fields in their order, the id filled in, and ``received_at``; a field added later
    left out when unset)."""
    document = {**event.model_dump(mode="json"), "id": event_id,
                "received_at": format_time(received_at)}
    for name in EventOut.omitted_when_none:
        if document.get(name, "") is None:
            del document[name]
    return document


# --- the event as stored and returned ---------------------------------------------------------

_AS_SENT = ("standard base64, stored and returned as sent; its content need not be JSON (an "
            "upstream's HTML error page, XML or a form is kept as it came)")


class EventPayloadOut(ResponseModel):
    base64_encoded_payload_json: str | None = Field(description=_AS_SENT)
    base64_encoded_fault_json: str | None = Field(description=_AS_SENT)
    entity_id: str | None
    key_attributes: dict[str, str]
    operation: str | None


class EventOut(ResponseModel):
    """An event as stored and returned (the document event_document makes)."""

    # Optional fields added to the contract later are left out (not null) when unset, so that
    # the answer to a client that does not use them stays what it was.
    omitted_when_none: ClassVar[frozenset[str]] = frozenset()

    id: str
    entity_id: str | None
    entity_name: str | None
    event_source: str
    event_type: str
    event_payload: EventPayloadOut
    received_at: Timestamp = Field(description="RFC 3339, UTC, when the collector accepted the "
                                               "event")

    @classmethod
    def from_row(cls, row: EventRecord) -> Self:
        return cls.model_validate(stored_fields(row))


# The EventRecord column of a document field, where its name differs (the others have the
# field's own name).
_COLUMN_OF = {"id": "event_id"}
_PAYLOAD_COLUMN_OF = {"base64_encoded_payload_json": "payload_b64",
                      "base64_encoded_fault_json": "fault_b64", "entity_id": "payload_entity_id"}
_EVENT_FIELDS = tuple(n for n in EventOut.model_fields if n != "event_payload")


def stored_fields(row: EventRecord) -> dict[str, Any]:
    """EventOut's fields read from an EventRecord (unvalidated)."""
    values = {name: getattr(row, _COLUMN_OF.get(name, name)) for name in _EVENT_FIELDS}
    payload = {name: getattr(row, _PAYLOAD_COLUMN_OF.get(name, name))
               for name in EventPayloadOut.model_fields}
    payload["key_attributes"] = dict(payload["key_attributes"] or {})
    return {**values, "event_payload": payload}


def event_columns(document: dict[str, Any]) -> dict[str, Any]:
    """The EventRecord columns of a stored document (event_document's), ``received_at`` left as
    the document's text."""
    payload = document.get("event_payload") or {}
    columns = {_COLUMN_OF.get(name, name): document.get(name) for name in _EVENT_FIELDS}
    columns.update({_PAYLOAD_COLUMN_OF.get(name, name): payload.get(name)
                    for name in EventPayloadOut.model_fields})
    columns["key_attributes"] = payload.get("key_attributes") or {}
    return columns


class QuarantineDetails(ResponseModel):
    """Why and since when an accepted event is quarantined."""

    id: int = Field(description="the quarantine entry's id, opaque (from_id of GET "
                                "/api/v1/quarantine)")
    reason: str = Field(description="why the database refused the event (no values quoted)")
    error: str = Field(description="the database error's class, e.g. StringDataRightTruncation")
    quarantined_at: Timestamp
    retries: int = Field(description="operator re-drives that failed again")
    last_retry_at: Timestamp | None

    @classmethod
    def from_row(cls, row: QuarantinedEvent) -> Self:
        return cls(id=row.id, reason=row.reason, error=row.error_class,
                   quarantined_at=row.quarantined_at, retries=row.retries,
                   last_retry_at=row.last_retry_at)


class EventStatus(EventOut):
    """An event as GET /api/v1/events/{id} returns it: the document and where it is."""

    omitted_when_none: ClassVar[frozenset[str]] = EventOut.omitted_when_none | {"quarantine"}

    status: Literal["stored", "accepted", "quarantined"] = Field(
        description="stored; accepted (not stored yet: the intake's record, read-your-writes); "
                    "quarantined (accepted, but the database refused it: see quarantine)")
    quarantine: QuarantineDetails | None = Field(
        None, description="present when status is quarantined")


class QuarantinedEventOut(EventOut):
    """An accepted event the database refused: the accepted document and why."""

    status: Literal["quarantined"]
    quarantine: QuarantineDetails


class EventList(ResponseModel):
    events: list[EventOut]
    total: int
    next_from_id: int | None = Field(
        description="pass as from_id for the next page. In id ASC order the last non-empty page "
        "still gives one (last + 1) so a client can come back for newer events; an empty page "
        "(or the end in other orders) gives null")


class QuarantineList(ResponseModel):
    events: list[QuarantinedEventOut]
    total: int
    next_from_id: int | None = Field(description="pass as from_id for the next page; null at "
                                                 "the end")


# The fields every stored hash covers, null or not. A field added to the contract later counts
# only when it is set, so an event stored before it existed, posted again, is still a duplicate.
_HASHED_ALWAYS = frozenset({"entity_id", "entity_name", "event_source", "event_type",
                            "event_payload"})


def body_hash(document: dict[str, Any]) -> str:
    """Hash of what the client said (everything but the server's fields): idempotency key."""
    client_part = {k: v for k, v in document.items() if k not in ("id", "received_at")
                   and (v is not None or k in _HASHED_ALWAYS)}
    return hashlib.sha256(orjson.dumps(client_part, option=orjson.OPT_SORT_KEYS)).hexdigest()


_NOT_JSON = object()


def _decoded(raw: str) -> tuple[Any, str]:
    """The JSON a base64 field holds, else ``_NOT_JSON`` and its text (UTF-8, undecodable bytes
    replaced)."""
    try:
        data = base64.b64decode(raw)
    except (binascii.Error, ValueError):
        return _NOT_JSON, raw
    try:
        return orjson.loads(data), ""
    except orjson.JSONDecodeError:
        return _NOT_JSON, data.decode("utf-8", errors="replace")


def _first_payload(document: dict[str, Any]) -> tuple[Any, str] | None:
    """``_decoded`` of the event's payload, else of its fault; None when it has neither."""
    payload = document.get("event_payload") or {}
    for key in ("base64_encoded_payload_json", "base64_encoded_fault_json"):
        raw = payload.get(key)
        if raw:
            return _decoded(raw)
    return None


def decoded_payload(document: dict[str, Any]) -> Any:
    """The JSON of ``base64_encoded_payload_json`` (or else the fault) of a stored event; None when
    there is none or it is not JSON (the read models skip and count such events)."""
    found = _first_payload(document)
    return None if found is None or found[0] is _NOT_JSON else found[0]


def payload_view(document: dict[str, Any]) -> Any:
    """What the views show of an event's payload (else its fault): the JSON when it parses, the
    text otherwise (an upstream's HTML error page, XML, a form), None when there is none."""
    found = _first_payload(document)
    if found is None:
        return None
    value, text = found
    return text if value is _NOT_JSON else value


# --- the batch route (ingest/routes.py builds its answer as plain dicts, for speed, in this
# shape; schemathesis checks that it keeps to it) ------------------------------------------------


class BatchRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})
    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000,
                                         description="each item is an EventIn")


class BatchItem(ResponseModel):
    index: int
    status: int = Field(description="201 accepted, 200 duplicate, 400 invalid, 409 id conflict")
    id: str | None = None
    event: EventOut | None = None
    error: ErrorBody | None = None


class BatchResult(ResponseModel):
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    results: list[BatchItem]
