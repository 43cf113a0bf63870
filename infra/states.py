"""What a state machine of a domain object raises when asked for a move its state forbids."""

from __future__ import annotations


class IllegalTransition(ValueError):
    """``action`` is not allowed from ``state`` (a bug in the caller, never a client error)."""

    def __init__(self, kind: str, state: str | None, action: str) -> None:
        super().__init__(f"{kind}: cannot {action} from {state!r}")
        self.kind, self.state, self.action = kind, state, action
