"""workers/grouping.Grouper: concurrent submissions share one run; each learns its own outcome."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import run_concurrently
from workers.grouping import Grouper


def _submit_all(grouper: Grouper[Any, Any], items: list[Any]) -> list[Any]:
    return run_concurrently(grouper.submit, items)


@pytest.mark.parametrize("overlap", [False, True])
def test_a_lingering_leader_waits_for_a_full_group(overlap: bool) -> None:
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[Any]:
        batches.append(items)
        return [i * 10 for i in items]

    grouper: Grouper[int, int] = Grouper(run, size=lambda _: 1, max_size=10, linger=2.0,
                                         overlap=overlap)
    results = _submit_all(grouper, list(range(10)))
    assert results == [i * 10 for i in range(10)]
    # one run for all ten (without the linger, the first would run alone); it did not wait 2 s
    assert [sorted(b) for b in batches] == [list(range(10))]


def test_groups_never_exceed_the_maximum_size() -> None:
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[Any]:
        batches.append(items)
        return [None] * len(items)

    grouper: Grouper[int, None] = Grouper(run, size=lambda n: n, max_size=10, linger=0.05)
    _submit_all(grouper, [4] * 12)
    assert sum(len(b) for b in batches) == 12
    assert all(sum(b) <= 10 for b in batches)


def test_each_member_gets_its_own_outcome_and_a_failed_run_fails_them_all() -> None:
    def run(items: list[str]) -> list[Any]:
        if "boom" in items:
            raise RuntimeError("the whole group failed")
        return [ValueError(i) if i == "bad" else i.upper() for i in items]

    grouper: Grouper[str, str] = Grouper(run, size=lambda _: 1, max_size=10, linger=0.5)
    results = _submit_all(grouper, ["a", "bad", "c"])
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)
    results = _submit_all(grouper, ["x", "boom"])
    assert all(isinstance(r, RuntimeError) for r in results)
    assert grouper.submit("after") == "AFTER"  # the grouper still works
