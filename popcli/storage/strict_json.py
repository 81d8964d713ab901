"""Strict JSON, read and written: every file, header entry and stdout line popcli makes or reads.

Python's ``json`` writes ``NaN`` by default, which strict parsers (jq, JavaScript, Go, Rust's
serde_json) reject, and reads duplicate keys by keeping the last. ``finite`` maps every
non-finite float to ``None`` (JSON null); ``dumps`` then serializes with ``allow_nan=False``
(``default=str`` for paths and the like); ``compact`` is the no-whitespace form artifact
headers use; ``loads`` is RFC 8259 JSON (no NaN/Infinity, no duplicate keys: ValueError).
``printable`` is what a name that popcli stores in a header and shows in a terminal may be
(a class name, a layer name, a version): short, valid UTF-8, no control or format characters.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

COMPACT = (",", ":")  # the separators of every JSON value inside an artifact header
MAX_TEXT = 256  # characters in a name or version stored in a header (and shown by `popcli inspect`)


def printable(value: Any, limit: int = MAX_TEXT) -> bool:
    """Whether ``value`` is a string of at most ``limit`` characters that encodes as UTF-8 (no lone
    surrogates: a file name that was not UTF-8) and holds no control or format character (a
    newline, an ANSI escape, a bidi override): safe to store, print and put in a CSV line."""
    if not isinstance(value, str) or len(value) > limit:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value)


def finite(value: Any) -> Any:
    """``value`` with every NaN / +-inf float (in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite(value)`` that refuses NaN; ``default=str`` for paths and the like."""
    kwargs.setdefault("default", str)
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def compact(value: Any) -> str:
    """``value`` as JSON without whitespace (``(",", ":")`` separators), as artifact headers hold it."""
    return json.dumps(value, separators=COMPACT)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def loads(text: str | bytes) -> Any:
    """JSON as RFC 8259 has it: no NaN/Infinity, no duplicate keys (ValueError otherwise)."""
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
