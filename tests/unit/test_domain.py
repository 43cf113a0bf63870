"""events/contract.py: event ids, hashing, time formats and the input model without HTTP."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from events.contract import EventIn, body_hash, decoded_payload, event_document, new_event_id
from infra.timefmt import format_time, parse_time
from tests.conftest import b64, order_event


def test_new_event_ids_are_uuid7() -> None:
    # Given ids made now
    before_ms = time.time_ns() // 1_000_000
    made = [new_event_id() for _ in range(200)]
    after_ms = time.time_ns() // 1_000_000
    for value in made:
        parsed = uuid.UUID(value)
        # Then each is a canonical RFC 9562 UUID, version nibble 7
        assert str(parsed) == value
        assert value[14] == "7"
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        # And its first 48 bits are the Unix time in milliseconds
        assert before_ms <= parsed.int >> 80 <= after_ms
    assert len(set(made)) == 200


def test_new_event_ids_sort_in_creation_order_across_milliseconds() -> None:
    # Given ids made a couple of milliseconds apart
    made = []
    for _ in range(20):
        made.append(new_event_id())
        time.sleep(0.002)
    # Then sorting them as strings gives creation order
    assert sorted(made) == made


def test_new_event_ids_sort_in_creation_order_within_a_millisecond() -> None:
    # Given many ids made back to back (a batch assigns them this way)
    made = [new_event_id() for _ in range(1000)]
    # Then they still sort in creation order
    assert sorted(made) == made


def _document(**changes: object) -> dict[str, object]:
    event = EventIn.model_validate(order_event())
    doc = event_document(event, "id-1", datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    doc.update(changes)
    return doc


def test_body_hash_ignores_id_and_received_at() -> None:
    # Given the same event under two ids and two receive times
    a = _document()
    b = _document(id="id-2", received_at="2030-01-01T00:00:00.000Z")
    # Then the hashes are equal
    assert body_hash(a) == body_hash(b)
    assert len(body_hash(a)) == 64


def test_body_hash_changes_with_any_client_field_and_not_with_key_order() -> None:
    # Given the same document, one with reordered keys, and variants in client fields
    base = _document()
    reordered = dict(reversed(list(base.items())))
    other_entity = _document(entity_id="order-2")
    payload = dict(base["event_payload"])  # type: ignore[arg-type]
    payload["key_attributes"] = {"correlationId": "corr-2", "referenceId": "ref-1"}
    other_attr = _document(event_payload=payload)
    # Then key order does not matter, content does
    assert body_hash(reordered) == body_hash(base)
    assert body_hash(other_entity) != body_hash(base)
    assert body_hash(other_attr) != body_hash(base)


def test_event_document_shape() -> None:
    # Given a validated event
    doc = _document()
    # Then the stored document has the seed fields plus id and received_at
    assert doc["id"] == "id-1"
    assert doc["received_at"] == "2026-01-02T03:04:05.678Z"
    assert (doc["entity_name"], doc["event_type"], doc["event_source"]) \
        == ("ORDER", "ENTITY_EVENT", "APPLICATION")
    assert set(doc["event_payload"]) == {  # type: ignore[arg-type]
        "base64_encoded_payload_json", "base64_encoded_fault_json", "entity_id",
        "key_attributes", "operation"}


def test_format_and_parse_time() -> None:
    # Given an aware time in another zone, a naive time, and RFC 3339 strings
    plus2 = datetime(2026, 1, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    # Then formatting is UTC with milliseconds and Z; naive is read as UTC
    assert format_time(plus2) == "2026-01-01T12:00:00.123Z"
    assert format_time(datetime(2026, 1, 1, 12, 0)) == "2026-01-01T12:00:00.000Z"
    # And parsing gives aware UTC times
    assert parse_time("2026-01-01T14:00:00+02:00") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_time("2026-01-01T12:00:00Z") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_time("2026-01-01T12:00:00").tzinfo == UTC
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_decoded_payload_prefers_the_payload_then_the_fault() -> None:
    # Given documents with both, only a fault, neither
    both = {"event_payload": {"base64_encoded_payload_json": b64({"p": 1}),
                              "base64_encoded_fault_json": b64({"f": 1})}}
    fault = {"event_payload": {"base64_encoded_fault_json": b64([1, 2])}}
    # Then the payload wins, the fault is the fallback, nothing gives None
    assert decoded_payload(both) == {"p": 1}
    assert decoded_payload(fault) == [1, 2]
    assert decoded_payload({"event_payload": {}}) is None
    assert decoded_payload({}) is None


def test_event_in_reads_seed_002_entity_names_under_event_type() -> None:
    # Given each entity name sent as event_type without entity_name
    for name in ("ORDER", "WISHLIST_ITEM", "EVENT", "OTHER"):
        raw = order_event(event_type=name)
        del raw["entity_name"]
        # When validated
        event = EventIn.model_validate(raw)
        # Then it is an ENTITY_EVENT of that entity
        assert (event.event_type.value, event.entity_name.value) == ("ENTITY_EVENT", name)


def test_event_in_is_strict() -> None:
    # Given numbers where strings belong, and an enum value in the wrong case
    for raw in (order_event(entity_id=1), order_event(event_source="application"),
                order_event(id=5)):
        # When validated
        # Then it is refused
        with pytest.raises(ValidationError):
            EventIn.model_validate(raw)
