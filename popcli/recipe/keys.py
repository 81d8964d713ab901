"""The recipe's key reference: every key with its type, range or choices, default and meaning.

``describe_keys(recipe)`` lists every key of a resolved recipe, for ``popcli recipe show`` and
``popcli search --show-recipe``. The schema's dataclasses are the source: their annotations,
defaults and field comments (``schema``), and ``schema.RANGES``. Nothing prints.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .schema import RANGES, Recipe, resolve, type_name


def describe_keys(recipe) -> list[dict[str, Any]]:
    """One row per recipe key: key, type, range (or choices), default (for this recipe's method and
    subspace dim), value, and the source comment."""
    default = Recipe()
    default.search.method, default.search.subspace_dim = recipe.search.method, recipe.search.subspace_dim
    resolve(default)  # unset optimizer keys: this method's defaults, as a search would use them
    default.search.method, default.search.subspace_dim = Recipe().search.method, Recipe().search.subspace_dim
    rows = [_row("seed", int, default.seed, recipe.seed, "the seed of the weights, the data order and the scores")]
    for section in ("model", "data", "search"):
        cls = type(getattr(default, section))
        hints = typing.get_type_hints(cls)
        comments = _comments(cls)
        for field in dataclasses.fields(cls):
            rows.append(_row(f"{section}.{field.name}", hints[field.name], getattr(getattr(default, section), field.name),
                             getattr(getattr(recipe, section), field.name), comments.get(field.name, "")))
    return rows


def _row(key: str, tp: Any, default: Any, value: Any, comment: str) -> dict[str, Any]:
    lo_hi = RANGES.get(key)
    literal = tp if typing.get_origin(tp) is typing.Literal else next(
        (a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal), None)  # Literal | None too
    choices = [str(c) for c in typing.get_args(literal)] if literal is not None else None
    if key == "search.density":
        lo_hi = (0.0, 1.0)  # (0, 1]: checked in schema.check_values
    return {"key": key, "type": type_name(tp), "range": list(lo_hi) if lo_hi else None, "choices": choices,
            "default": default, "value": value, "help": comment}


def _comments(cls: type) -> dict[str, str]:
    """The ``# ...`` comment after each field of a recipe dataclass (the source is the reference)."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in source.splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and name.isidentifier() and "#" in rest:
            out[name] = rest.split("#", 1)[1].strip()
    return out
