"""The optional metadata entries (preprocessing, method_state, model_source) are checked when a
file is read: hostile values re-sealed with a valid content hash are one ArtifactError line from
both ``popcli.load`` and ``inspect`` (which builds no model), never a TypeError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import popcli
from artifact_fuzz import make_bases, parts, seal
from popcli.errors import ArtifactError
from popcli.artifact import inspect

FC_BN, SIGNED, BIPROP = 0, 3, 4  # make_bases order: fc+BN, conv2, dense fc, signed supermask, biprop


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> list[Path]:
    return make_bases(tmp_path_factory.mktemp("bases"))


def _edited(meta: dict[str, str], key: str, field: str | None, value) -> dict[str, str]:
    """``meta`` with ``key`` replaced by JSON ``value`` (field None) or with ``key``'s ``field`` set."""
    if field is None:
        return {**meta, key: json.dumps(value)}
    entry = json.loads(meta[key])
    entry[field] = value
    return {**meta, key: json.dumps(entry)}


CASES = [  # (base, key, field or None, value, fragment of the message)
    (FC_BN, "preprocessing", None, 5, "expected a JSON dict"),
    (FC_BN, "preprocessing", "mean", "abc", "preprocessing.mean"),
    (FC_BN, "preprocessing", "std", [0.0], "not positive"),
    (FC_BN, "preprocessing", "input_shape", [1, 27, 28], "but 'data' says"),
    (FC_BN, "preprocessing", "class_names", ["a"], "class_names"),
    (FC_BN, "preprocessing", "class_names", ["[/x]"] * 9 + [7], "class_names"),
    (FC_BN, "method_state", None, {"alpha": [1.0]}, "stores no state"),
    (SIGNED, "method_state", None, 5, "expected a JSON dict"),
    (SIGNED, "method_state", None, 0.5, "expected a JSON dict"),
    (SIGNED, "method_state", "inverted", 3, "masked layers"),
    (SIGNED, "method_state", "inverted", [-1, 0], "between 0 and the kept count"),
    (SIGNED, "method_state", "sign_codec", "zip", "sign_codec"),
    (BIPROP, "method_state", "alpha", [float("nan")] * 2, "not valid"),
    (BIPROP, "method_state", "alpha", ["x", 1.0], "finite non-negative"),
    (FC_BN, "model_source", None, 5, "expected a JSON dict"),
    (FC_BN, "model_source", None, {"kind": "import", "target": ["x"]}, "model_source.target"),
]


@pytest.mark.parametrize("base,key,field,value,fragment", CASES,
                         ids=[f"{c[1]}.{c[2]}={str(c[3])[:20]}" for c in CASES])
def test_hostile_optional_entries_are_one_line_errors(bases, tmp_path, base, key, field, value, fragment):
    tensors, meta = parts(bases[base])
    if field is not None and key not in meta:
        pytest.fail(f"base {base} has no {key!r} entry to edit")
    path = seal(tmp_path / "m.safetensors", tensors, _edited(meta, key, field, value))
    for read in (popcli.load, inspect):
        with pytest.raises(ArtifactError) as info:
            read(path)
        assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_untouched_bases_still_load(bases):
    for path in bases:
        popcli.load(path)
