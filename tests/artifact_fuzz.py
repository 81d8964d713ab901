"""A seeded artifact fuzzer: hostile copies of good artifacts, and what popcli does with each.

Mutations: bit flips and truncations of the bytes (no re-sealing: the checks must catch them),
metadata edits re-sealed with a valid ``content_sha256`` (a buggy or hostile writer: values of
the wrong type or range, markup, deleted keys, edits deep inside the JSON entries, the cases
of issue 11), and tensor edits re-sealed (BN statistics NaN/Inf/negative, dtypes, shapes,
missing and extra tensors). Files with several masks get the same treatment inside their
``mask.NAME`` entries and ``mask.NAME.`` tensors (issue 20: every mask is held to the rules of the
first), plus edits of ``mask_names``; every base also gets headers naming builders whose code a
file must never make popcli import (issue 20: ``BUILDERS``). ``outcome`` runs ``popcli.load`` (for
every mask) and ``inspect`` + its rendering on one file and classifies it:

- ``error``: a one-line PopcliError (the only acceptable refusal);
- ``ok``: accepted, and the model is the one its metadata describes: read independently
  (``described``), its copies of each fact agree, its architecture builds the same structure,
  its weight facts and input are the original's, and the logits equal the original model's
  holding the file's stored tensors (statistics, dense weights), bit for bit;
- ``wrong``: accepted, but another model than the metadata describes; one mask loaded and another
  refused; inspect and load disagreeing (one verification for both); a module a header named
  imported; or a multi-line error;
- ``traceback``: any other exception.

Run ``PYTHONPATH=. python tests/artifact_fuzz.py [N] [SEED]`` for the counts by mutation kind.
"""

from __future__ import annotations

import io
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HOSTILE_STRINGS = ["", "abc", "null", "[]", "{}", "[/x]", "[bold red]x[/]", "\x1b[31mred", "Infinity", "-Infinity",
                   "NaN", "-1", "0", "1e309", "99999999999999999999999", "1.5", "true", '"x"', "[1,2]", '{"a":1}',
                   "9" * 400, "not json", "5", " 0.5", "0.50", "\u00e9", "{\"shape\":[1,8,8]}"]
HOSTILE_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2, 11, -10, 1.5, 0.5, 2**63, 2**64, 1e308, float("inf"),
                             float("-inf"), float("nan"), "", "abc", "[/x]", "fc", "conv4", [], {}, [1, 27, 28],
                             [100000, 100000], [float("inf"), 784], [1, 8, 8], {"test_acc": "high"}, [300, 100]]
# (key, value) pairs the issue reports, applied to every base artifact
ISSUE_CASES: list[tuple[str, Callable[[dict], Any]]] = [
    ("init_density", lambda m: "abc"), ("metrics", lambda m: "not json"), ("metrics", lambda m: "5"),
    ("metrics", lambda m: '{"test_acc":"high"}'), ("checkpoint_bytes", lambda m: "abc"),
    ("popcli_version", lambda m: "[/x]"), ("torch_version", lambda m: "[bold]2[/bold"), ("arch", lambda m: "[/x]"),
    ("data", lambda m: "[]"), ("recipe", lambda m: "{}"), ("recipe", lambda m: "[]"), ("layers", lambda m: "[]"),
    ("layers", lambda m: "{}"), ("density", lambda m: "Infinity"), ("seed", lambda m: "-1"),
]
ISSUE_EDITS: list[tuple[str, tuple, Any]] = [  # (metadata key, JSON path, new value; DELETE removes it)
    ("data", ("shape",), [1, 27, 28]), ("data", ("num_classes",), 11), ("data", ("num_classes",), -10),
    ("recipe", ("model", "arch"), "conv4"), ("recipe", ("model", "arch"), "DELETE"), ("recipe", ("model", "width"), 2.0),
    ("recipe", ("model", "hidden"), [300, 100]), ("recipe", ("model", "batchnorm"), True),
    ("recipe", ("model", "batchnorm"), False), ("recipe", ("search", "method"), "supermask"),
    ("recipe", ("search", "method"), "dense"), ("recipe", ("search", "method"), "edge-popup"),
    ("recipe", ("seed",), 2**63 - 1), ("recipe", ("search", "density"), 0.25), ("recipe", ("data", "shape"), [1, 8, 9]),
    ("layers", (0, "kept"), float("inf")), ("layers", (0, "shape"), [float("inf"), 784]),
    ("layers", (0, "shape"), [100000, 100000]), ("layers", (0, "name"), "[/x]"), ("metrics", ("test_acc",), "high"),
    ("metrics", ("test_acc",), float("nan")), ("metrics", ("steps",), -3),
    ("method_state", ("alpha", 0), 0.5), ("method_state", ("alpha",), []), ("method_state", ("inverted", 0), 0),
    ("method_state", ("sign_codec",), "rans"), ("method_state", ("inverted",), "DELETE"),
    ("method_state", ("dim",), 7), ("method_state", ("dtype",), "float16"), ("method_state", ("projection",), "x"),
    ("method_state", ("weights_sha256",), "0" * 64), ("recipe", ("search", "subspace_dim"), 7),
    ("recipe", ("search", "method"), "subspace"),
]
DELETE = "DELETE"
# multi-mask files: (JSON path inside mask.<second>, new value), the cases of issue 20 section 5
MASK_EDITS: list[tuple[tuple, Any]] = [
    (("recipe", "seed"), 5), (("recipe", "seed"), "05"), (("recipe", "seed"), "6"), (("recipe", "data", "shape"), [1, 8, 9]),
    (("recipe", "search", "density"), 0.25), (("metrics", "test_acc"), 7), (("metrics",), "high"),
    (("method_state",), {"alpha": [0.5, 0.5]}), (("kept", 0), 3), (("kept", 0), "3"), (("kept", 0), 1.5),
    (("mask_codec",), "zip"), (("data",), {"shape": [1, 8, 8]}), (("recipe", "model", "width"), 2.0), (("kept",), DELETE),
]
# builders a re-sealed header may name: stdlib, installed third-party, popcli's own CLI; none may be imported
BUILDERS = ["subprocess:run", "pytest:main", "pip._internal.cli.main:main", "popcli.cli:main", "http.server:test"]
NEVER_IMPORTED = ("pip._internal.cli.main", "http.server")  # modules nothing else in a test run imports


# --------------------------------------------------------------------------- writing files


def write_raw(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """A safetensors file with any JSON as metadata values (save_file insists on strings)."""
    names = {np.dtype("uint8"): "U8", np.dtype("int8"): "I8", np.dtype("float32"): "F32", np.dtype("float64"): "F64",
             np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("float16"): "F16", np.dtype("bool"): "BOOL"}
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])  # not ascontiguousarray: it turns a 0-d tensor into shape [1]
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes(order="C")
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))
    return path


def seal(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write with a content checksum popcli accepts (computed by popcli's own function)."""
    from popcli import artifact

    metadata = dict(metadata)
    metadata.pop("content_sha256", None)
    try:
        metadata["content_sha256"] = artifact.content_sha256(metadata, tensors)
    except Exception:  # metadata the checksum cannot even be computed over: leave it unsealed
        metadata["content_sha256"] = "0" * 64
    return write_raw(path, tensors, metadata)


def parts(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), "np") as f:
        metadata = dict(f.metadata())
    return load_file(str(path)), metadata


# --------------------------------------------------------------------------- mutations


def _edit(value: Any, path: tuple, new: Any) -> Any:
    """``value`` (parsed JSON) with the item at ``path`` replaced by ``new`` (DELETE: removed)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and head in value:
        value = dict(value)
        if not rest and new == DELETE:
            del value[head]
        else:
            value[head] = _edit(value[head], rest, new)
    elif isinstance(value, list) and isinstance(head, int) and -len(value) <= head < len(value):
        value = list(value)
        if not rest and new == DELETE:
            del value[head]
        else:
            value[head] = _edit(value[head], rest, new)
    return value


def _random_path(rnd: random.Random, value: Any) -> tuple:
    path: list = []
    while isinstance(value, (dict, list)) and value and rnd.random() < 0.8:
        head = rnd.choice(sorted(value)) if isinstance(value, dict) else rnd.randrange(len(value))
        path.append(head)
        value = value[head]
    return tuple(path)


def _tweak(rnd: random.Random, old: Any) -> Any:
    """A nearby or hostile replacement for one JSON value."""
    if isinstance(old, bool) or rnd.random() < 0.5:
        return rnd.choice([*HOSTILE_VALUES, DELETE])
    if isinstance(old, (int, float)):
        return rnd.choice([old + 1, old - 1, old * 2, -old, old * 1e6, str(old), float(old) + 0.5])
    if isinstance(old, str):
        return rnd.choice([old + "x", old.upper(), "", old[:-1], "[/x]" + old])
    if isinstance(old, list):
        return rnd.choice([old[:-1], old + old[-1:], [], {}, list(reversed(old))])
    return rnd.choice(HOSTILE_VALUES)


def json_edit(meta: dict[str, str], key: str, path: tuple, new: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(meta[key])
    except (KeyError, ValueError):
        return None
    meta = dict(meta)
    meta[key] = json.dumps(_edit(value, path, new), separators=(",", ":"))
    return meta


def mutants(good: Path, rnd: random.Random, count: int, out: Path, tag: str) -> list[tuple[str, Path]]:
    """``count`` seeded hostile copies of ``good`` (plus the issue's cases), as (kind, path)."""
    data = good.read_bytes()
    tensors, meta = parts(good)
    header_end = 8 + int.from_bytes(data[:8], "little")
    made: list[tuple[str, Path]] = []

    def name() -> Path:
        return out / f"{tag}-{len(made):04d}.safetensors"

    for key, value in ISSUE_CASES:
        made.append(("issue-meta", seal(name(), tensors, {**meta, key: value(meta)})))
    for key, path, new in ISSUE_EDITS:
        edited = json_edit(meta, key, path, new)
        if edited is not None and edited != meta:
            made.append(("issue-json", seal(name(), tensors, edited)))
    for arch in BUILDERS:
        recipe = json.loads(meta["recipe"])
        recipe["model"]["arch"] = arch
        source = {"kind": "import", "target": arch, "package": arch.split(".")[0].split(":")[0], "version": "1"}
        made.append(("builder", seal(name(), tensors, {**meta, "arch": arch, "recipe": json.dumps(recipe),
                                                       "model_source": json.dumps(source)})))
    for kind, edit in _mask_cases(tensors, meta):  # a loop: name() counts what is made so far
        made.append((kind, seal(name(), *edit)))
    for edit in _iterand_cases(rnd, tensors, meta):  # one file each (name() counts what is made)
        made.append(("iterand", seal(name(), *edit)))
    stats = sorted(k for k in tensors if k.endswith(("running_var", "running_mean")))
    for key in stats:
        for bad in (np.nan, np.inf, -np.inf, -1.0):
            changed = tensors[key].copy()
            changed.reshape(-1)[rnd.randrange(changed.size)] = bad
            made.append(("bn-stats", seal(name(), {**tensors, key: changed}, meta)))
    while len(made) < count:
        kind = rnd.choice(["flip", "flip", "truncate", "meta-string", "meta-delete", "json", "json", "json",
                           "tensor", "raw-meta"])
        if kind == "flip":
            buf = bytearray(data)
            region = rnd.choice([(0, 8), (8, header_end), (header_end, len(data))])
            for _ in range(rnd.randint(1, 3)):
                buf[rnd.randrange(*region)] ^= 1 << rnd.randrange(8)
            name().write_bytes(bytes(buf))
            made.append((kind, name()))
        elif kind == "truncate":
            name().write_bytes(data[:rnd.randrange(len(data))])
            made.append((kind, name()))
        elif kind == "meta-string":
            made.append((kind, seal(name(), tensors, {**meta, rnd.choice(sorted(meta)): rnd.choice(HOSTILE_STRINGS)})))
        elif kind == "meta-delete":
            key = rnd.choice(sorted(meta))
            made.append((kind, seal(name(), tensors, {k: v for k, v in meta.items() if k != key})))
        elif kind == "raw-meta":  # metadata values that are not strings at all
            made.append((kind, seal(name(), tensors, {**meta, rnd.choice(sorted(meta)): rnd.choice(HOSTILE_VALUES)})))
        elif kind == "json":
            key = rnd.choice(["recipe", "recipe", "data", "layers", "metrics", "method_state",
                              *[k for k in meta if k.startswith("mask.")] * 3, *["iterand"] * 3 * ("iterand" in meta)])
            try:
                parsed = json.loads(meta[key])
            except (KeyError, ValueError):
                continue
            path = _random_path(rnd, parsed)
            edited = json_edit(meta, key, path, _tweak(rnd, _get(parsed, path)))
            if edited is not None and edited != meta:
                made.append((kind, seal(name(), tensors, edited)))
        else:
            made.append(("tensor", seal(name(), _tensor_edit(rnd, tensors), meta)))
    return made


def _iterand_cases(rnd: random.Random, tensors: dict[str, np.ndarray],
                   meta: dict[str, str]) -> list[tuple[dict, dict]]:
    """An IteRand file's draws entry broken every way (docs/FORMAT.md, "IteRand draws"): the stream's
    bytes flipped, cut, extended, of another dtype or missing; the metadata's lists of another
    length, counts moved, a checksum changed, the entry deleted; and an entry in a file whose
    recipe has IteRand off. Each is re-sealed: only the entry's own checks can catch it."""
    key, meta_key = "iterand.draws", "iterand"
    if key not in tensors:
        return []
    data, state = tensors[key], json.loads(meta[meta_key])
    cases = []
    for _ in range(4):
        flipped = data.copy()
        flipped[rnd.randrange(flipped.size)] ^= np.uint8(1 << rnd.randrange(8))
        cases.append(({**tensors, key: flipped}, meta))
    cases += [({**tensors, key: data[:-2]}, meta), ({**tensors, key: np.concatenate([data, data[:2]])}, meta),
              ({**tensors, key: data.astype(np.int32)}, meta), ({k: v for k, v in tensors.items() if k != key}, meta),
              (tensors, {k: v for k, v in meta.items() if k != meta_key})]
    for field, value in (("redrawn", state["redrawn"][:-1]), ("draws", state["draws"] + [0]),
                         ("redrawn", [r + 1 for r in state["redrawn"]]), ("draws", [d + 1 for d in state["draws"]]),
                         ("sha256", ["0" * 64] * len(state["sha256"])), ("codec", "zip"),
                         ("codec", "packbits" if state["codec"] == "rans" else "rans")):
        cases.append((tensors, {**meta, meta_key: json.dumps({**state, field: value})}))
    recipe = json.loads(meta["recipe"])
    recipe["search"]["iterand_every_steps"] = 0
    cases.append((tensors, {**meta, "recipe": json.dumps(recipe)}))
    return cases


def _mask_cases(tensors: dict[str, np.ndarray], meta: dict[str, str]) -> list[tuple[str, tuple[dict, dict]]]:
    """The issue's multi-mask cases for a file with several masks: (kind, (tensors, metadata))."""
    if "mask_names" not in meta:
        return []
    names = json.loads(meta["mask_names"])
    other, cases = names[1], []
    for path, new in MASK_EDITS:
        edited = json_edit(meta, f"mask.{other}", path, new)
        if edited is not None and edited != meta:
            cases.append(("mask-json", (tensors, edited)))
    own = sorted(k for k in tensors if k.startswith(f"mask.{other}."))
    state = [k for k in own if ".state." in k]
    for changed in ({k: v for k, v in tensors.items() if k != (state or own)[0]},  # a per-mask tensor missing
                    {**tensors, f"mask.{other}.state.extra": np.zeros(3, np.float32)},  # one extra
                    {**tensors, "mask.c.masks": tensors["masks"].copy()},  # a mask not in mask_names
                    {**tensors, f"mask.{other}.method.signs": np.zeros(2, np.uint8)}):  # a method's on edge-popup
        cases.append(("mask-tensor", (changed, meta)))
    for order in (list(reversed(names)), names[:1], [*names, "extra"], [names[0], names[0]], [other]):
        cases.append(("mask-names", (tensors, {**meta, "mask_names": json.dumps(order)})))
    renamed = {k: v for k, v in meta.items() if k != f"mask.{other}"}  # names swapped, the entry renamed to match
    renamed.update({"mask_names": json.dumps([other, names[0]]), f"mask.{names[0]}": meta[f"mask.{other}"]})
    cases.append(("mask-names", (tensors, renamed)))
    return cases


def _get(value: Any, path: tuple) -> Any:
    for head in path:
        value = value[head]
    return value


def _tensor_edit(rnd: random.Random, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = dict(tensors)
    key = rnd.choice(sorted(tensors))
    value = tensors[key]
    choice = rnd.randrange(6)
    if choice == 0:
        del tensors[key]
    elif choice == 1:
        tensors["state.extra" if rnd.random() < 0.5 else "scores"] = np.zeros(3, np.float32)
    elif choice == 2 and value.size:
        tensors[key] = value.reshape(-1)[:-1].copy()
    elif choice == 3:
        tensors[key] = value.astype(rnd.choice([np.float64, np.int64, np.int8, np.float32]))
    elif choice == 4 and value.size:
        changed = value.copy()
        flat = changed.reshape(-1)
        choices = [np.nan, np.inf, -1e30, 0] if value.dtype.kind == "f" else [0, 1, 255] if value.dtype == np.uint8 \
            else [0, -1, 2**40]
        flat[rnd.randrange(flat.size)] = rnd.choice(choices)
        tensors[key] = changed
    else:
        tensors[key] = value.reshape(1, *value.shape) if value.ndim else value.reshape(1)
    return tensors


# --------------------------------------------------------------------------- judging


def _loose(value: Any) -> Any:
    """A metadata string as the value it states ("0.50" and "0.5" state the same number)."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def described(meta: dict[str, Any], mask: str | None = None) -> Any:
    """What the metadata says the model is (of mask ``mask`` of a multi-mask file: its entry), read
    independently of popcli's reader: None when its copies of a fact disagree; else (weight facts,
    input facts, architecture as built)."""
    from popcli.models import build_architecture
    from popcli.recipe import from_dict

    try:
        entry = json.loads(meta[f"mask.{mask}"]) if mask else {}
        raw = entry["recipe"] if mask else json.loads(meta["recipe"])
        raw = {**raw, "seed": int(raw["seed"])}
        recipe, data = from_dict(raw), json.loads(meta["data"])
        method, density = recipe.search.method, recipe.search.density
        shared = (int(meta["seed"]), meta["arch"], meta["init"], meta["method"])  # every mask's
        if shared != (recipe.seed, recipe.model.arch, recipe.model.init, method):
            return None
        if not mask and (float(meta["density"]), float(meta["init_density"])) != (  # the first mask's copies
                density, 1.0 if method == "dense" else density):
            return None
        if recipe.data.dataset == "synthetic" and (data["shape"], data["num_classes"]) != (
                recipe.data.shape, recipe.data.num_classes):
            return None
        with torch.device("meta"):
            model = build_architecture(recipe.model, recipe.search, in_channels=data["shape"][0],
                                       image_size=data["shape"][1], num_classes=data["num_classes"])
        layers = [(r["name"], r["shape"], r["kept"]) for r in json.loads(meta["layers"])]
        if mask:
            kept = entry["kept"]
            if len(kept) != len(layers) or not all(type(k) is int for k in kept):
                return None
            layers = [(n, shape, k) for (n, shape, _), k in zip(layers, kept)]
    except Exception:  # noqa: BLE001 (a header this reader cannot follow describes nothing)
        return None
    built = [(k, list(v.shape)) for k, v in model.state_dict().items() if not k.endswith("scores")]
    return (recipe.seed, recipe.model.init, 1.0 if method == "dense" else density), (data["shape"], data["num_classes"]), \
        built, layers


class Reference:
    """The unmutated artifact: what it describes, its models (one per mask) and their logits on a fixed input."""

    def __init__(self, good: Path):
        import popcli

        self.tensors, meta = parts(good)
        self.names = json.loads(meta.get("mask_names", '["default"]'))
        self.described = {name: described(meta, name if i else None) for i, name in enumerate(self.names)}
        self.x = torch.randn(3, *json.loads(meta["data"])["shape"], generator=torch.Generator().manual_seed(0))
        # subnet layers and BN as stored: logits exact
        self.models = {name: popcli.load(good, mask=name if i else None, mode="search")
                       for i, name in enumerate(self.names)}

    def prefix(self, name: str) -> str:
        return "" if name == self.names[0] else f"mask.{name}."

    def expected(self, tensors: dict[str, np.ndarray], name: str) -> torch.Tensor | None:
        """The logits of mask ``name``'s model holding ``tensors`` (stored statistics and dense weights)."""
        import copy

        prefix = self.prefix(name)
        if not np.array_equal(tensors.get(prefix + "masks", np.zeros(0)), self.tensors.get(prefix + "masks", np.zeros(0))):
            return None
        model = copy.deepcopy(self.models[name])
        state = {k[len(prefix + "state."):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
                 if k.startswith(prefix + "state.")}
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError:
            return None
        return model(self.x)


def _render(report: dict[str, Any]) -> str:
    """The inspect tables as the CLI prints them (rich markup processed)."""
    from rich.console import Console

    from popcli.cli import tables

    console = Console(file=io.StringIO(), width=120)
    for table in tables.inspect_tables(report):
        console.print(table)
    tables.print_verification(console, report)
    return console.file.getvalue()


def outcome(path: Path, ref: Reference) -> tuple[str, str]:
    """(error | ok | wrong | traceback, detail) for one file (see the module docstring)."""
    from popcli.errors import PopcliError
    from popcli.artifact import inspect

    before = {m for m in NEVER_IMPORTED if m in sys.modules}
    verdict = _load_outcome(path, ref)
    try:
        report = inspect(path)
        _render(report)
    except PopcliError as err:
        if "\n" in str(err) and verdict[0] != "traceback":
            return "wrong", f"inspect: multi-line error {str(err)!r}"
        report = None
    except Exception as err:  # noqa: BLE001 (the point: anything else is a failure)
        return "traceback", f"inspect: {type(err).__name__}: {str(err)[:200]}"
    imported = sorted(m for m in NEVER_IMPORTED if m in sys.modules and m not in before)
    if imported:
        return "wrong", f"a module the header names was imported: {imported[0]}"
    inspected = bool(report and report["verified"])
    if verdict[0] in ("ok", "error") and inspected != (verdict[0] == "ok") and (
            report is None or report.get("structure_checked", True)):
        return "wrong", f"inspect and load disagree: inspect {'verified' if inspected else 'refused'}, load {verdict}"
    return verdict


def _load_outcome(path: Path, ref: Reference) -> tuple[str, str]:
    """Load every mask of the reference's: all refused (error) or all the described models (ok)."""
    verdicts = [_load_mask(path, ref, name) for name in ref.names]
    kinds = {v[0] for v in verdicts}
    for kind in ("traceback", "wrong"):
        if kind in kinds:
            return next(v for v in verdicts if v[0] == kind)
    if kinds == {"ok", "error"}:
        return "wrong", f"one mask loaded, another refused: {next(v for v in verdicts if v[0] == 'error')[1]}"
    return verdicts[0]


def _load_mask(path: Path, ref: Reference, name: str) -> tuple[str, str]:
    import popcli
    from popcli.errors import PopcliError

    first = name == ref.names[0]
    try:
        model = popcli.load(path, mask=None if first else name, mode="search")
    except PopcliError as err:
        return ("wrong", f"multi-line error {str(err)!r}") if "\n" in str(err) else ("error", str(err)[:200])
    except Exception as err:  # noqa: BLE001
        return "traceback", f"load: {type(err).__name__}: {str(err)[:200]}"
    try:
        tensors, meta = parts(path)
        stated, expected = described(meta, None if first else name), ref.expected(tensors, name)
        logits = model(ref.x)
    except Exception as err:  # noqa: BLE001
        return "wrong", f"accepted, but unusable: {type(err).__name__}: {str(err)[:200]}"
    wanted = ref.described[name]
    if stated != wanted:
        what = "copies of a fact disagree" if stated is None else ", ".join(
            part for part, a, b in zip(("weights", "input", "architecture", "layers"), stated, wanted) if a != b)
        return "wrong", f"mask {name!r} accepted, but the metadata describes another model ({what})"
    if expected is None or not torch.equal(logits, expected):
        return "wrong", f"mask {name!r} accepted: the same description, other logits than the file's tensors give"
    return "ok", ""


def run(goods: list[Path], count: int, seed: int, out: Path) -> tuple[Counter, list[tuple[str, str, str]]]:
    """Fuzz each of ``goods`` with ``count`` mutants; (counts by outcome, [(kind, outcome, detail)])."""
    rnd = random.Random(seed)
    results = []
    for i, good in enumerate(goods):
        ref = Reference(good)
        for kind, path in mutants(good, rnd, count, out, f"g{i}"):
            verdict, detail = outcome(path, ref)
            results.append((kind, verdict, detail, path))
    return Counter(r[1] for r in results), results


def make_bases(out: Path) -> list[Path]:
    """Seven small artifacts to mutate: fc + BN (rans), conv2 with a dense last layer (packbits), dense fc,
    signed supermask (a second coded stream), biprop (per-layer alpha in the metadata), subspace
    (fc + BN: seed + z, a float32 ``subspace.z`` and its checksum), and a two-mask fc + BN file
    (format version 3: masks "a" and "b" over one seed)."""
    import popcli
    from popcli import recipe as recipes
    from popcli.models import build_model

    cases = [
        (["model.arch=fc", "model.hidden=[32]", "model.batchnorm=true", "search.density=0.1", "seed=7"], [1, 8, 8], 4, "rans"),
        (["model.arch=conv2", "model.width=0.0625", "search.dense_last=true", "search.density=0.3"], [3, 8, 8], 3,
         "packbits"),
        (["model.arch=fc", "model.hidden=[8]", "search.method=dense", "seed=3"], [1, 4, 4], 2, "auto"),
        (["model.arch=fc", "model.hidden=[16]", "model.batchnorm=false", "search.method=signed-supermask",
          "search.density=0.3"], [1, 4, 4], 3, "auto"),
        (["model.arch=fc", "model.hidden=[16]", "search.method=biprop", "search.density=0.3", "seed=11"], [1, 4, 4], 3,
         "rans"),
        (["model.arch=fc", "model.hidden=[16]", "model.batchnorm=true", "model.init=kaiming_normal",
          "search.method=subspace", "search.density=1.0", "search.subspace_dim=12", "seed=5"], [1, 4, 4], 3, "auto"),
    ]
    paths = []
    for i, (options, shape, classes, codec) in enumerate(cases):
        recipe = recipes.load(None, ["data.dataset=synthetic", f"data.shape={shape}", f"data.num_classes={classes}",
                                     *options])
        model = build_model(recipe.model, recipe.search, in_channels=shape[0], image_size=shape[1], num_classes=classes,
                            seed=recipe.seed)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            if recipe.search.method == "subspace":  # trained coordinates: w = w0 + P z moves off w0
                model.popcli_subspace_z.copy_(torch.randn(model.popcli_subspace_z.shape, generator=gen))
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
                    module.num_batches_tracked.fill_(5)
        paths.append(out / f"base{i}.safetensors")
        popcli.save(model, paths[-1], recipe=recipe, data_info={"shape": shape, "num_classes": classes},
                    metrics={"test_acc": 0.5, "test_loss": 1.25, "steps": 3, "epochs": 1.0}, codec=codec)
    paths.append(two_masks(out)[0])
    paths.append(iterand_base(out)[0])
    return paths


def iterand_base(out: Path) -> tuple[Path, torch.nn.Module]:
    """fc over seed 5 searched with IteRand: random scores, then redraw rounds with the masks of
    fresh scores in between, so kept weights hold draws 0, 1, 2, ...; saved (rans) and its model."""
    import popcli
    from popcli import recipe as recipes
    from popcli.methods import iterand
    from popcli.models import build_model, masked_layers

    recipe = recipes.load(None, ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "model.arch=fc",
                                 "model.hidden=[24]", "search.density=0.2", "seed=5", "search.iterand_every_steps=1",
                                 "search.iterand_rate=0.5"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=5)
    controller = iterand.enable(model, recipe.search, 5, recipe.model.init, recipe.search.density)
    gen = torch.Generator().manual_seed(9)
    for step in range(1, 6):
        with torch.no_grad():
            for _, layer in masked_layers(model):
                layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen))
        controller.after_step(model, step)
    path = out / "iterand.safetensors"
    popcli.save(model, path, recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4},
                metrics={"test_acc": 0.5, "steps": 5}, codec="rans")
    return path, model.eval()


def two_masks(out: Path, method: str = "edge-popup") -> tuple[Path, dict[str, torch.nn.Module]]:
    """Masks "a" and "b" of fc + BN over seed 7 (other scores and statistics per task) in one file,
    as `popcli export --mask` writes it, and the two models (eval mode)."""
    import popcli
    from popcli import artifact, recipe as recipes
    from popcli.artifact import multimask
    from popcli.artifact.writer import write_sealed
    from popcli.models import build_model, masked_layers

    singles, models = [], {}
    for task, name in enumerate(("a", "b")):
        recipe = recipes.load(None, ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4",
                                     "model.arch=fc", "model.hidden=[16]", "model.batchnorm=true", "search.density=0.2",
                                     "seed=7", f"search.method={method}", f"data.permute_task={task}"])
        model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=7)
        gen = torch.Generator().manual_seed(50 + task)
        with torch.no_grad():
            for _, layer in masked_layers(model):
                layer.scores.copy_(torch.randn(layer.scores.shape, generator=gen))
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen))
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
        single = out / f"{method}-{name}.safetensors"
        popcli.save(model, single, recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4},
                    metrics={"test_acc": 0.25 * (task + 1), "steps": 3})
        singles.append(artifact.read(single))
        models[name] = model.eval()
    metadata, tensors = multimask.combine(["a", "b"], singles)
    path = out / f"{method}-ab.safetensors"
    write_sealed(path, metadata, tensors, force=False)
    return path, models


if __name__ == "__main__":
    import tempfile
    import time

    n, seed = (int(sys.argv[1]) if len(sys.argv) > 1 else 120), (int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts, results = run(make_bases(Path(tmp)), n, seed, Path(tmp))
        by_kind = Counter((r[0], r[1]) for r in results)
        print(f"tried {len(results)}: " + ", ".join(f"{k} {counts[k]}" for k in ("error", "ok", "wrong", "traceback"))
              + f" ({time.perf_counter() - start:.1f} s)")
        for (kind, verdict), c in sorted(by_kind.items()):
            print(f"  {kind:12s} {verdict:10s} {c}")
        seen = set()
        for kind, verdict, detail, path in results:
            if verdict in ("wrong", "traceback") and (kind, detail[:60]) not in seen:
                seen.add((kind, detail[:60]))
                print(f"{verdict:9s} {kind:11s} {path.name}: {detail}")
