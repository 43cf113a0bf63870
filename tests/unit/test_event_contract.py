"""The event contract is one: the document the ingest path stores (event_document) is exactly
what EventOut (GET /api/v1/events/{id}, the delivery body) validates and serialises, and its
fields map onto EventRecord columns and back without loss."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from events.contract import (
    EventIn,
    EventOut,
    EventPayloadIn,
    EventPayloadOut,
    body_hash,
    event_columns,
    event_document,
    stored_fields,
)
from tests.conftest import b64, order_event

RECEIVED = datetime(2026, 12, 1, 17, 5, 9, 123456, tzinfo=UTC)

EVENTS: list[dict[str, Any]] = [
    order_event(id="contract-1"),
    {"event_source": "CONNECTOR", "event_type": "FAULT", "entity_id": "order-9",
     "event_payload": {"base64_encoded_fault_json": b64({"status": 503}),
                       "key_attributes": {"correlationId": "c-9"}}},
    {"event_source": "APPLICATION", "event_type": "CUSTOMER", "event_payload": {"operation": "UPDATE"}},
    {"event_source": "PRICE", "event_type": "ENTITY_EVENT", "event_payload": {"operation": "CREATE"}},
]


@pytest.mark.parametrize("raw", EVENTS)
def test_a_stored_document_validates_as_event_out_and_round_trips(raw: dict[str, Any]) -> None:
    # Given the document the ingest path makes of a valid event
    document = event_document(EventIn.model_validate(raw), raw.get("id") or "generated-id",
                              RECEIVED)
    # When it is validated as the response model and serialised again
    shown = EventOut.model_validate(document).model_dump(mode="json")
    # Then nothing is added, lost, changed or reordered
    assert shown == document
    assert list(shown) == list(document)
    assert list(shown["event_payload"]) == list(document["event_payload"])
    assert document["received_at"] == "2026-12-01T17:05:09.123Z"


@pytest.mark.parametrize("raw", EVENTS)
def test_a_document_maps_onto_its_columns_and_back(raw: dict[str, Any]) -> None:
    # Given a stored document, written to the columns event_columns names
    document = event_document(EventIn.model_validate(raw), "id-1", RECEIVED)
    row = SimpleNamespace(**{**event_columns(document), "received_at": RECEIVED})
    # When the row is read back as GET shows it
    shown = EventOut.model_validate(stored_fields(row)).model_dump(mode="json")  # type: ignore[arg-type]
    # Then it is the document
    assert shown == document


def test_the_input_and_output_models_declare_the_same_fields() -> None:
    # A field added to EventIn but not to EventOut (or the other way) would be dropped on the
    # way to the database or the reader.
    assert list(EventOut.model_fields) == [*EventIn.model_fields, "received_at"]
    assert list(EventPayloadOut.model_fields) == list(EventPayloadIn.model_fields)


def test_a_field_added_later_leaves_the_hash_of_an_event_without_it_unchanged() -> None:
    # Given a stored document, and the same document with a later optional field left null
    document = event_document(EventIn.model_validate(EVENTS[0]), "id-1", RECEIVED)
    # Then both hash alike (a retry after the upgrade is a duplicate, not a conflict)
    assert body_hash({**document, "added_later": None}) == body_hash(document)
    # And a value in it counts, as do the original fields when null
    assert body_hash({**document, "added_later": "1"}) != body_hash(document)
    assert body_hash({**document, "entity_id": None}) != body_hash(
        {k: v for k, v in document.items() if k != "entity_id"})


def test_the_postgresql_insert_reads_each_column_as_its_stored_type() -> None:
    # The recordset insert names a PostgreSQL type per column, derived from the table: a column
    # typed by a TypeDecorator (infra.db.UtcDateTime) must be read as what it stores, or every
    # insert fails ("timestamp with time zone but expression is of type text").
    from events.models import EventRecord
    from events.repository import _COLUMNS
    from infra.db import UtcDateTime

    types = dict(_COLUMNS)
    stamped = [c.name for c in EventRecord.__table__.columns if isinstance(c.type, UtcDateTime)]
    assert stamped and all(types[name] == "timestamptz" for name in stamped)
    assert types["key_attributes"] == "jsonb"
    assert types["event_id"] == "text"
