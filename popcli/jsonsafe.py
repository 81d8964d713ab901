"""Strict JSON for every file and stdout line popcli writes: no NaN or Infinity tokens.

Python's ``json`` writes ``NaN`` by default, which strict parsers (jq, JavaScript, Go, Rust's
serde_json) reject. ``finite`` maps every non-finite float to ``None`` (JSON null) and ``dumps``
then serializes with ``allow_nan=False``.
"""

from __future__ import annotations

import json
import math
from typing import Any


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
