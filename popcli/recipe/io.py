"""Recipes as YAML: files, packaged names and ``--set`` overrides in, resolved YAML out.

``load(path, overrides)`` reads a YAML recipe (a file, a packaged recipe's name such as
``cifar10-conv4``, or None: the packaged quick start) and applies ``--set section.key=value``
overrides, each value parsed as YAML (``--set data.shape=[3,32,32]``). Files that are not UTF-8
text, hold no mapping (empty or only comments), repeat a key or nest too deeply raise
``RecipeError`` naming the file. ``dump`` writes the resolved recipe saved next to every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError
from .catalog import packaged_text, quickstart_text, unknown
from .schema import Recipe, check_values, resolve, set_key, short, unresolved


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping repeating a key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise RecipeError(f"key {short(key)} appears twice (line {key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed as YAML with duplicate keys refused; RecipeError naming ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply to read; a recipe is two levels of mappings") from None
    except (ValueError, OverflowError) as err:  # e.g. a 5000-digit integer
        raise RecipeError(f"{source}: a value cannot be read ({str(err).splitlines()[0][:120]})") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.lr=0.05"`` -> ("search.lr", 0.05); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {short(text)}: expected section.key=value, e.g. --set search.lr=0.05")
    return key.strip(), parse_yaml(raw, f"--set {text[:80]!r}") if raw.strip() else None


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (a file, a packaged recipe's name such as ``cifar10-conv4``, or None: the
    packaged quick start) and apply ``--set`` overrides."""
    if path is None:
        text, source = quickstart_text(), "the packaged quickstart recipe"
    else:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            text, source = packaged_text(str(path)), f"the packaged recipe {str(path)!r}"
            if text is None:
                raise unknown(str(path))
        else:
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise RecipeError(f"recipe {source!r} is not UTF-8 text (a binary file?); pass a YAML recipe") from None
            except OSError as err:
                raise RecipeError(f"recipe {source!r} cannot be read ({err.strerror}); check the path") from None
    if "\x00" in text:
        raise RecipeError(f"recipe {source!r} holds NUL bytes (a binary file?); pass a YAML recipe")
    data = parse_yaml(text, source)
    if data is None:
        raise RecipeError(f"recipe {source!r} is empty (nothing but blank lines or comments); write its model/data/"
                          "search sections, or omit the recipe for the quick start")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping with model/data/search sections")
    recipe = unresolved(data)  # the method's defaults apply after the overrides (--set search.method=...)
    for text_override in overrides or []:
        set_key(recipe, *parse_override(text_override), validate=False)
    return check_values(resolve(recipe))


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
