"""Event bodies the end-to-end notification-job tests post (integration and chaos)."""

from __future__ import annotations

from typing import Any

from tests.conftest import b64


def entity(name: str, op: str, payload: dict[str, Any], entity_id: str) -> dict[str, Any]:
    return {"entity_id": entity_id, "entity_name": name, "event_source": "CONNECTOR",
            "event_type": "ENTITY_EVENT",
            "event_payload": {"operation": op, "base64_encoded_payload_json": b64(payload)}}


def wishlist(wid: str, customer: str, email: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return entity("WISHLIST", "CREATE", {
        "customer": {"id": customer, "email": email, "first_name": customer.title()},
        "items": items}, wid)


def item(pid: str, price: float, vid: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"product_id": pid, "title": f"Product {pid}",
                           "url": f"https://shop.example/{pid}?ref=wl", "price": price,
                           "currency": "EUR"}
    if vid:
        out["variant_id"] = vid
    return out
