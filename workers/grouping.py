"""Concurrent actor calls in one process that share one unit of work (group commit, batch send).

Each worker thread submits its message's work and blocks until the group it joined is done, so
a message is still acknowledged only after its own work is. One thread at a time leads: it
waits up to ``linger`` seconds for the group to fill (never when it is full already), takes what
has been submitted (up to ``max_size``), runs it, wakes the members and hands the lead to the
next waiting submission — once the group has run (``overlap=False``: the groups run one after
another, and each is as large as can be, which suits work that is serialised anyway, like
commits under one lock), or as soon as the group is taken (``overlap=True``: the next group
forms while this one runs, which suits work that waits on the network).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Submission(Generic[T, R]):
    item: T
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    finished: bool = False
    result: R | None = None
    error: BaseException | None = None


class Grouper(Generic[T, R]):
    """Run ``run_batch`` over groups of concurrently submitted items.

    ``run_batch(items)`` returns one result or exception per item, in order; if it raises, every
    item of the group gets that exception.
    """

    def __init__(self, run_batch: Callable[[list[T]], list[R | BaseException]], *,
                 size: Callable[[T], int], max_size: int, linger: float = 0.0,
                 overlap: bool = False) -> None:
        self.run_batch = run_batch
        self.overlap = overlap
        self.size = size
        self.max_size = max_size
        self.linger = linger
        self._cond = threading.Condition()
        self._waiting: list[_Submission[T, R]] = []
        self._leading = False

    def submit(self, item: T) -> R:
        me: _Submission[T, R] = _Submission(item)
        with self._cond:
            self._waiting.append(me)
            self._cond.notify_all()  # a lingering leader may now have a full group
            if not self._leading:
                self._leading = me.lead = True
        while not me.finished:
            if me.lead:
                me.lead = False
                self._lead()
            else:
                me.wake.wait()
                me.wake.clear()
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def _pending(self) -> int:
        return sum(self.size(s.item) for s in self._waiting)

    def _lead(self) -> None:
        deadline = time.monotonic() + self.linger
        with self._cond:
            while self._pending() < self.max_size and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            batch: list[_Submission[T, R]] = []
            total = 0
            while self._waiting and (not batch or
                                     total + self.size(self._waiting[0].item) <= self.max_size):
                total += self.size(self._waiting[0].item)
                batch.append(self._waiting.pop(0))
            if self.overlap:
                self._hand_off()
        try:
            outcomes = self.run_batch([s.item for s in batch])
            for sub, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    sub.error = outcome
                else:
                    sub.result = outcome
        except Exception as exc:  # noqa: BLE001 - handed to every member's thread
            for sub in batch:
                sub.error = exc
        finally:
            if not self.overlap:
                with self._cond:
                    self._hand_off()
            for sub in batch:
                sub.finished = True
                sub.wake.set()

    def _hand_off(self) -> None:
        """The next waiting submission leads (called holding the lock)."""
        if self._waiting:
            self._waiting[0].lead = True
            self._waiting[0].wake.set()
        else:
            self._leading = False
