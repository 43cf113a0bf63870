"""The intake port (infra/broker/intake.py): one contract, run over every implementation.

MemoryIntake (StubBroker, in-process limiter) and RedisIntake (one Lua call on fakeredis and on
the machine's Redis) must answer alike; what each enqueued is read back by a Dramatiq consumer of
the persist queue, as the persist pool reads it. Implementation details (Redis key layout, the
real worker consuming a Lua-written message) stay in the implementations' own tests.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest

from infra.broker.intake import Intake, IntakeUnavailable, Outcome, Pending
from infra.broker.queues import PERSIST_ACTOR, PERSIST_QUEUE
from infra.broker.ratelimit import Charge, RateLimited, RateLimiter
from tests.support.backends import IMPLEMENTATIONS, redis_client, unreachable_redis

TTL = 60


@dataclass
class Subject:
    """An intake, the rate limiter that shares its buckets, and the broker it enqueues on."""

    kind: str
    intake: Intake
    limiter: RateLimiter
    broker: dramatiq.Broker

    def enqueued(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(tenant, documents) of every persist message waiting, in order, consumed."""
        found = []
        consumer = self.broker.consume(PERSIST_QUEUE, prefetch=100, timeout=200)
        try:
            while (message := next(consumer)) is not None:
                assert message.actor_name == PERSIST_ACTOR
                tenant, documents = message.args
                found.append((tenant, documents))
                consumer.ack(message)
        finally:
            consumer.close()
        return found


def build(request: pytest.FixtureRequest, kind: str, ttl: int = TTL) -> Subject:
    if kind == "memory":
        from dramatiq.brokers.stub import StubBroker

        from infra.broker.intakes.memory import MemoryIntake
        from infra.broker.ratelimit import MemoryRateLimiter

        broker = StubBroker()
        limiter = MemoryRateLimiter()
        return Subject(kind, MemoryIntake(broker, ttl, limiter), limiter, broker)
    from dramatiq.brokers.redis import RedisBroker

    from infra.broker.intakes.redis import RedisIntake
    from infra.broker.ratelimit import RedisRateLimiter

    client = redis_client(request, kind)
    redis_broker = RedisBroker(client=client)
    redis_broker.declare_queue(PERSIST_QUEUE)
    request.addfinalizer(redis_broker.close)
    return Subject(kind, RedisIntake(client, ttl), RedisRateLimiter(client), redis_broker)


@pytest.fixture(params=IMPLEMENTATIONS)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    yield build(request, request.param)


def pending(event_id: str, body: str = "same", **fields: Any) -> Pending:
    document = {"id": event_id, "entity_name": "ORDER", **fields}
    return Pending(document=document, body_hash=hashlib.sha256(body.encode()).hexdigest())


def test_new_events_are_accepted_in_order_and_enqueued_together(subject: Subject) -> None:
    # When two new events are accepted in one call
    results = subject.intake.accept("acme", [pending("e-1", n=1), pending("e-2", n=2)])
    # Then both are ACCEPTED with their own documents, in order
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert [r.document["id"] for r in results] == ["e-1", "e-2"]
    # And one persist message carries both, for the tenant
    assert subject.enqueued() == [("acme", [{"id": "e-1", "entity_name": "ORDER", "n": 1},
                                            {"id": "e-2", "entity_name": "ORDER", "n": 2}])]
    # And each can be read back (read-your-writes)
    assert subject.intake.lookup("acme", "e-2") == {"id": "e-2", "entity_name": "ORDER", "n": 2}


def test_the_same_id_and_body_again_is_a_duplicate_answered_with_the_first_document(
        subject: Subject) -> None:
    subject.intake.accept("acme", [pending("e-1", n=1)])
    subject.enqueued()
    # When the same id with the same body hash comes again (its document may differ: a new
    # received_at, say)
    [again] = subject.intake.accept("acme", [pending("e-1", n=99)])
    # Then it is a DUPLICATE answered with the first document, and nothing is enqueued
    assert again.outcome is Outcome.DUPLICATE
    assert again.document == {"id": "e-1", "entity_name": "ORDER", "n": 1}
    assert subject.enqueued() == []


def test_the_same_id_with_another_body_is_a_conflict_and_nothing_is_enqueued(
        subject: Subject) -> None:
    subject.intake.accept("acme", [pending("e-1", n=1)])
    subject.enqueued()
    [other] = subject.intake.accept("acme", [pending("e-1", body="different", n=2)])
    assert other.outcome is Outcome.CONFLICT
    assert other.document == {"id": "e-1", "entity_name": "ORDER", "n": 1}
    assert subject.enqueued() == []
    assert subject.intake.lookup("acme", "e-1") == {"id": "e-1", "entity_name": "ORDER", "n": 1}


def test_a_repeated_id_within_one_call_is_accepted_once(subject: Subject) -> None:
    results = subject.intake.accept("acme", [pending("e-1", n=1), pending("e-1", n=2),
                                             pending("e-1", body="other", n=3)])
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.CONFLICT]
    assert all(r.document["n"] == 1 for r in results)
    assert subject.enqueued() == [("acme", [{"id": "e-1", "entity_name": "ORDER", "n": 1}])]


def test_a_call_of_only_known_ids_enqueues_nothing_and_mixed_calls_enqueue_the_new_ones(
        subject: Subject) -> None:
    subject.intake.accept("acme", [pending("e-1")])
    subject.enqueued()
    results = subject.intake.accept("acme", [pending("e-1"), pending("e-2")])
    assert [r.outcome for r in results] == [Outcome.DUPLICATE, Outcome.ACCEPTED]
    assert subject.enqueued() == [("acme", [{"id": "e-2", "entity_name": "ORDER"}])]


def test_tenants_have_their_own_ids(subject: Subject) -> None:
    subject.intake.accept("acme", [pending("e-1", who="acme")])
    [theirs] = subject.intake.accept("globex", [pending("e-1", body="other", who="globex")])
    assert theirs.outcome is Outcome.ACCEPTED
    assert subject.intake.lookup("acme", "e-1")["who"] == "acme"  # type: ignore[index]
    assert subject.intake.lookup("globex", "e-1")["who"] == "globex"  # type: ignore[index]
    assert [tenant for tenant, _ in subject.enqueued()] == ["acme", "globex"]


def test_an_unknown_id_is_looked_up_as_none_and_an_empty_call_accepts_nothing(
        subject: Subject) -> None:
    assert subject.intake.lookup("acme", "never") is None
    assert subject.intake.accept("acme", []) == []
    assert subject.enqueued() == []
    assert subject.intake.ping() is True


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_an_accepted_id_is_forgotten_after_the_ttl(request: pytest.FixtureRequest,
                                                   kind: str) -> None:
    subject = build(request, kind, ttl=1)
    subject.intake.accept("acme", [pending("e-1", n=1)])
    time.sleep(1.3)
    assert subject.intake.lookup("acme", "e-1") is None
    # and the id is new again (older ids are the persist pool's to deduplicate)
    [again] = subject.intake.accept("acme", [pending("e-1", n=2)])
    assert again.outcome is Outcome.ACCEPTED


# --- the charge: the tenant's rate-limit bucket, taken in the same step -------------------------

def test_a_charge_takes_its_cost_and_one_that_cannot_be_paid_accepts_nothing(
        subject: Subject) -> None:
    # Given a bucket of 10 refilled at one per 1,000 s
    def charge(cost: int) -> Charge:
        return Charge("acme", cost=cost, rate=0.001, burst=10)

    # When a call of 4 events pays 4
    assert len(subject.intake.accept("acme", [pending(f"a-{i}") for i in range(4)],
                                     charge(4))) == 4
    # Then a call costing 7 no longer fits: RateLimited with the wait for the missing token,
    # and nothing of it accepted or enqueued
    with pytest.raises(RateLimited) as refused:
        subject.intake.accept("acme", [pending(f"b-{i}") for i in range(7)], charge(7))
    assert refused.value.charge == charge(7)
    assert refused.value.retry_after == pytest.approx(1000, rel=0.01)
    assert subject.intake.lookup("acme", "b-0") is None
    assert subject.enqueued() == [("acme", [{"id": f"a-{i}", "entity_name": "ORDER"}
                                            for i in range(4)])]
    # But a call costing 6 still does (a refused charge takes nothing)
    assert len(subject.intake.accept("acme", [pending(f"c-{i}") for i in range(6)],
                                     charge(6))) == 6
    # And then the bucket is empty; the limiter sees the same bucket
    with pytest.raises(RateLimited):
        subject.intake.accept("acme", [pending("d")], charge(1))
    assert not subject.limiter.take("acme", 1, 0.001, 10).allowed
    # While another tenant's bucket is full
    assert subject.intake.accept("globex", [pending("g")], Charge("globex", 1, 0.001, 10))


def test_a_charge_is_paid_by_what_the_limiter_left(subject: Subject) -> None:
    # Given the limiter took 9 of the tenant's 10
    assert subject.limiter.take("acme", 9, 0.001, 10).allowed
    # Then the intake can charge 1 more, not 2
    with pytest.raises(RateLimited):
        subject.intake.accept("acme", [pending("x")], Charge("acme", 2, 0.001, 10))
    [ok] = subject.intake.accept("acme", [pending("y")], Charge("acme", 1, 0.001, 10))
    assert ok.outcome is Outcome.ACCEPTED


def test_a_charge_with_no_events_is_still_taken(subject: Subject) -> None:
    # A request whose items were all invalid still costs what it carried
    assert subject.intake.accept("acme", [], Charge("acme", 5, 0.001, 10)) == []
    assert subject.limiter.take("acme", 5, 0.001, 10).allowed
    assert not subject.limiter.take("acme", 1, 0.001, 10).allowed


# --- an unreachable broker ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_unreachable_broker_is_intake_unavailable_and_nothing_is_remembered(
        kind: str) -> None:
    intake: Intake
    if kind == "memory":
        from dramatiq.brokers.stub import StubBroker

        from infra.broker.intakes.memory import MemoryIntake

        class DownBroker(StubBroker):
            def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
                raise ConnectionError("down")

        intake = MemoryIntake(DownBroker(), TTL)
    else:
        from infra.broker.intakes.redis import RedisIntake

        intake = RedisIntake(unreachable_redis(), TTL)
    with pytest.raises(IntakeUnavailable):
        intake.accept("acme", [pending("e-1")])
    assert intake.lookup("acme", "e-1") is None
    if kind == "redis":
        assert intake.ping() is False
