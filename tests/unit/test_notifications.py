"""Notification runs end to end: entity events → read models → a job run → StubMailer requests.

Events go through the ingest API and the persist pool, jobs through /api/v1/jobs, runs through
POST /jobs/{id}/run and the notify pool (or ``run_notifications`` called directly where a test
needs small batches or a scripted mailer). The app is the StubMailer app (``embedded("mailer")``).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sqlalchemy import event, select

import jobs.notifications
from events.models import Customer, Wishlist, WishlistItem
from jobs.compose import DEFAULT_LOW_STOCK_THRESHOLD, with_utm
from jobs.mailers.base import MAX_PERSONALIZATIONS, MailResult, Recipient
from jobs.mailers.stub import StubMailer
from jobs.models import JobRun, RunRecipient
from jobs.notifications import RETRY, run_notifications
from jobs.repository import get_job as load_job
from jobs.repository import run_now
from scheduler.loop import tick_once
from tests.conftest import Caller, shown_id
from tests.support.apps import runtime_of
from tests.support.jobs import (
    BASE,
    call,
    create_job,
    customer,
    entity_event,
    item,
    job_body,
    post_events,
    price,
    run_job,
    runs_of,
    settle,
    stock,
    ts,
    wishlist,
)

# conftest's ``embedded`` (and so ``acme``/``globex``) is the StubMailer app; ``stub`` its mailer.
pytestmark = pytest.mark.embedded("mailer")


class ScriptedMailer(StubMailer):
    """Answers the n-th request with ``script[n]`` (None = accept), then accepts everything;
    ``calls`` lists the customer ids of every request, accepted or not."""

    def __init__(self, script: list[MailResult | None]) -> None:
        super().__init__()
        self.script: deque[MailResult | None] = deque(script)
        self.calls: list[list[str]] = []

    def send(self, template_id: str, recipients: list[Recipient],
             custom_args: dict[str, str]) -> MailResult:
        self.calls.append([r.customer_id for r in recipients])
        answer = self.script.popleft() if self.script else None
        if answer is not None:
            return answer
        return super().send(template_id, recipients, custom_args)


TOO_MANY = MailResult(False, status=429, error="429 Too Many Requests", transient=True, retry_after=0.05)
BAD_REQUEST = MailResult(False, status=400, error="400 Bad Request: The template_id is not valid",
                         transient=False)


def mailed(stub: StubMailer) -> list[list[str]]:
    """Customer ids of each accepted request, in order."""
    return [[r.customer_id for r in recipients] for _tpl, recipients, _args in stub.requests]


def by_customer(stub: StubMailer, request: int = -1) -> dict[str, Recipient]:
    return {r.customer_id: r for r in stub.requests[request][1]}


def product_ids(recipient: Recipient) -> list[str]:
    return [i["product_id"] for i in recipient.data["items"]]


def new_run(caller: Caller, job_id: str) -> int:
    """A manual run row, committed but not enqueued (for calling run_notifications directly)."""
    with runtime_of(caller.client.application).sessions() as session:
        job = load_job(session, caller.tenant, job_id)
        assert job is not None
        run_id = run_now(session, job)
        session.commit()
        return run_id


def carry_out(caller: Caller, run_id: int, mailer: StubMailer, *, batch_size: int = MAX_PERSONALIZATIONS,
              delays: list[float] | None = None) -> str:
    """What the notify actor does for one message: run_notifications in a fresh session."""
    retries = delays if delays is not None else []
    return run_notifications(runtime_of(caller.client.application).sessions, run_id,
                             mailer=mailer, schedule_retry=retries.append, batch_size=batch_size)


def run_row(caller: Caller, run_id: int) -> JobRun:
    with runtime_of(caller.client.application).sessions() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        session.expunge(run)
        return run


def customers_wishlists(n: int) -> list[dict[str, Any]]:
    """Wishlists w-1..w-n of customers c-1..c-n, one item each."""
    return [wishlist(f"w-{i}", customer(f"c-{i}"), [item(f"p-{i}")]) for i in range(1, n + 1)]


# --- REMINDER --------------------------------------------------------------------------------

def test_reminder_mails_each_customer_their_wishlists_in_one_personalization(
        acme: Caller, globex: Caller, stub: StubMailer) -> None:
    # Given Ann (c-1) with two wishlists, Bob (c-2) with one, c-3 without an e-mail address,
    # a current price and stock for p-1, and a wishlist of another tenant
    post_events(acme,
                wishlist("w-1", customer("c-1", "ann@example.com", "Ann"), [item("p-1"), item("p-2")]),
                wishlist("w-2", customer("c-1", "ann@example.com", "Ann"), [item("p-3", 15.0)]),
                wishlist("w-3", customer("c-2", "bob@example.com", "Bob"), [item("p-4")]),
                wishlist("w-4", customer("c-3", email=None), [item("p-5")]),
                price("p-1", 90.0), stock("p-1", 7))
    post_events(globex, wishlist("w-1", customer("g-1", "gus@globex.example"), [item("p-1")]))
    create_job(acme, id="job-rem", notification="REMINDER", template_id="d-reminder",
               job_parameters={"campaign_id": "spring", "utm_medium": "email"})
    # When the job runs
    run = run_job(acme, "job-rem")
    # Then one request went out, one personalization per customer with an e-mail
    assert run["status"] == "done"
    assert (run["recipients"], run["sent"], run["failed"], run["skipped"]) == (2, 2, 0, 1)
    assert mailed(stub) == [["c-1", "c-2"]]
    template_id, recipients, custom_args = stub.requests[0]
    assert template_id == "d-reminder"
    assert custom_args == {"tenant": "acme", "job_id": "job-rem", "run_id": str(run["id"])}
    ann = by_customer(stub)["c-1"]
    assert (ann.email, ann.name) == ("ann@example.com", "Ann")
    # And Ann's dynamic_template_data holds the items of both her wishlists
    assert {k: v for k, v in ann.data.items() if k != "items"} == {
        "first_name": "Ann", "customer_id": "c-1", "notification": "REMINDER",
        "campaign_id": "spring", "item_count": 3}
    assert sorted(product_ids(ann)) == ["p-1", "p-2", "p-3"]
    items = {i["product_id"]: i for i in ann.data["items"]}
    # And an item shows its current price and stock where known, else the price when added
    assert items["p-1"] == {
        "product_id": "p-1", "variant_id": "v-p-1", "title": "Item p-1",
        "url": "https://shop.example/p-1?utm_source=eventcollector&utm_medium=email&utm_campaign=spring",
        "image_url": "https://cdn.example/p-1.jpg", "price": 90.0, "currency": "EUR", "available": 7}
    assert (items["p-3"]["price"], items["p-3"]["available"]) == (15.0, None)
    assert product_ids(by_customer(stub)["c-2"]) == ["p-4"]
    # And no one of the other tenant was mailed
    assert "g-1" not in {r.customer_id for _t, rs, _a in stub.requests for r in rs}


def test_reminder_mails_again_on_every_run(acme: Caller, stub: StubMailer) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-rem")
    run_job(acme, "job-rem")
    run_job(acme, "job-rem")
    assert mailed(stub) == [["c-1"], ["c-1"]]


def test_an_empty_wishlist_is_not_mailed(acme: Caller, stub: StubMailer) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), []))
    create_job(acme, id="job-rem")
    run = run_job(acme, "job-rem")
    assert (run["status"], run["recipients"], run["sent"], run["skipped"]) == ("done", 0, 0, 0)
    assert stub.requests == []


# --- PRICE_DROP ------------------------------------------------------------------------------

def test_price_drop_mails_items_cheaper_than_when_added_then_than_when_last_mailed(
        acme: Caller, stub: StubMailer) -> None:
    # Given Ann's wishlist: p-1 added at 100, p-2 at 50, p-3 at 30 (no price news), p-4 with no
    # price when added
    post_events(acme, wishlist("w-1", customer("c-1"), [
        item("p-1", 100.0), item("p-2", 50.0), item("p-3", 30.0), item("p-4", None)]))
    create_job(acme, id="job-drop", notification="PRICE_DROP")
    # When p-1 drops to 80, p-2 rises to 60 and p-4 gets a price, and the job runs
    post_events(acme, price("p-1", 80.0), price("p-2", 60.0), price("p-4", 10.0))
    run = run_job(acme, "job-drop")
    # Then only p-1 is mailed, with the old price in the data
    assert (run["status"], run["sent"]) == ("done", 1)
    assert mailed(stub) == [["c-1"]]
    [p1] = by_customer(stub)["c-1"].data["items"]
    assert (p1["product_id"], p1["price"], p1["old_price"], p1["currency"]) == ("p-1", 80.0, 100.0, "EUR")
    # When the job runs again with no price news, Then nothing is mailed
    again = run_job(acme, "job-drop")
    assert (again["status"], again["recipients"], again["sent"]) == ("done", 0, 0)
    assert len(stub.requests) == 1
    # When p-1 rises to 85 (still under 100), Then still nothing: 80 was the last mailed price
    post_events(acme, price("p-1", 85.0))
    run_job(acme, "job-drop")
    assert len(stub.requests) == 1
    # When the wishlist is re-sent (UPDATE, p-1 at 100 again), Then the mailed state is kept
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1", 100.0), item("p-2", 50.0)],
                               operation="UPDATE"))
    run_job(acme, "job-drop")
    assert len(stub.requests) == 1
    # When p-1 drops again, to 70, Then it is mailed again, against 80
    post_events(acme, price("p-1", 70.0))
    run_job(acme, "job-drop")
    assert mailed(stub) == [["c-1"], ["c-1"]]
    [p1] = by_customer(stub)["c-1"].data["items"]
    assert (p1["price"], p1["old_price"]) == (70.0, 80.0)


def test_price_drops_left_out_by_the_item_cap_are_mailed_on_a_later_run(acme: Caller) -> None:
    # Given two items of Ann's whose price dropped, and a PRICE_DROP job of one item per mail
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1", 100.0), item("p-2", 50.0)]))
    post_events(acme, price("p-1", 90.0), price("p-2", 40.0))
    create_job(acme, id="job-drop-1", notification="PRICE_DROP", number_of_items_in_email=1)
    mailer = ScriptedMailer([])
    # When the job runs three times, Then p-1, then p-2, then nothing is mailed
    for _ in range(3):
        assert carry_out(acme, new_run(acme, "job-drop-1"), mailer) == "done"
    assert [[i["product_id"] for i in recipients[0].data["items"]]
            for _t, recipients, _a in mailer.requests] == [["p-1"], ["p-2"]]


def test_price_drop_of_a_product_level_price_applies_to_its_variants(acme: Caller, stub: StubMailer) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1", 100.0, variant_id="red")]))
    create_job(acme, id="job-drop", notification="PRICE_DROP")
    post_events(acme, entity_event("PRODUCT", "p-1", {"product_id": "p-1", "price": 75.0}, "UPDATE"))
    run_job(acme, "job-drop")
    [p1] = by_customer(stub)["c-1"].data["items"]
    assert (p1["variant_id"], p1["price"], p1["old_price"]) == ("red", 75.0, 100.0)


# --- BACK_IN_STOCK ---------------------------------------------------------------------------

def test_back_in_stock_mails_items_restocked_after_they_were_added_once(
        acme: Caller, stub: StubMailer) -> None:
    # Given p-1 out of stock, p-2 in stock all along, p-3 restocked before it was wished for
    post_events(acme, stock("p-1", 0), stock("p-2", 5), stock("p-3", 0))
    post_events(acme, stock("p-3", 4))
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2"), item("p-3")]))
    create_job(acme, id="job-bis", notification="BACK_IN_STOCK")
    # When the job runs before anything changes, Then nothing is mailed
    assert run_job(acme, "job-bis")["sent"] == 0
    # When p-1 comes back (0 → 3) and p-2 merely rises (5 → 8), and the job runs
    post_events(acme, stock("p-1", 3), stock("p-2", 8))
    run = run_job(acme, "job-bis")
    # Then only p-1 is mailed, with what is available
    assert (run["status"], run["sent"]) == ("done", 1)
    [p1] = by_customer(stub)["c-1"].data["items"]
    assert (p1["product_id"], p1["available"]) == ("p-1", 3)
    # When the job runs again, Then it is not mailed twice
    run_job(acme, "job-bis")
    assert len(stub.requests) == 1
    # When p-1 sells out and comes back once more, Then that new restock is mailed
    post_events(acme, stock("p-1", 0))
    run_job(acme, "job-bis")
    assert len(stub.requests) == 1
    post_events(acme, stock("p-1", 2))
    run_job(acme, "job-bis")
    assert mailed(stub) == [["c-1"], ["c-1"]]
    assert [i["available"] for i in by_customer(stub)["c-1"].data["items"]] == [2]


def test_back_in_stock_item_sold_out_again_before_the_run_is_not_mailed(
        acme: Caller, stub: StubMailer) -> None:
    post_events(acme, stock("p-1", 0))
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    post_events(acme, stock("p-1", 1))
    post_events(acme, stock("p-1", 0))
    create_job(acme, id="job-bis", notification="BACK_IN_STOCK")
    assert run_job(acme, "job-bis")["sent"] == 0
    assert stub.requests == []


# --- LOW_STOCK -------------------------------------------------------------------------------

def test_low_stock_mails_items_at_or_under_the_default_threshold_once_per_episode(
        acme: Caller, stub: StubMailer) -> None:
    assert DEFAULT_LOW_STOCK_THRESHOLD == 5
    # Given stock: p-1 10, p-2 5, p-3 0, p-4 6, p-5 1 on Ann's wishlist
    post_events(acme, stock("p-1", 10), stock("p-2", 5), stock("p-3", 0), stock("p-4", 6),
                stock("p-5", 1))
    post_events(acme, wishlist("w-1", customer("c-1"), [item(f"p-{i}") for i in range(1, 6)]))
    create_job(acme, id="job-low", notification="LOW_STOCK")
    # When p-1 drops to 3 and the job runs
    post_events(acme, stock("p-1", 3))
    run = run_job(acme, "job-low")
    # Then the items at or under 5 and above 0 are mailed: p-1, p-2 (exactly 5), p-5
    assert (run["status"], run["sent"]) == ("done", 1)
    assert sorted(product_ids(by_customer(stub)["c-1"])) == ["p-1", "p-2", "p-5"]
    # When it runs again, and after p-1 drops further to 2 (same low episode), Then nothing
    run_job(acme, "job-low")
    post_events(acme, stock("p-1", 2))
    run_job(acme, "job-low")
    assert len(stub.requests) == 1
    # When p-1 is restocked to 10 (not low) and later falls to 4 (a new episode), Then p-1 again
    post_events(acme, stock("p-1", 10))
    run_job(acme, "job-low")
    assert len(stub.requests) == 1
    post_events(acme, stock("p-1", 4))
    run_job(acme, "job-low")
    assert mailed(stub) == [["c-1"], ["c-1"]]
    assert product_ids(by_customer(stub)["c-1"]) == ["p-1"]


def test_low_stock_a_rise_still_in_the_persist_queue_at_mail_time_starts_a_new_episode(
        acme: Caller) -> None:
    # Given p-1 low (3) on Ann's wishlist and a LOW_STOCK job
    post_events(acme, stock("p-1", 3))
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-low", notification="LOW_STOCK")
    # And a restock to 10 accepted (201) but still in the persist queue when the job runs
    assert acme.post_event(stock("p-1", 10)).status_code == 201
    mailer = ScriptedMailer([])
    assert carry_out(acme, new_run(acme, "job-low"), mailer) == "done"
    assert mailed(mailer) == [["c-1"]]  # about the episode at 3, which it still saw
    settle(acme.client.application)
    # When p-1 then falls to 4 (a new low episode after the restock) and the job runs
    post_events(acme, stock("p-1", 4))
    assert carry_out(acme, new_run(acme, "job-low"), mailer) == "done"
    # Then the new episode is mailed
    assert mailed(mailer) == [["c-1"], ["c-1"]]


def test_low_stock_threshold_comes_from_job_parameters(acme: Caller, stub: StubMailer) -> None:
    post_events(acme, stock("p-1", 3), stock("p-2", 2), stock("p-3", 0))
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2"), item("p-3")]))
    create_job(acme, id="job-low-2", notification="LOW_STOCK", job_parameters={"low_stock_threshold": 2})
    run_job(acme, "job-low-2")
    assert product_ids(by_customer(stub)["c-1"]) == ["p-2"]


# --- number_of_items_in_email, UTM -----------------------------------------------------------

@pytest.mark.parametrize(("count", "expected"), [(-1, ["p-1", "p-2", "p-3"]), (1, ["p-1"]),
                                                 (2, ["p-1", "p-2"]), (1000, ["p-1", "p-2", "p-3"])])
def test_number_of_items_in_email_caps_the_items(acme: Caller, stub: StubMailer, count: int,
                                                 expected: list[str]) -> None:
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1"), item("p-2"), item("p-3")]),
                wishlist("w-2", customer("c-2"), [item("p-9")]))
    create_job(acme, id="job-cap", number_of_items_in_email=count)
    run_job(acme, "job-cap")
    ann = by_customer(stub)["c-1"]
    assert product_ids(ann) == expected
    assert ann.data["item_count"] == len(expected)
    assert product_ids(by_customer(stub)["c-2"]) == ["p-9"]


def test_item_urls_carry_the_jobs_utm_parameters_and_keep_their_query(acme: Caller,
                                                                       stub: StubMailer) -> None:
    # Given items with a query string (including an old utm_source) and a fragment, with none,
    # and without a URL
    post_events(acme, wishlist("w-1", customer("c-1"), [
        item("p-1", url="https://shop.example/p-1?color=red&size=42&utm_source=old#reviews"),
        item("p-2"), item("p-3", url=None)]))
    create_job(acme, id="job-utm", job_parameters={"campaign_id": "spring-2026", "utm_medium": "newsletter"})
    # When the job runs
    run_job(acme, "job-utm")
    urls = {i["product_id"]: i["url"] for i in by_customer(stub)["c-1"].data["items"]}
    # Then each URL has utm_source (default), utm_medium and utm_campaign (the campaign_id) once,
    # keeps its other parameters, path and fragment
    p1 = urlsplit(urls["p-1"])
    assert (p1.scheme, p1.netloc, p1.path, p1.fragment) == ("https", "shop.example", "/p-1", "reviews")
    assert parse_qsl(p1.query) == [("color", "red"), ("size", "42"), ("utm_source", "eventcollector"),
                                   ("utm_medium", "newsletter"), ("utm_campaign", "spring-2026")]
    assert dict(parse_qsl(urlsplit(urls["p-2"]).query)) == {
        "utm_source": "eventcollector", "utm_medium": "newsletter", "utm_campaign": "spring-2026"}
    assert urls["p-3"] is None
    assert by_customer(stub)["c-1"].data["campaign_id"] == "spring-2026"


def test_explicit_utm_parameters_win_over_the_defaults_and_campaign_id() -> None:
    url = with_utm("https://shop.example/p?q=a%20b", {
        "campaign_id": "c-1", "utm_campaign": "xmas", "utm_source": "crm", "utm_medium": "mail"})
    assert url is not None
    assert parse_qsl(urlsplit(url).query) == [("q", "a b"), ("utm_source", "crm"), ("utm_medium", "mail"),
                                              ("utm_campaign", "xmas")]
    assert with_utm("https://shop.example/p", {}) == \
        "https://shop.example/p?utm_source=eventcollector&utm_medium=email"
    assert with_utm(None, {"campaign_id": "c"}) is None


# --- customers without e-mail ----------------------------------------------------------------

def test_customers_without_email_are_skipped_until_they_get_one(acme: Caller, stub: StubMailer) -> None:
    # Given two customers without an e-mail address
    post_events(acme, wishlist("w-1", customer("c-1", email=None), [item("p-1")]),
                wishlist("w-2", customer("c-2", email=""), [item("p-2")]))
    create_job(acme, id="job-rem")
    # When the job runs, Then nobody is mailed and both are counted as skipped
    run = run_job(acme, "job-rem")
    assert (run["status"], run["recipients"], run["sent"], run["skipped"]) == ("done", 0, 0, 2)
    assert stub.requests == []
    # When c-1 gets an e-mail address (CUSTOMER UPDATE), Then the next run mails c-1
    post_events(acme, entity_event("CUSTOMER", "c-1", {"email": "c1@example.com"}, "UPDATE"))
    run = run_job(acme, "job-rem")
    assert (run["recipients"], run["sent"], run["skipped"]) == (1, 1, 1)
    assert [r.email for r in stub.requests[0][1]] == ["c1@example.com"]


# --- failures and retries --------------------------------------------------------------------

def test_a_transient_failure_is_retried_and_mails_each_customer_once(
        acme: Caller, stub: StubMailer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a retry schedule short enough for a unit test (SendGrid's retry_after still applies)
    monkeypatch.setattr(jobs.notifications, "RETRY",
                        replace(RETRY, schedule=(0.01,) * len(RETRY.schedule)))
    post_events(acme, *customers_wishlists(3))
    create_job(acme, id="job-429")
    # And a mailer that answers 429 once, then accepts
    stub.failures.append(TOO_MANY)
    # When the job runs (the notify pool re-enqueues the run with a delay after the 429)
    run = run_job(acme, "job-429")
    # Then the run is done after two attempts
    assert (run["status"], run["attempts"]) == ("done", 2)
    assert (run["recipients"], run["sent"], run["failed"]) == (3, 3, 0)
    # And exactly one request was accepted, holding each customer once
    assert mailed(stub) == [["c-1", "c-2", "c-3"]]
    assert list(stub.failures) == []


def test_a_transient_failure_schedules_the_retry_per_the_schedule_and_retry_after(acme: Caller) -> None:
    post_events(acme, *customers_wishlists(1))
    create_job(acme, id="job-429")
    run_id = new_run(acme, "job-429")
    delays: list[float] = []
    # When the first attempt gets a 429 with a short Retry-After
    mailer = ScriptedMailer([TOO_MANY])
    assert carry_out(acme, run_id, mailer, delays=delays) == "retrying"
    # Then the retry is scheduled after the first step of the schedule (±20 % jitter), at least
    # Retry-After, and the run says why it is waiting
    [delay] = delays
    assert RETRY.schedule[0] * 0.8 <= delay <= RETRY.schedule[0] * 1.2
    run = run_row(acme, run_id)
    assert (run.status, run.attempts, run.sent) == ("retrying", 1, 0)
    assert "429" in (run.error or "")
    # When a 429 asks for longer than the schedule, Then Retry-After wins
    delays.clear()
    assert carry_out(acme, run_id, ScriptedMailer([MailResult(False, status=429, transient=True,
                                                               retry_after=900.0)]),
                     delays=delays) == "retrying"
    assert delays == [900.0]


def test_a_retry_after_a_partly_sent_run_never_mails_a_customer_twice(acme: Caller) -> None:
    # Given five customers, batches of two, and a mailer that fails the second batch once
    post_events(acme, *customers_wishlists(5))
    create_job(acme, id="job-partial")
    run_id = new_run(acme, "job-partial")
    mailer = ScriptedMailer([None, TOO_MANY])
    # When the run is carried out
    assert carry_out(acme, run_id, mailer, batch_size=2) == "retrying"
    # Then the first batch is recorded as sent, and the run waits for a retry
    assert mailed(mailer) == [["c-1", "c-2"]]
    run = run_row(acme, run_id)
    assert (run.status, run.sent, run.recipients) == ("retrying", 2, 5)
    # When the retry comes
    assert carry_out(acme, run_id, mailer, batch_size=2) == "done"
    # Then it mails only the customers not mailed yet, in batches of two
    assert mailer.calls == [["c-1", "c-2"], ["c-3", "c-4"], ["c-3", "c-4"], ["c-5"]]
    assert mailed(mailer) == [["c-1", "c-2"], ["c-3", "c-4"], ["c-5"]]
    run = run_row(acme, run_id)
    assert (run.status, run.attempts, run.recipients, run.sent, run.failed) == ("done", 2, 5, 5, 0)
    with runtime_of(acme.client.application).sessions() as session:
        recorded = session.execute(select(RunRecipient.customer_id, RunRecipient.status)
                                   .where(RunRecipient.run_id == run_id)).all()
    assert sorted(recorded) == [(f"c-{i}", "sent") for i in range(1, 6)]
    # When the message is delivered once more (at-least-once broker), Then nothing is mailed
    assert carry_out(acme, run_id, mailer, batch_size=2) == "done"
    assert len(mailer.requests) == 3


def test_a_permanent_failure_records_the_run_as_failed(acme: Caller, stub: StubMailer) -> None:
    # Given two customers whose price dropped, and a mailer that rejects the request (400)
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1", 100.0)]),
                wishlist("w-2", customer("c-2"), [item("p-1", 100.0)]))
    post_events(acme, price("p-1", 80.0))
    create_job(acme, id="job-400", notification="PRICE_DROP")
    stub.failures.append(BAD_REQUEST)
    # When the job runs
    run = run_job(acme, "job-400")
    # Then it failed at once (no retry), both customers counted as failed, the error recorded
    assert (run["status"], run["attempts"]) == ("failed", 1)
    assert (run["recipients"], run["sent"], run["failed"]) == (2, 0, 2)
    assert "template_id" in run["error"]
    assert stub.requests == []
    # And the price drop was not used up: the next run mails it
    run = run_job(acme, "job-400")
    assert (run["status"], run["sent"]) == ("done", 2)
    assert mailed(stub) == [["c-1", "c-2"]]


def test_a_permanent_failure_of_one_batch_does_not_fail_the_others(acme: Caller) -> None:
    post_events(acme, *customers_wishlists(3))
    create_job(acme, id="job-mixed")
    run_id = new_run(acme, "job-mixed")
    mailer = ScriptedMailer([BAD_REQUEST])
    assert carry_out(acme, run_id, mailer, batch_size=2) == "done"
    run = run_row(acme, run_id)
    assert (run.sent, run.failed) == (1, 2)
    assert mailed(mailer) == [["c-3"]]


# --- batches ---------------------------------------------------------------------------------

def test_recipients_are_sent_in_batches(acme: Caller) -> None:
    post_events(acme, *customers_wishlists(5))
    create_job(acme, id="job-batches")
    run_id = new_run(acme, "job-batches")
    mailer = ScriptedMailer([])
    assert carry_out(acme, run_id, mailer, batch_size=2) == "done"
    assert mailed(mailer) == [["c-1", "c-2"], ["c-3", "c-4"], ["c-5"]]
    assert {args["run_id"] for _t, _r, args in mailer.requests} == {str(run_id)}


def test_more_than_1000_recipients_are_split_into_requests_of_at_most_1000(
        acme: Caller, stub: StubMailer) -> None:
    # Given 1,001 customers with a wishlist each (written to the read models directly: 1,001
    # events would only make the test slower)
    assert MAX_PERSONALIZATIONS == 1000
    now = datetime.now(UTC)
    with runtime_of(acme.client.application).sessions() as session:
        for i in range(1001):
            cid = f"c-{i:04d}"
            session.add(Customer(tenant="acme", customer_id=cid, email=f"{cid}@example.com",
                                 first_name=None, as_of=now))
            session.add(Wishlist(tenant="acme", wishlist_id=f"w-{i:04d}", customer_id=cid, as_of=now))
            session.add(WishlistItem(tenant="acme", wishlist_id=f"w-{i:04d}", product_id="p-1",
                                     variant_id="", added_at=now))
        session.commit()
    create_job(acme, id="job-big")
    # When the job runs
    run = run_job(acme, "job-big")
    # Then two requests went out, of 1,000 and 1, each customer in exactly one of them
    assert [len(recipients) for _t, recipients, _a in stub.requests] == [1000, 1]
    everyone = [c for request in mailed(stub) for c in request]
    assert len(everyone) == len(set(everyone)) == 1001
    assert (run["status"], run["recipients"], run["sent"]) == ("done", 1001, 1001)


# --- runs of jobs that changed ---------------------------------------------------------------

def test_a_scheduled_run_of_a_job_deactivated_before_it_ran_is_cancelled(acme: Caller,
                                                                         stub: StubMailer) -> None:
    # Given a job that fired at its slot (its run still queued)
    post_events(acme, *customers_wishlists(1))
    job = create_job(acme, id="job-off", schedule="*/5 * * * *")
    runtime = runtime_of(acme.client.application)
    [run_id] = tick_once(runtime.sessions, runtime.broker, now=ts(job["next_run_at"]))
    # When the job is deactivated before the notify pool gets to the run
    assert call(acme, "PUT", f"{BASE}/job-off", job_body(schedule="*/5 * * * *", is_active=False)
                ).status_code == 200
    settle(acme.client.application)
    # Then the run is cancelled and nobody is mailed
    [run] = runs_of(acme, "job-off")
    assert (run["id"], run["status"], run["sent"]) == (shown_id("run", run_id), "cancelled", 0)
    assert stub.requests == []


def test_a_manual_run_of_a_job_deleted_before_it_ran_is_cancelled(acme: Caller, stub: StubMailer) -> None:
    post_events(acme, *customers_wishlists(1))
    create_job(acme, id="job-gone")
    resp = call(acme, "POST", f"{BASE}/job-gone/run")
    assert resp.status_code == 202
    assert call(acme, "DELETE", f"{BASE}/job-gone").status_code == 204
    settle(acme.client.application)
    [run] = runs_of(acme, "job-gone")
    assert (run["status"], run["sent"]) == ("cancelled", 0)
    assert stub.requests == []


# --- SQLite concurrency ----------------------------------------------------------------------

def test_a_concurrent_commit_after_a_successful_send_does_not_mail_twice(acme: Caller) -> None:
    """Regression: with SQLite's deferred BEGIN, a run that re-read its row after a successful send
    failed with "database is locked" when another connection committed before it wrote the
    RunRecipient rows; the actor's retry then mailed the same customers again."""
    # Given two customers and a run
    post_events(acme, *customers_wishlists(2))
    create_job(acme, id="job-race")
    run_id = new_run(acme, "job-race")
    runtime = runtime_of(acme.client.application)
    db_file = runtime.settings.database_url.split("///", 1)[1]
    # And another connection (as the persist pool's thread would) committing a write just after
    # the run, having mailed, reads its row again to record whom it mailed
    mailer = ScriptedMailer([])
    fired = []

    def other_writer(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if mailer.calls and not fired and statement.lstrip().startswith("SELECT job_runs"):
            fired.append(True)
            other = sqlite3.connect(db_file, timeout=0.2)
            try:
                other.execute("UPDATE tenants SET subscriptions_version = subscriptions_version + 1 "
                              "WHERE name = 'globex'")
                other.commit()
            except sqlite3.OperationalError:
                pass  # the run's transaction held the write lock: nothing could slip in between
            finally:
                other.close()

    event.listen(runtime.engine, "after_cursor_execute", other_writer)
    try:
        # When the notify actor carries out the run, and Dramatiq retries it if it raised
        try:
            carry_out(acme, run_id, mailer)
        except Exception:  # noqa: BLE001 - what the actor's retry_when sees
            carry_out(acme, run_id, mailer)
    finally:
        event.remove(runtime.engine, "after_cursor_execute", other_writer)
    # Then each customer was mailed once
    assert fired
    assert mailed(mailer) == [["c-1", "c-2"]]


def test_a_second_message_for_a_run_in_progress_waits_and_never_mails_twice(acme: Caller) -> None:
    from datetime import UTC, datetime, timedelta

    from jobs.notifications import RunBusy

    mailer = StubMailer()
    post_events(acme, wishlist("w-1", customer("c-1"), [item("p-1")]))
    create_job(acme, id="job-lease")
    run_id = new_run(acme, "job-lease")
    # Given another worker holds the run (a duplicate message, e.g. two schedulers re-sent it)
    with runtime_of(acme.client.application).sessions() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        run.status, run.lease_until = "running", datetime.now(UTC) + timedelta(minutes=1)
        session.commit()
    # When the duplicate is processed, Then it steps back (to be retried) and mails nothing
    with pytest.raises(RunBusy):
        carry_out(acme, run_id, mailer)
    assert mailer.requests == []
    # And once the holder's lease has run out (it died), a retry takes the run over
    with runtime_of(acme.client.application).sessions() as session:
        run = session.get(JobRun, run_id)
        assert run is not None
        run.lease_until = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()
    assert carry_out(acme, run_id, mailer) == "done"
    assert [[r.customer_id for r in rs] for _, rs, _ in mailer.requests] == [["c-1"]]
    assert carry_out(acme, run_id, mailer) == "done"
    assert len(mailer.requests) == 1
    assert run_row(acme, run_id).lease_until is None
