"""One verification for inspect and load (issue 20, section 5): every hostile file the issue lists,
re-sealed with a valid content checksum, is refused by ``popcli.load`` (whichever mask is asked
for) and by ``popcli inspect`` (refused, or reported not verified), in one line each; the
untouched files load each mask's own weights and verify in both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import popcli
from artifact_fuzz import make_bases, parts, seal, two_masks
from popcli.artifact import inspect
from popcli.errors import PopcliError

SIGNED, BIPROP = 3, 4  # make_bases order: fc+BN, conv2, dense fc, signed supermask, biprop
Edit = Callable[[dict, dict], tuple[dict, dict]]  # (tensors, metadata) -> edited (tensors, metadata)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("verify")
    bases = make_bases(folder)
    found = {"signed": bases[SIGNED], "biprop": bases[BIPROP], "models": {}}
    for key, method in (("edge-popup", "edge-popup"), ("biprop-multi", "biprop"), ("signed-multi", "signed-supermask")):
        (folder / key).mkdir()
        found[key], found["models"][key] = two_masks(folder / key, method)
    return found


def entry_edit(name: str, change: Callable[[dict], None]) -> Edit:
    """Edit the JSON entry ``name`` (a metadata key) in place with ``change``."""
    def edit(tensors, meta):
        value = json.loads(meta[name])
        change(value)
        return tensors, {**meta, name: json.dumps(value)}
    return edit


def setter(*path, value=None, delete=False) -> Callable[[dict], None]:
    def change(value_at):
        for key in path[:-1]:
            value_at = value_at[key]
        if delete:
            del value_at[path[-1]]
        else:
            value_at[path[-1]] = value
    return change


def tensor_edit(change: Callable[[dict], None]) -> Edit:
    def edit(tensors, meta):
        tensors = dict(tensors)
        change(tensors)
        return tensors, meta
    return edit


def _ulp(meta_value: str, index: int = 0) -> str:
    state = json.loads(meta_value)
    state["alpha"][index] = float(np.nextafter(np.float32(state["alpha"][index]), np.float32(np.inf)))
    return json.dumps(state)


def _flip_bit(key: str) -> Callable[[dict], None]:
    def change(tensors):
        data = tensors[key].copy()
        data[0] ^= 1
        tensors[key] = data
    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda tensors: tensors.pop(key)


def _swap_codec(state: dict) -> None:
    state["sign_codec"] = "rans" if state["sign_codec"] == "packbits" else "packbits"


def _as_edge_popup(tensors, meta):
    """``method`` changed to edge-popup while the signs remain (method_state gone, as edge-popup has none)."""
    recipe = json.loads(meta["recipe"])
    recipe["search"]["method"] = "edge-popup"
    meta = {k: v for k, v in meta.items() if k != "method_state"}
    return tensors, {**meta, "recipe": json.dumps(recipe), "method": "edge-popup"}


def _state_key(tensors: dict, prefix: str) -> str:
    return sorted(k for k in tensors if k.startswith(prefix + "state."))[0]


CASES: dict[str, tuple[str, Edit]] = {  # name: (file, edit)
    # biprop alphas (single file, and mask b of a two-mask file)
    "biprop alpha one ulp": ("biprop", lambda t, m: (t, {**m, "method_state": _ulp(m["method_state"])})),
    "biprop alpha x2": ("biprop", entry_edit("method_state", lambda s: s["alpha"].__setitem__(0, s["alpha"][0] * 2))),
    "biprop alpha zero": ("biprop", entry_edit("method_state", setter("alpha", 1, value=0.0))),
    "biprop mask b alpha x2": ("biprop-multi", entry_edit("mask.b", lambda e: e["method_state"]["alpha"].__setitem__(
        0, e["method_state"]["alpha"][0] * 2))),
    "biprop mask b alpha one ulp": ("biprop-multi", entry_edit("mask.b", lambda e: e["method_state"]["alpha"]
                                                                   .__setitem__(0, float(np.nextafter(np.float32(
                                                                       e["method_state"]["alpha"][0]), np.float32(1)))))),
    "biprop mask b state removed": ("biprop-multi", entry_edit("mask.b", setter("method_state", delete=True))),
    # signed supermask
    "signs edited": ("signed", tensor_edit(_flip_bit("method.signs"))),
    "signs removed": ("signed", tensor_edit(_drop("method.signs"))),
    "inverted edited": ("signed", entry_edit("method_state", lambda s: s["inverted"].__setitem__(0, s["inverted"][0] + 1))),
    "inverted removed": ("signed", entry_edit("method_state", setter("inverted", delete=True))),
    "sign codec edited": ("signed", entry_edit("method_state", _swap_codec)),
    "sign codec removed": ("signed", entry_edit("method_state", setter("sign_codec", delete=True))),
    "method changed, signs remain": ("signed", _as_edge_popup),
    "method changed, signs and state remain": ("signed", lambda t, m: (t, {**m, "method": "edge-popup", "recipe": json.dumps(
        {**json.loads(m["recipe"]), "search": {**json.loads(m["recipe"])["search"], "method": "edge-popup"}})})),
    "mask b signs removed": ("signed-multi", tensor_edit(_drop("mask.b.method.signs"))),
    "mask b signs edited": ("signed-multi", tensor_edit(_flip_bit("mask.b.method.signs"))),
    "mask b inverted edited": ("signed-multi", entry_edit("mask.b", lambda e: e["method_state"]["inverted"].__setitem__(
        0, e["method_state"]["inverted"][0] + 1))),
    # per-mask tensors
    "mask b state tensor missing": ("edge-popup", lambda t, m: ({k: v for k, v in t.items()
                                                                 if k != _state_key(t, "mask.b.")}, m)),
    "mask b state tensor extra": ("edge-popup", tensor_edit(lambda t: t.__setitem__("mask.b.state.extra",
                                                                                    np.zeros(3, np.float32)))),
    "mask b state tensor of another shape": ("edge-popup", tensor_edit(lambda t: t.__setitem__(
        _state_key(t, "mask.b."), np.zeros(5, np.float32)))),
    "orphan mask.c.masks": ("edge-popup", tensor_edit(lambda t: t.__setitem__("mask.c.masks", t["masks"].copy()))),
    "orphan mask.zz state": ("edge-popup", tensor_edit(lambda t: t.__setitem__("mask.zz.state.x", np.zeros(2, np.float32)))),
    "mask tensor in a single-mask file": ("biprop", tensor_edit(lambda t: t.__setitem__("mask.b.masks", t["masks"].copy()))),
    "method_state on an edge-popup mask": ("edge-popup", entry_edit("mask.b", setter("method_state",
                                                                                     value={"alpha": [0.1, 0.1]}))),
    "method tensor on an edge-popup mask": ("edge-popup", tensor_edit(lambda t: t.__setitem__(
        "mask.b.method.signs", np.zeros(4, np.uint8)))),
    # per-mask entries, as strict as the first mask's
    "mask b seed a number": ("edge-popup", entry_edit("mask.b", setter("recipe", "seed", value=7))),
    "mask b seed 00": ("edge-popup", entry_edit("mask.b", setter("recipe", "seed", value="00"))),
    "mask b seed 07": ("edge-popup", entry_edit("mask.b", setter("recipe", "seed", value="07"))),
    "mask b seed another": ("edge-popup", entry_edit("mask.b", setter("recipe", "seed", value="8"))),
    "mask b data.shape differs": ("edge-popup", entry_edit("mask.b", setter("recipe", "data", "shape", value=[1, 8, 9]))),
    "mask b density vs kept": ("edge-popup", entry_edit("mask.b", setter("recipe", "search", "density", value=0.25))),
    "mask b test_acc 7": ("edge-popup", entry_edit("mask.b", setter("metrics", "test_acc", value=7))),
    "mask b metrics high": ("edge-popup", entry_edit("mask.b", setter("metrics", value="high"))),
    "mask b kept edited": ("edge-popup", entry_edit("mask.b", lambda e: e["kept"].__setitem__(0, e["kept"][0] + 1))),
    "mask b kept a float": ("edge-popup", entry_edit("mask.b", lambda e: e["kept"].__setitem__(0, e["kept"][0] + 0.5))),
    "mask b kept a string": ("edge-popup", entry_edit("mask.b", lambda e: e["kept"].__setitem__(0, str(e["kept"][0])))),
    "mask b codec unknown": ("edge-popup", entry_edit("mask.b", setter("mask_codec", value="zip"))),
    "mask b holds a shared entry": ("edge-popup", entry_edit("mask.b", setter("data", value={"shape": [1, 8, 9]}))),
    "mask b model differs": ("edge-popup", entry_edit("mask.b", setter("recipe", "model", "width", value=2.0))),
    "orphan mask.zz entry": ("edge-popup", lambda t, m: (t, {**m, "mask.zz": m["mask.b"]})),
    "mask_names swapped": ("edge-popup", lambda t, m: (t, {**m, "mask_names": json.dumps(["b", "a"])})),
    "mask_names swapped, entry renamed": ("edge-popup", lambda t, m: (t, {**{k: v for k, v in m.items() if k != "mask.b"},
                                                                          "mask_names": '["b","a"]', "mask.a": m["mask.b"]})),
    "mask_names in a version-2 file": ("biprop", lambda t, m: (t, {**m, "mask_names": '["default","x"]'})),
    "version 3 without mask_names": ("edge-popup", lambda t, m: (t, {k: v for k, v in m.items() if k != "mask_names"})),
}


def refused_by_both(path: Path, names: list[str]) -> list[str]:
    """The one-line refusals of load (for every mask name) and inspect; fails if either accepts."""
    lines = []
    for name in names:
        with pytest.raises(PopcliError) as info:
            popcli.load(path, mask=name)
        lines.append(str(info.value))
    try:
        report = inspect(path)
    except PopcliError as err:
        lines.append(str(err))
    else:
        assert not report["verified"], "inspect says verified, load refuses"
        lines += report["problems"]
    assert all("\n" not in line for line in lines), lines
    return lines


@pytest.mark.parametrize("case", list(CASES))
def test_every_listed_case_is_refused_by_load_and_inspect(files, tmp_path, case):
    source, edit = CASES[case]
    tensors, meta = parts(files[source])
    names = [None, "a", "b"] if "mask_names" in meta else [None]
    path = seal(tmp_path / "hostile.safetensors", *edit(tensors, meta))
    refused_by_both(path, names)


def test_untouched_files_verify_in_both_and_each_mask_is_its_own(files):
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for method in ("edge-popup", "biprop-multi", "signed-multi"):
        path, models = files[method], files["models"][method]
        report = inspect(path)
        assert report["verified"] and report["structure_checked"] and [m["name"] for m in report["masks"]] == ["a", "b"]
        with torch.no_grad():
            for name, model in models.items():
                assert torch.equal(popcli.load(path, mask=name, mode="search")(x), model(x)), (method, name)
            assert not torch.equal(models["a"](x), models["b"](x))
    for key in ("signed", "biprop"):
        assert inspect(files[key])["verified"]
        popcli.load(files[key])


def test_cli_inspect_refuses_in_one_line_or_exits_1(files, tmp_path):
    from popcli.cli import get_app

    app = get_app()
    for case in ("biprop alpha one ulp", "mask b metrics high", "orphan mask.c.masks", "mask_names swapped"):
        source, edit = CASES[case]
        path = seal(tmp_path / "h.safetensors", *edit(*parts(files[source])))
        result = CliRunner().invoke(app, ["inspect", str(path)])
        assert result.exit_code == 1 and not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit), (case, result.exception)
        assert "Traceback" not in result.output and ("error: " in result.stderr or "problem: " in result.stderr), case
