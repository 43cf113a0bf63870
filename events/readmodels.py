"""Read models the notification jobs need, projected from entity events (see docs/PAYLOADS.md).

Fed by the persist pool in the same transaction as the events it stores. Payloads that do not fit
are skipped with a counted reason (``projection_skips``) and a log line, never an error.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from events.contract import decoded_payload
from events.models import Customer, Price, ProjectionSkip, StockLevel, Wishlist, WishlistItem
from infra.db import is_permanent_operational
from infra.timefmt import parse_time

log = logging.getLogger(__name__)

PROJECTED = {"WISHLIST", "WISHLIST_ITEM", "PRICE", "PRODUCT", "VARIANT_PRODUCT",
             "INVENTORY_LEVEL", "CUSTOMER"}
_UPSERTS = {"CREATE", "UPDATE", "BULK_CREATE", "BULK_UPDATE"}


class Skip(Exception):
    """The event does not fit the documented payload; the message is the counted reason."""


def _text(value: Any, name: str, *, required: bool = True, limit: int = 255) -> str | None:
    if value is None or value == "":
        if required:
            raise Skip(f"missing {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Skip(f"{name} is not a string")
    text = str(value)
    if len(text) > limit or "\x00" in text:
        raise Skip(f"{name} is too long or has NUL")
    return text


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Skip(f"{name} is not a number")
    if value < 0:
        raise Skip(f"{name} is negative")
    return float(value)


def _upsert(session: Session, model: Any, values: dict[str, Any], keys: list[str],
            *, newer_only: bool = True) -> None:
    dialect = session.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(model).values(**values)
    changes = {k: v for k, v in values.items() if k not in keys}
    where = (model.as_of <= ins.excluded.as_of) if newer_only and hasattr(model, "as_of") else None
    session.execute(ins.on_conflict_do_update(index_elements=keys, set_=changes, where=where))


def _customer(session: Session, tenant: str, raw: Any, as_of: datetime) -> str:
    if not isinstance(raw, dict):
        raise Skip("customer is not an object")
    customer_id = _text(raw.get("id") or raw.get("customer_id"), "customer.id")
    assert customer_id is not None
    email = _text(raw.get("email"), "customer.email", required=False, limit=320)
    first = _text(raw.get("first_name"), "customer.first_name", required=False)
    values = {"tenant": tenant, "customer_id": customer_id, "as_of": as_of}
    existing = session.get(Customer, (tenant, customer_id))
    if existing is None:
        session.add(Customer(**values, email=email, first_name=first))
        session.flush()
    elif existing.as_of <= as_of:
        existing.email = email or existing.email
        existing.first_name = first or existing.first_name
        existing.as_of = as_of
    return customer_id


def _item_fields(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Skip("item is not an object")
    return {
        "product_id": _text(raw.get("product_id"), "item.product_id"),
        "variant_id": _text(raw.get("variant_id"), "item.variant_id", required=False) or "",
        "title": _text(raw.get("title"), "item.title", required=False, limit=1024),
        "url": _text(raw.get("url"), "item.url", required=False, limit=2048),
        "image_url": _text(raw.get("image_url"), "item.image_url", required=False, limit=2048),
        "price_at_add": _number(raw.get("price"), "item.price"),
        "currency": _text(raw.get("currency"), "item.currency", required=False, limit=8),
    }


def _put_item(session: Session, tenant: str, wishlist_id: str, fields: dict[str, Any],
              now: datetime) -> None:
    key = (tenant, wishlist_id, fields["product_id"], fields["variant_id"])
    item = session.get(WishlistItem, key)
    if item is None:
        session.add(WishlistItem(tenant=tenant, wishlist_id=wishlist_id, added_at=now, **fields))
        session.flush()
    else:  # keep what was last mailed about it
        for name in ("title", "url", "image_url", "currency"):
            if fields[name] is not None:
                setattr(item, name, fields[name])


def _project_wishlist(session: Session, tenant: str, doc: dict[str, Any], payload: Any,
                      operation: str, as_of: datetime) -> None:
    wishlist_id = _text(doc.get("entity_id") or (doc.get("event_payload") or {}).get("entity_id"),
                        "entity_id")
    assert wishlist_id is not None
    if operation == "DELETE":
        session.execute(delete(WishlistItem).where(WishlistItem.tenant == tenant,
                                                   WishlistItem.wishlist_id == wishlist_id))
        session.execute(delete(Wishlist).where(Wishlist.tenant == tenant,
                                               Wishlist.wishlist_id == wishlist_id))
        return
    if not isinstance(payload, dict):
        raise Skip("payload is not an object")
    items = payload.get("items", [])
    if not isinstance(items, list):
        raise Skip("items is not a list")
    parsed = [_item_fields(i) for i in items]
    customer_id = _customer(session, tenant, payload.get("customer"), as_of)
    wishlist = session.get(Wishlist, (tenant, wishlist_id))
    if wishlist is not None and wishlist.as_of > as_of:
        raise Skip("older than the stored wishlist")
    if wishlist is None:
        session.add(Wishlist(tenant=tenant, wishlist_id=wishlist_id, customer_id=customer_id,
                             as_of=as_of))
        session.flush()
    else:
        wishlist.customer_id = customer_id
        wishlist.as_of = as_of
    keep = {(f["product_id"], f["variant_id"]) for f in parsed}
    for item in session.execute(select(WishlistItem).where(
            WishlistItem.tenant == tenant, WishlistItem.wishlist_id == wishlist_id)).scalars():
        if (item.product_id, item.variant_id) not in keep:
            session.delete(item)
    for fields in parsed:
        _put_item(session, tenant, wishlist_id, fields, as_of)


def _project_wishlist_item(session: Session, tenant: str, payload: Any, operation: str,
                           as_of: datetime) -> None:
    if not isinstance(payload, dict):
        raise Skip("payload is not an object")
    wishlist_id = _text(payload.get("wishlist_id"), "wishlist_id")
    assert wishlist_id is not None
    fields = _item_fields(payload.get("item"))
    if operation == "DELETE":
        session.execute(delete(WishlistItem).where(
            WishlistItem.tenant == tenant, WishlistItem.wishlist_id == wishlist_id,
            WishlistItem.product_id == fields["product_id"],
            WishlistItem.variant_id == fields["variant_id"]))
        return
    if session.get(Wishlist, (tenant, wishlist_id)) is None:
        customer_id = _customer(session, tenant, payload.get("customer"), as_of)
        session.add(Wishlist(tenant=tenant, wishlist_id=wishlist_id, customer_id=customer_id,
                             as_of=as_of))
        session.flush()
    elif payload.get("customer") is not None:
        _customer(session, tenant, payload.get("customer"), as_of)
    _put_item(session, tenant, wishlist_id, fields, as_of)


def _project_price(session: Session, tenant: str, payload: Any, as_of: datetime) -> None:
    if not isinstance(payload, dict):
        raise Skip("payload is not an object")
    price = _number(payload.get("price"), "price")
    if price is None:
        raise Skip("no price")
    _upsert(session, Price, {
        "tenant": tenant, "product_id": _text(payload.get("product_id"), "product_id"),
        "variant_id": _text(payload.get("variant_id"), "variant_id", required=False) or "",
        "price": price, "currency": _text(payload.get("currency"), "currency", required=False,
                                          limit=8),
        "as_of": as_of}, ["tenant", "product_id", "variant_id"])


def _project_stock(session: Session, tenant: str, payload: Any, as_of: datetime) -> None:
    if not isinstance(payload, dict):
        raise Skip("payload is not an object")
    available = payload.get("available")
    if isinstance(available, bool) or not isinstance(available, int) or available < 0:
        raise Skip("available is not a non-negative integer")
    if available >= 2**31:
        raise Skip("available is too large")
    product_id = _text(payload.get("product_id"), "product_id")
    variant_id = _text(payload.get("variant_id"), "variant_id", required=False) or ""
    stock = session.get(StockLevel, (tenant, product_id, variant_id))
    if stock is None:
        session.add(StockLevel(tenant=tenant, product_id=product_id, variant_id=variant_id,
                               available=available, as_of=as_of,
                               last_rise_at=as_of if available > 0 else None))
        session.flush()
        return
    if stock.as_of > as_of:
        raise Skip("older than the stored stock level")
    if stock.available == 0 and available > 0:
        stock.restocked_at = as_of
    if available > stock.available:
        stock.last_rise_at = as_of
    stock.available = available
    stock.as_of = as_of


def _count_skip(session: Session, tenant: str, entity: str, reason: str, event_id: str) -> None:
    dialect = session.get_bind().dialect.name
    ins = (pg_insert if dialect == "postgresql" else sqlite_insert)(ProjectionSkip).values(
        tenant=tenant, entity_name=entity, reason=reason[:255], count=1, last_event_id=event_id)
    session.execute(ins.on_conflict_do_update(
        index_elements=["tenant", "entity_name", "reason"],
        set_={"count": ProjectionSkip.count + 1, "last_event_id": event_id}))


def project(session: Session, tenant: str, docs: list[dict[str, Any]]) -> int:
    """Apply the entity events among ``docs`` to the read models; return how many were skipped."""
    skipped = 0
    for doc in docs:
        entity = doc.get("entity_name")
        if doc.get("event_type") != "ENTITY_EVENT" or entity not in PROJECTED:
            continue
        operation = (doc.get("event_payload") or {}).get("operation") or ""
        if operation not in _UPSERTS and operation != "DELETE":
            continue
        as_of = parse_time(doc["received_at"])
        payload = decoded_payload({"event_payload": {"base64_encoded_payload_json": (
            doc.get("event_payload") or {}).get("base64_encoded_payload_json")}})
        try:
            with session.begin_nested():
                if entity == "WISHLIST":
                    _project_wishlist(session, tenant, doc, payload, operation, as_of)
                elif entity == "WISHLIST_ITEM":
                    _project_wishlist_item(session, tenant, payload, operation, as_of)
                elif entity == "CUSTOMER":
                    if operation != "DELETE":
                        if isinstance(payload, dict) and "id" not in payload and doc.get("entity_id"):
                            payload = {**payload, "id": doc["entity_id"]}
                        _customer(session, tenant, payload, as_of)
                elif entity == "INVENTORY_LEVEL":
                    if operation != "DELETE":
                        _project_stock(session, tenant, payload, as_of)
                elif operation != "DELETE":  # PRICE / PRODUCT / VARIANT_PRODUCT
                    if entity == "PRICE" or (isinstance(payload, dict) and "price" in payload):
                        _project_price(session, tenant, payload, as_of)
        except (Skip, DataError, IntegrityError, OperationalError, OverflowError, ValueError,
                TypeError) as why:
            if isinstance(why, OperationalError) and not is_permanent_operational(why):
                raise  # the database is unreachable: the whole transaction is retried
            # One bad payload must never sink the batch it came with: count it and move on
            # (a value too large for a read model's index included: its event is stored).
            reason = str(why) if isinstance(why, Skip) else f"unexpected {type(why).__name__}"
            skipped += 1
            _count_skip(session, tenant, entity, reason, doc["id"])
            log.info("projection skipped %s %s: %s", entity, doc["id"], reason)
    return skipped
