"""The recipes shipped inside the package (``popcli/recipe/packaged/*.yaml``).

``packaged()`` maps each name (the file name without ``.yaml``: ``cifar10-conv4``) to its first
comment line; ``packaged_text(name)`` is its YAML, so ``popcli search cifar10-conv4`` works
from any folder; ``quickstart_text()`` is the default recipe's. Nothing prints.
"""

from __future__ import annotations

from importlib.resources import files

from ..errors import RecipeError, did_you_mean

QUICKSTART = "quickstart"  # the recipe `popcli search` runs when given none


def _folder():
    return files("popcli.recipe").joinpath("packaged")


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
    names = packaged()
    return RecipeError(f"recipe {name!r} not found{did_you_mean(name, names)}: pass a YAML file or a packaged "
                       f"recipe's name ({', '.join(names)}; `popcli recipes` lists them)")


def quickstart_text() -> str:
    """The YAML of the packaged quick start (the default recipe)."""
    return _folder().joinpath(f"{QUICKSTART}.yaml").read_text()
