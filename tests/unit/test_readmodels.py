"""Read models behind notification jobs (store/readmodels.py), fed through the real ingest API
and the persist pool of the StubMailer app (``embedded("mailer")``, SQLite + StubBroker)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from events.models import Customer, Price, ProjectionSkip, StockLevel, Wishlist, WishlistItem
from tests.conftest import Caller
from tests.support.apps import runtime_of
from tests.support.jobs import customer, entity_event, item, post_events, price, settle, stock, ts, wishlist

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubMailer app; ``stub`` its mailer.
pytestmark = pytest.mark.embedded("mailer")


def rows(caller: Caller, model: Any, **where: Any) -> list[Any]:
    """The tenant's rows of a read-model table (detached copies), in primary-key order."""
    with runtime_of(caller.client.application).sessions() as session:
        stmt = select(model).where(model.tenant == caller.tenant)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        found = list(session.execute(stmt).scalars())
        session.expunge_all()
    return sorted(found, key=lambda r: tuple(str(getattr(r, c.key)) for c in model.__mapper__.primary_key))


def items_of(caller: Caller, wishlist_id: str) -> dict[str, WishlistItem]:
    return {i.product_id: i for i in rows(caller, WishlistItem, wishlist_id=wishlist_id)}


def skips(caller: Caller) -> dict[tuple[str, str], tuple[int, str]]:
    """projection_skips of the tenant: (entity, reason) → (count, last event id)."""
    return {(s.entity_name, s.reason): (s.count, s.last_event_id) for s in rows(caller, ProjectionSkip)}


def aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


# --- WISHLIST --------------------------------------------------------------------------------

def test_wishlist_create_projects_the_wishlist_its_customer_and_items(acme: Caller) -> None:
    # Given DESIGN.md's WISHLIST example, one item with a variant and one without
    [stored] = post_events(acme, wishlist(
        "w-1", customer("c-1", "ann@example.com", "Ann"),
        [item("p-1", 100.0), item("p-2", 20.5, variant_id=None, currency="USD")]))
    # Then the wishlist belongs to c-1, received_at as of
    [wl] = rows(acme, Wishlist)
    assert (wl.wishlist_id, wl.customer_id) == ("w-1", "c-1")
    assert aware(wl.as_of) == ts(stored["received_at"])
    # And the customer has the e-mail and first name
    [cust] = rows(acme, Customer)
    assert (cust.customer_id, cust.email, cust.first_name) == ("c-1", "ann@example.com", "Ann")
    # And both items are there with the documented fields; an absent variant is ""
    items = items_of(acme, "w-1")
    assert set(items) == {"p-1", "p-2"}
    p1 = items["p-1"]
    assert (p1.variant_id, p1.title, p1.url, p1.image_url, p1.price_at_add, p1.currency) == (
        "v-p-1", "Item p-1", "https://shop.example/p-1", "https://cdn.example/p-1.jpg", 100.0, "EUR")
    assert aware(p1.added_at) == ts(stored["received_at"])
    assert (p1.notified_price, p1.notified_restock_at, p1.notified_low_at) == (None, None, None)
    assert (items["p-2"].variant_id, items["p-2"].price_at_add, items["p-2"].currency) == (
        "", 20.5, "USD")
    # And nothing was skipped
    assert skips(acme) == {}


def test_wishlist_update_replaces_items_but_keeps_state_of_remaining_ones(acme: Caller) -> None:
    # Given a wishlist with p-1 and p-2 whose p-1 was mailed about (price, restock, low stock)
    [created] = post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2")]))
    notified_at = datetime(2026, 11, 1, 9, tzinfo=UTC)
    with runtime_of(acme.client.application).sessions() as session:
        session.execute(update(WishlistItem).where(WishlistItem.product_id == "p-1").values(
            notified_price=80.0, notified_restock_at=notified_at, notified_low_at=notified_at))
        session.commit()
    # When an UPDATE carries p-1 (new title and price) and p-3, but not p-2
    post_events(acme, wishlist("w-1", customer("c-1", "new@example.com"),
                               [item("p-1", 95.0, title="Red shoe v2"), item("p-3", 30.0)],
                               operation="UPDATE"))
    # Then p-2 is gone and p-3 added
    items = items_of(acme, "w-1")
    assert set(items) == {"p-1", "p-3"}
    # And p-1 keeps what was mailed about it, its price when added and when it was added
    p1 = items["p-1"]
    assert p1.notified_price == 80.0
    assert aware(p1.notified_restock_at) == notified_at
    assert aware(p1.notified_low_at) == notified_at
    assert p1.price_at_add == 100.0
    assert aware(p1.added_at) == ts(created["received_at"])
    # And its descriptive fields follow the update
    assert p1.title == "Red shoe v2"
    # And p-3 starts with no notification state, the customer's e-mail is updated
    assert (items["p-3"].price_at_add, items["p-3"].notified_price) == (30.0, None)
    assert rows(acme, Customer)[0].email == "new@example.com"


def test_wishlist_update_with_no_items_empties_it(acme: Caller) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    post_events(acme, entity_event("WISHLIST", "w-1", {"customer": customer("c-1")}, "UPDATE"))
    assert items_of(acme, "w-1") == {}
    assert [w.wishlist_id for w in rows(acme, Wishlist)] == ["w-1"]


def test_wishlist_delete_removes_it_and_its_items_only(acme: Caller) -> None:
    # Given two wishlists
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2")]),
                wishlist("w-2", customer("c-2"), [item("p-1")]))
    # When w-1 is deleted (the DELETE payload need not repeat the wishlist)
    post_events(acme, entity_event("WISHLIST", "w-1", {}, "DELETE"))
    # Then w-1 and its items are gone, w-2 is untouched
    assert [w.wishlist_id for w in rows(acme, Wishlist)] == ["w-2"]
    assert items_of(acme, "w-1") == {}
    assert set(items_of(acme, "w-2")) == {"p-1"}
    assert skips(acme) == {}


def test_wishlist_bulk_create_is_projected(acme: Caller) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")], operation="BULK_CREATE"))
    assert set(items_of(acme, "w-1")) == {"p-1"}


def test_a_read_operation_is_not_projected(acme: Caller) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")], operation="READ"))
    assert rows(acme, Wishlist) == []
    assert skips(acme) == {}


# --- WISHLIST_ITEM ---------------------------------------------------------------------------

def test_wishlist_item_create_and_delete(acme: Caller) -> None:
    # Given a wishlist w-1 with p-1
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    # When WISHLIST_ITEM CREATE adds p-2 to it
    post_events(acme, entity_event("WISHLIST_ITEM", "wi-2",
                                   {"wishlist_id": "w-1", "customer": customer("c-1"),
                                    "item": item("p-2", 10.0)}))
    # Then w-1 holds p-1 and p-2, p-2 with its price when added
    items = items_of(acme, "w-1")
    assert set(items) == {"p-1", "p-2"}
    assert items["p-2"].price_at_add == 10.0
    # When WISHLIST_ITEM DELETE removes p-1
    post_events(acme, entity_event("WISHLIST_ITEM", "wi-1",
                                   {"wishlist_id": "w-1", "item": item("p-1")}, "DELETE"))
    # Then only p-2 is left, and the wishlist is still there
    assert set(items_of(acme, "w-1")) == {"p-2"}
    assert [w.wishlist_id for w in rows(acme, Wishlist)] == ["w-1"]
    assert skips(acme) == {}


def test_wishlist_item_create_on_an_unknown_wishlist_creates_it_for_the_customer(acme: Caller) -> None:
    post_events(acme, entity_event("WISHLIST_ITEM", "wi-1",
                                   {"wishlist_id": "w-9", "customer": customer("c-9", "eve@example.com"),
                                    "item": item("p-1")}))
    [wl] = rows(acme, Wishlist)
    assert (wl.wishlist_id, wl.customer_id) == ("w-9", "c-9")
    assert rows(acme, Customer)[0].email == "eve@example.com"
    assert set(items_of(acme, "w-9")) == {"p-1"}


def test_wishlist_item_delete_keys_on_product_and_variant(acme: Caller) -> None:
    # Given one product in two variants on a wishlist
    post_events(acme, wishlist("w-1", customer("c-1"),
                               [item("p-1", variant_id="red"), item("p-1", variant_id="blue")]))
    # When the red one is removed
    post_events(acme, entity_event("WISHLIST_ITEM", "wi-1",
                                   {"wishlist_id": "w-1", "item": {"product_id": "p-1",
                                                                   "variant_id": "red"}}, "DELETE"))
    # Then the blue one stays
    assert [i.variant_id for i in rows(acme, WishlistItem)] == ["blue"]


# --- PRICE / PRODUCT / VARIANT_PRODUCT -------------------------------------------------------

def test_price_product_and_variant_product_with_a_price_project_the_price(acme: Caller) -> None:
    # Given a PRICE, a PRODUCT carrying a price, a VARIANT_PRODUCT carrying a price, and a
    # PRODUCT without one
    post_events(acme, price("p-1", 80.0), price("p-2", 19.99, entity="PRODUCT"),
                price("p-3", 5, entity="VARIANT_PRODUCT"),
                entity_event("PRODUCT", "p-4", {"product_id": "p-4", "title": "No price"}, "UPDATE"))
    # Then the three prices are stored per product and variant; the PRODUCT without a price is
    # simply not a price (not a skip)
    prices = {(p.product_id, p.variant_id): (p.price, p.currency) for p in rows(acme, Price)}
    assert prices == {("p-1", "v-p-1"): (80.0, "EUR"), ("p-2", "v-p-2"): (19.99, "EUR"),
                      ("p-3", "v-p-3"): (5.0, "EUR")}
    assert skips(acme) == {}
    # When the price of p-1 changes
    post_events(acme, price("p-1", 70.0))
    # Then it is replaced, not added
    assert [(p.product_id, p.price) for p in rows(acme, Price, product_id="p-1")] == [("p-1", 70.0)]


def test_a_price_without_variant_is_the_products_price(acme: Caller) -> None:
    post_events(acme, entity_event("PRICE", "p-1", {"product_id": "p-1", "price": 12.5}, "CREATE"))
    [p] = rows(acme, Price)
    assert (p.product_id, p.variant_id, p.price, p.currency) == ("p-1", "", 12.5, None)


# --- INVENTORY_LEVEL -------------------------------------------------------------------------

def test_inventory_level_from_0_to_3_sets_restocked(acme: Caller) -> None:
    # Given p-1 out of stock
    [zero] = post_events(acme, stock("p-1", 0))
    [level] = rows(acme, StockLevel)
    assert (level.available, level.restocked_at, level.last_rise_at) == (0, None, None)
    assert aware(level.as_of) == ts(zero["received_at"])
    # When 3 come in
    [three] = post_events(acme, stock("p-1", 3))
    # Then it is available again, restocked and risen at that event's time
    [level] = rows(acme, StockLevel)
    assert level.available == 3
    assert aware(level.restocked_at) == ts(three["received_at"])
    assert aware(level.last_rise_at) == ts(three["received_at"])
    # When it drops to 1, Then neither time moves
    post_events(acme, stock("p-1", 1))
    [level] = rows(acme, StockLevel)
    assert level.available == 1
    assert aware(level.restocked_at) == ts(three["received_at"])
    assert aware(level.last_rise_at) == ts(three["received_at"])


def test_a_first_stock_level_above_0_is_not_a_restock(acme: Caller) -> None:
    [first] = post_events(acme, stock("p-1", 5, variant=None))
    [level] = rows(acme, StockLevel)
    assert (level.product_id, level.variant_id, level.available) == ("p-1", "", 5)
    assert level.restocked_at is None
    assert aware(level.last_rise_at) == ts(first["received_at"])


def test_an_inventory_level_delete_changes_nothing(acme: Caller) -> None:
    post_events(acme, stock("p-1", 4))
    post_events(acme, entity_event("INVENTORY_LEVEL", "inv-p-1", {"product_id": "p-1"}, "DELETE"))
    assert [s.available for s in rows(acme, StockLevel)] == [4]
    assert skips(acme) == {}


# --- CUSTOMER --------------------------------------------------------------------------------

def test_customer_update_changes_the_email_used_for_their_wishlists(acme: Caller) -> None:
    # Given c-1's wishlist with ann@example.com
    post_events(acme, wishlist("w-1", customer("c-1", "ann@example.com", "Ann"), [item("p-1")]))
    # When a CUSTOMER UPDATE (id taken from entity_id) carries a new e-mail and no first name
    post_events(acme, entity_event("CUSTOMER", "c-1", {"email": "ann.new@example.com"}, "UPDATE"))
    # Then the e-mail is updated and the first name kept
    [cust] = rows(acme, Customer)
    assert (cust.customer_id, cust.email, cust.first_name) == ("c-1", "ann.new@example.com", "Ann")
    # When a CUSTOMER CREATE names another customer by id
    post_events(acme, entity_event("CUSTOMER", "whatever",
                                   {"id": "c-2", "email": "bob@example.com", "first_name": "Bob"}))
    assert {c.customer_id: c.email for c in rows(acme, Customer)} == {
        "c-1": "ann.new@example.com", "c-2": "bob@example.com"}


def test_a_customer_without_email_is_projected_without_one(acme: Caller) -> None:
    post_events(acme, wishlist("w-1", customer("c-1", email=None), [item("p-1")]))
    [cust] = rows(acme, Customer)
    assert (cust.customer_id, cust.email) == ("c-1", None)


# --- payloads that do not fit ----------------------------------------------------------------

def _raw_payload_event(entity: str, raw: bytes) -> dict[str, Any]:
    event = entity_event(entity, "x-1", {}, "CREATE")
    event["event_payload"]["base64_encoded_payload_json"] = base64.b64encode(raw).decode()
    return event


BAD_PAYLOADS = [
    ("items-not-a-list", entity_event("WISHLIST", "w-1", {
        "customer": customer("c-1"), "items": {"product_id": "p-1"}}), "WISHLIST", "items is not a list"),
    ("missing-product-id", entity_event("WISHLIST_ITEM", "wi-1", {
        "wishlist_id": "w-1", "customer": customer("c-1"), "item": {"title": "no id"}}),
     "WISHLIST_ITEM", "missing item.product_id"),
    ("available-x", stock("p-1", "x"), "INVENTORY_LEVEL", "available is not a non-negative integer"),
    ("available-negative", stock("p-1", -1), "INVENTORY_LEVEL", "available is not a non-negative integer"),
    ("available-fraction", stock("p-1", 2.5), "INVENTORY_LEVEL", "available is not a non-negative integer"),
    ("wishlist-payload-is-a-list", _raw_payload_event("WISHLIST", b'[{"items": []}]'), "WISHLIST",
     "payload is not an object"),
    ("price-payload-is-a-string", _raw_payload_event("PRICE", b'"80.0"'), "PRICE",
     "payload is not an object"),
    ("price-payload-is-xml", _raw_payload_event("PRICE", b"<price>80.0</price>"), "PRICE",
     "payload is not an object"),
    ("wishlist-payload-is-html", _raw_payload_event("WISHLIST", b"<html>502</html>"), "WISHLIST",
     "payload is not an object"),
    ("price-is-text", price("p-1", "eighty"), "PRICE", "price is not a number"),
    ("price-negative", price("p-1", -1), "PRICE", "price is negative"),
    ("price-missing", entity_event("PRICE", "p-1", {"product_id": "p-1"}), "PRICE", "no price"),
    ("customer-not-object", entity_event("WISHLIST", "w-1", {"customer": "c-1", "items": []}),
     "WISHLIST", "customer is not an object"),
    ("item-not-object", wishlist("w-1", customer("c-1"), ["p-1"]), "WISHLIST", "item is not an object"),
]


@pytest.mark.parametrize(("event", "entity", "reason"), [b[1:] for b in BAD_PAYLOADS],
                         ids=[b[0] for b in BAD_PAYLOADS])
def test_a_payload_that_does_not_fit_is_stored_and_counted_as_a_skip(
        acme: Caller, event: dict[str, Any], entity: str, reason: str) -> None:
    # Given an entity event whose payload does not fit the documented shape
    # When it is posted, Then the client got a 201
    [stored] = post_events(acme, event)
    # And the event is stored as sent
    got = acme.get(f"/api/v1/events/{stored['id']}")
    assert got.status_code == 200
    assert got.get_json() == {**stored, "status": "stored"}
    listed = acme.get("/api/v1/events").get_json()
    assert [e["id"] for e in listed["events"]] == [stored["id"]]
    # And the projection counted one skip with the reason and the event id, and stored nothing
    assert skips(acme) == {(entity, reason): (1, stored["id"])}
    for model in (Wishlist, WishlistItem, Price, StockLevel):
        assert rows(acme, model) == [], model.__name__


def test_skips_are_counted_per_reason_and_do_not_block_good_events(acme: Caller) -> None:
    # Given a batch with two bad INVENTORY_LEVEL events around a good one and a good wishlist
    bad_1, good, bad_2 = stock("p-1", "x"), stock("p-2", 4), stock("p-3", "y")
    resp = acme.client.post("/api/v1/events/batch", headers=acme.headers(), json={
        "events": [bad_1, good, wishlist("w-1", customer("c-1"), [item("p-2")]), bad_2]})
    assert resp.status_code in (200, 201, 207), resp.get_data(as_text=True)
    settle(acme.client.application)
    # Then all four are stored
    assert acme.get("/api/v1/events").get_json()["total"] == 4
    # And the good ones are projected, the bad ones counted under one reason, twice
    assert [(s.product_id, s.available) for s in rows(acme, StockLevel)] == [("p-2", 4)]
    assert set(items_of(acme, "w-1")) == {"p-2"}
    [(key, (count, _last))] = skips(acme).items()
    assert key == ("INVENTORY_LEVEL", "available is not a non-negative integer")
    assert count == 2


def test_a_wishlist_event_without_a_payload_is_a_skip(acme: Caller) -> None:
    event = wishlist("w-1", customer("c-1"), [item("p-1")])
    del event["event_payload"]["base64_encoded_payload_json"]
    [stored] = post_events(acme, event)
    assert acme.get(f"/api/v1/events/{stored['id']}").status_code == 200
    assert skips(acme) == {("WISHLIST", "payload is not an object"): (1, stored["id"])}


def test_an_out_of_range_stock_level_is_a_skip_not_a_lost_event(acme: Caller) -> None:
    # Given one batch with a good wishlist and a stock level too large for the column
    resp = acme.client.post("/api/v1/events/batch", headers=acme.headers(), json={
        "events": [wishlist("w-1", customer("c-1"), [item("p-1")]), stock("p-1", 2**63)]})
    assert resp.status_code in (200, 201, 207), resp.get_data(as_text=True)
    settle(acme.client.application)
    # Then both events are stored, the wishlist projected and the stock level counted as a skip
    assert acme.get("/api/v1/events").get_json()["total"] == 2
    assert set(items_of(acme, "w-1")) == {"p-1"}
    assert len(skips(acme)) == 1


def test_other_entities_and_non_entity_events_are_not_projected(acme: Caller) -> None:
    post_events(acme,
                entity_event("ORDER", "o-1", {"id": "o-1", "items": "not a list"}),
                wishlist("w-1", customer("c-1"), [item("p-1")]) | {"event_type": "WARNING"})
    assert rows(acme, Wishlist) == []
    assert skips(acme) == {}


def test_read_models_are_per_tenant(acme: Caller, globex: Caller) -> None:
    # Given the same ids in two tenants
    post_events(acme, wishlist("w-1", customer("c-1", "ann@acme.example"), [item("p-1")]),
                price("p-1", 80.0), stock("p-1", 0))
    post_events(globex, wishlist("w-1", customer("c-1", "ann@globex.example"), [item("p-2")]),
                price("p-1", 50.0), stock("p-1", 7), stock("p-1", "bad"))
    # Then each tenant sees its own rows
    assert set(items_of(acme, "w-1")) == {"p-1"}
    assert set(items_of(globex, "w-1")) == {"p-2"}
    assert rows(acme, Customer)[0].email == "ann@acme.example"
    assert rows(globex, Customer)[0].email == "ann@globex.example"
    assert [p.price for p in rows(acme, Price)] == [80.0]
    assert [s.available for s in rows(acme, StockLevel)] == [0]
    assert skips(acme) == {}
    assert len(skips(globex)) == 1
    # And deleting acme's w-1 leaves globex's alone
    post_events(acme, entity_event("WISHLIST", "w-1", {}, "DELETE"))
    assert rows(acme, Wishlist) == []
    assert set(items_of(globex, "w-1")) == {"p-2"}
