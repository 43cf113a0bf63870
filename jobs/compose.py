"""Who gets which items for a job: read models → recipients, per notification type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from events.models import Customer, Price, StockLevel, Wishlist, WishlistItem
from jobs.models import Job

DEFAULT_LOW_STOCK_THRESHOLD = 5


def _remember(attribute: str, value: Any, item: WishlistItem) -> None:
    """What a sent mail records on an item (the price, restock or low-stock time it told of)."""
    setattr(item, attribute, value)


@dataclass
class Pick:
    """An item chosen for a mail, with what to remember once it has been sent."""

    item: WishlistItem
    data: dict[str, Any]
    remember: Callable[[WishlistItem], None]


@dataclass
class Planned:
    customer_id: str
    email: str
    first_name: str | None
    picks: list[Pick] = field(default_factory=list)


def with_utm(url: str | None, params: dict[str, Any]) -> str | None:
    """``url`` with utm_source/utm_medium/utm_campaign from the job (existing query kept)."""
    if not url:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("utm_source", "utm_medium", "utm_campaign")]
    utm = {"utm_source": params.get("utm_source") or "eventcollector",
           "utm_medium": params.get("utm_medium") or "email"}
    campaign = params.get("utm_campaign") or params.get("campaign_id")
    if campaign:
        utm["utm_campaign"] = campaign
    query.extend((k, str(v)) for k, v in utm.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _lookup(table: dict[tuple[str, str], Any], item: WishlistItem) -> Any:
    return table.get((item.product_id, item.variant_id)) or table.get((item.product_id, ""))


def plan(session: Session, job: Job) -> tuple[list[Planned], int]:
    """Recipients with their items for ``job`` now, and how many customers were skipped."""
    tenant = job.tenant
    params = dict(job.job_parameters or {})
    threshold = int(params.get("low_stock_threshold", DEFAULT_LOW_STOCK_THRESHOLD))
    prices = {(p.product_id, p.variant_id): p for p in session.execute(
        select(Price).where(Price.tenant == tenant)).scalars()}
    stock = {(s.product_id, s.variant_id): s for s in session.execute(
        select(StockLevel).where(StockLevel.tenant == tenant)).scalars()}
    rows = session.execute(
        select(WishlistItem, Wishlist, Customer)
        .join(Wishlist, (Wishlist.tenant == WishlistItem.tenant)
              & (Wishlist.wishlist_id == WishlistItem.wishlist_id))
        .outerjoin(Customer, (Customer.tenant == Wishlist.tenant)
                   & (Customer.customer_id == Wishlist.customer_id))
        .where(WishlistItem.tenant == tenant)
        .order_by(Wishlist.customer_id, WishlistItem.added_at, WishlistItem.product_id)
    ).all()

    by_customer: dict[str, Planned] = {}
    no_email: set[str] = set()
    for item, wishlist, customer in rows:
        email = customer.email if customer is not None else None
        if not email:
            no_email.add(wishlist.customer_id)
            continue
        price = _lookup(prices, item)
        level = _lookup(stock, item)
        current = price.price if price is not None else None
        available = level.available if level is not None else None
        data = {
            "product_id": item.product_id, "variant_id": item.variant_id or None,
            "title": item.title, "url": with_utm(item.url, params), "image_url": item.image_url,
            "price": current if current is not None else item.price_at_add,
            "currency": (price.currency if price is not None else None) or item.currency,
            "available": available,
        }
        pick: Pick | None = None
        kind = job.notification
        if kind == "REMINDER":
            pick = Pick(item, data, lambda i: None)
        elif kind == "PRICE_DROP":
            reference = item.notified_price if item.notified_price is not None else item.price_at_add
            if current is not None and reference is not None and current < reference:
                pick = Pick(item, {**data, "old_price": reference},
                            partial(_remember, "notified_price", current))
        elif kind == "BACK_IN_STOCK":
            restocked = level.restocked_at if level is not None else None
            if (restocked is not None and available and restocked > item.added_at
                    and (item.notified_restock_at is None
                         or restocked > item.notified_restock_at)):
                pick = Pick(item, data, partial(_remember, "notified_restock_at", restocked))
        elif kind == "LOW_STOCK":
            if level is not None and available is not None and 0 < available <= threshold:
                rise = level.last_rise_at
                told = item.notified_low_at
                if told is None or (rise is not None and rise > told):
                    # Remember the level's own time (when its event was received), so a restock
                    # received before this run but stored after it still opens a new episode.
                    seen = level.as_of
                    pick = Pick(item, data, partial(_remember, "notified_low_at", seen))
        if pick is None:
            continue
        planned = by_customer.setdefault(
            wishlist.customer_id,
            Planned(wishlist.customer_id, email, customer.first_name if customer else None))
        if job.number_of_items_in_email == -1 or len(planned.picks) < job.number_of_items_in_email:
            planned.picks.append(pick)
    return list(by_customer.values()), len(no_email - set(by_customer))
