"""The recipes shipped inside the package (``popcli/recipes/*.yaml``) and the recipe's key reference.

``packaged()`` maps each name (the file name without ``.yaml``: ``cifar10-conv4``) to its first
comment line; ``packaged_text(name)`` is its YAML, so ``popcli search cifar10-conv4`` works
from any folder. ``describe_keys(recipe)`` lists every key of a resolved recipe with its type,
range, default and value, for ``popcli recipe show``. Nothing prints.
"""

from __future__ import annotations

import dataclasses
import typing
from importlib.resources import files
from typing import Any

from .errors import RecipeError


def _folder():
    return files("popcli").joinpath("recipes")


def packaged() -> dict[str, str]:
    """{name: first line of its header comment}, sorted by name."""
    out = {}
    for entry in sorted(_folder().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = next((line for line in entry.read_text().splitlines() if line.strip()), "")
            out[entry.name[:-5]] = first.lstrip("# ").strip()
    return out


def packaged_text(name: str) -> str | None:
    """The YAML of packaged recipe ``name`` (with or without ``.yaml``), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" in stem or stem not in packaged():
        return None
    return _folder().joinpath(f"{stem}.yaml").read_text()


def unknown(name: str) -> RecipeError:
    return RecipeError(f"recipe {name!r} not found: pass a YAML file or a packaged recipe's name "
                       f"({', '.join(packaged())}; `popcli recipes` lists them)")


def describe_keys(recipe) -> list[dict[str, Any]]:
    """One row per recipe key: key, type, range (or choices), default (for this recipe's method),
    value, and the source comment."""
    from . import recipe as recipes

    default = recipes.Recipe()
    default.search.method = recipe.search.method
    recipes.resolve(default)  # unset optimizer keys: this method's defaults, as a search would use them
    default.search.method = recipes.Recipe().search.method
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
    from . import recipe as recipes

    lo_hi = recipes._RANGES.get(key)
    literal = tp if typing.get_origin(tp) is typing.Literal else next(
        (a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal), None)  # Literal | None too
    choices = [str(c) for c in typing.get_args(literal)] if literal is not None else None
    if key == "search.density":
        lo_hi = (0.0, 1.0)  # (0, 1]: checked in _validate
    return {"key": key, "type": recipes._type_name(tp), "range": list(lo_hi) if lo_hi else None, "choices": choices,
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
