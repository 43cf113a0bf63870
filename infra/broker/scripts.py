"""The Redis Lua scripts, shipped as package data in infra/broker/lua/ (as Dramatiq ships its
own beside its Redis broker)."""

from __future__ import annotations

from importlib.resources import files


def lua(*names: str) -> str:
    """The text of the scripts ``names`` (file names in infra/broker/lua/), joined in order: a
    file of functions first, then the script that calls them."""
    folder = files("infra.broker") / "lua"
    return "\n".join((folder / name).read_text(encoding="utf-8") for name in names)
