"""Shell completion (``popcli --install-completion``): recipe names, ``--set`` keys and values, model names.

Each function takes what has been typed of one argument and returns the candidates, with a short
help where the shell shows one: packaged recipe names and YAML files for a RECIPE, every recipe
key (``search.density=``) for ``--set`` / ``--grid`` and, after the ``=``, the values of that key
(model names for ``model.arch``, the choices of a key that has some, true/false), model names
for ``popcli models``. They only read popcli's tables; nothing here runs a model or reads data.
"""

from __future__ import annotations

from pathlib import Path


def recipes(incomplete: str) -> list[tuple[str, str]]:
    """Packaged recipes by name, then ``*.yaml`` files of the folder being typed."""
    from ..recipe.catalog import packaged

    found = [(name, line) for name, line in packaged().items() if name.startswith(incomplete)]
    folder, _, stem = incomplete.rpartition("/")
    base = Path(folder or ".")
    try:
        files = sorted(p for p in base.iterdir() if p.name.startswith(stem) and (p.is_dir() or p.suffix in (".yaml", ".yml")))
    except OSError:
        files = []
    prefix = f"{folder}/" if folder else ""
    return found + [(f"{prefix}{p.name}{'/' if p.is_dir() else ''}", "folder" if p.is_dir() else "recipe file")
                    for p in files]


def _key_rows() -> dict[str, dict]:
    from ..recipe import Recipe
    from ..recipe.keys import describe_keys

    return {row["key"]: row for row in describe_keys(Recipe())}


def key_values(incomplete: str) -> list[tuple[str, str]]:
    """``--set``/``--grid``: ``KEY=`` for every key starting with what is typed; after ``=``, its values."""
    rows = _key_rows()
    key, sep, value = incomplete.partition("=")
    if not sep:
        return [(f"{name}=", row["help"] or row["type"]) for name, row in rows.items() if name.startswith(key)]
    if key == "model.arch":
        return [(f"{key}={name}", text) for name, text in models(value)]
    row = rows.get(key)
    if row is None:
        return []
    choices = row["choices"] or (["true", "false"] if row["type"] == "bool" else [])
    return [(f"{key}={choice}", "") for choice in choices if choice.startswith(value)]


def models(incomplete: str) -> list[tuple[str, str]]:
    """Registered model names (and installed entry points) starting with what is typed."""
    from ..models import model_descriptions

    return [(name, text) for name, text in model_descriptions().items() if name.startswith(incomplete)]
