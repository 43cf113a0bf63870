"""Events as the HTTP contract defines them: enums, the validated input model, ids, hashing, payload views."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

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

from infra.limits import (
    ATTR_KEY_MAX,
    ATTR_VALUE_MAX,
    ENTITY_ID_MAX,
    EVENT_ID_MAX,
    EVENT_ID_PATTERN,
    MAX_KEY_ATTRIBUTES,
)
from infra.timefmt import format_time


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
    """The event as it is stored and returned by ``GET /api/v1/events/{id}``."""
    p = event.event_payload
    return {
        "id": event_id,
        "entity_id": event.entity_id,
        "entity_name": event.entity_name.value if event.entity_name else None,
        "event_source": event.event_source.value,
        "event_type": event.event_type.value,
        "event_payload": {
            "base64_encoded_payload_json": p.base64_encoded_payload_json,
            "base64_encoded_fault_json": p.base64_encoded_fault_json,
            "entity_id": p.entity_id,
            "key_attributes": dict(p.key_attributes),
            "operation": p.operation.value if p.operation else None,
        },
        "received_at": format_time(received_at),
    }


def body_hash(document: dict[str, Any]) -> str:
    """Hash of what the client said (everything but the server's fields): idempotency key."""
    client_part = {k: v for k, v in document.items() if k not in ("id", "received_at")}
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
