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
from .catalog import QUICKSTART, packaged_text, quickstart_text, unknown
from .schema import RANGES, Recipe, check_values, resolve, set_key, short, unresolved


class _BadValue(Exception):
    """A value YAML cannot build (a 5000-digit integer), with the keys leading to it."""

    def __init__(self, keys: list[str], line: int, reason: str):
        super().__init__(reason)
        self.keys, self.line, self.reason = keys, line, reason


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping repeating a key (plain YAML keeps the last one silently)
    and names the key and line of a value it cannot build."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise RecipeError(f"key {short(key)} appears twice (line {key_node.start_mark.line + 1}); keep one")
            try:
                self.construct_object(value_node, deep=True)  # cached: built once
            except _BadValue as err:
                raise _BadValue([str(key), *err.keys], err.line, err.reason) from None
            except (ValueError, OverflowError) as err:
                raise _BadValue([str(key)], value_node.start_mark.line + 1, _reason(err)) from None
        return super().construct_mapping(node, deep)


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err).strip() else err.__class__.__name__
    if "integer string conversion" in text:  # Python reads at most 4300 digits
        return "an integer far too long (thousands of digits)"
    return text[:120]


def _out_of_range(key: str) -> str:
    lo_hi = RANGES.get(key)
    return f"; {key} must be in [{lo_hi[0]}, {lo_hi[1]}]" if lo_hi else ""


def parse_yaml(text: str, source: str, key: str | None = None) -> Any:
    """``text`` parsed as YAML with duplicate keys refused; RecipeError naming ``source``, the
    line and the key (``key``: what a lone value given on the command line is for)."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
    except _BadValue as err:
        dotted = ".".join(err.keys)
        raise RecipeError(f"{source}, line {err.line}: {dotted}: the value cannot be read ({err.reason})"
                          f"{_out_of_range(dotted)}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = " ".join(p for p in (err.context, err.problem) if p)
        raise RecipeError(f"{source} is not valid YAML{where}: {what}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply to read; a recipe is two levels of mappings") from None
    except (ValueError, OverflowError) as err:  # a lone value: --set seed=<5000 digits>
        name = f" {key}" if key else ""
        raise RecipeError(f"{source}{name}: the value cannot be read ({_reason(err)}){_out_of_range(key or '')}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.lr=0.05"`` -> ("search.lr", 0.05); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {short(text)}: expected section.key=value, e.g. --set search.lr=0.05")
    key = key.strip()
    return key, parse_yaml(raw, "--set", key) if raw.strip() else None


BASE_KEY = "base"  # a recipe file's first key may name what it starts from
DEFAULT_BASE = QUICKSTART  # a file without ``base:`` starts from the quick start, as `popcli search` does
SCHEMA_BASE = "defaults"  # ``base: defaults``: popcli's schema defaults (``popcli recipe show --set ...`` of none)
MAX_BASES = 8  # a chain of bases longer than this is a loop or a mistake


def _text(name: str | Path, folder: Path | None) -> tuple[str, str, Path | None]:
    """(YAML text, how to name it in errors, its folder) of a recipe file or a packaged name;
    a relative file name is looked up in ``folder`` first (a base beside the file naming it)."""
    path = Path(name)
    if folder is not None and not path.is_absolute() and (folder / path).is_file():
        path = folder / path
    if not path.is_file():
        text = packaged_text(str(name))
        if text is None:
            raise unknown(str(name))
        stem = str(name).removesuffix(".yaml")
        return text, (_QUICKSTART_SOURCE if stem == QUICKSTART else f"the packaged recipe {str(name)!r}"), None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {str(path)!r} is not UTF-8 text (a binary file?); pass a YAML recipe") from None
    except OSError as err:
        raise RecipeError(f"recipe {str(path)!r} cannot be read ({err.strerror}); check the path") from None
    return text, str(path), path.parent


def _mapping(text: str, source: str) -> dict[str, Any]:
    if "\x00" in text:
        raise RecipeError(f"recipe {source!r} holds NUL bytes (a binary file?); pass a YAML recipe")
    data = parse_yaml(text, source)
    if data is None:
        raise RecipeError(f"recipe {source!r} is empty (nothing but blank lines or comments); write its model/data/"
                          "search sections, or omit the recipe for the quick start")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping with model/data/search sections")
    return data


_QUICKSTART_SOURCE = "the packaged quickstart recipe"


def _chain(path: str | Path | None) -> list[tuple[str, dict[str, Any]]]:
    """[(source, its keys)] from the first base to the file itself (``base:`` keys removed)."""
    chain: list[tuple[str, dict[str, Any]]] = []
    name, folder = path, None
    while True:
        if len(chain) == MAX_BASES:
            raise RecipeError(f"recipe {str(path)!r}: more than {MAX_BASES} bases in a chain (a loop?); "
                              f"check the files' {BASE_KEY}: keys")
        text, source, here = ((quickstart_text(), _QUICKSTART_SOURCE, None) if name is None else _text(name, folder))
        data = _mapping(text, source)
        chain.insert(0, (source, data))
        if source == _QUICKSTART_SOURCE and BASE_KEY not in data:  # the quick start itself: the schema's defaults
            return chain
        base = data.pop(BASE_KEY, DEFAULT_BASE)
        if not isinstance(base, str) or not base:
            raise RecipeError(f"{source}: {BASE_KEY}: {short(base)} is not a recipe; give a packaged recipe's "
                              f"name (popcli recipes), a YAML file, or {SCHEMA_BASE!r}")
        if base == SCHEMA_BASE:
            chain.insert(0, ("popcli's defaults (base: defaults)", {}))
            return chain
        name, folder = (None if base == DEFAULT_BASE else base), here


def _merged(chain: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each recipe's keys over its base's: sections merged key by key, ``seed`` replaced."""
    out: dict[str, Any] = {}
    for _, data in chain:
        for key, value in data.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def bases(path: str | Path | None) -> list[str]:
    """Where a recipe's keys come from, first base first, the recipe itself last (``popcli recipe
    show`` prints it): e.g. ["the packaged quickstart recipe", "my.yaml"]."""
    return [source for source, _ in _chain(path)]


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (a file, a packaged recipe's name such as ``cifar10-conv4``, or None: the
    packaged quick start) and apply ``--set`` overrides. A file starts from the quick start
    unless its ``base:`` names another recipe (a packaged name, or a file beside it) or
    ``defaults`` (popcli's schema defaults); its keys replace the base's one by one."""
    recipe = unresolved(_merged(_chain(path)))  # the method's defaults apply after the overrides (--set search.method=...)
    for text_override in overrides or []:
        set_key(recipe, *parse_override(text_override), validate=False)
    return check_values(resolve(recipe))


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
