"""The subspace method (popcli.methods.subspace): w = w0 + P z with a Fastfood P from the seed.

The projection against an explicitly materialised P built from its definition, its gradient
(gradcheck in float64), its determinism and golden bits; the recipe keys and refusals; a real
search written, verified and loaded back to identical logits, float32 and float16 z, ONNX parity;
and the verification refusing a wrong-length z, a NaN in z, a missing z, another projection.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import popcli
from popcli import recipe as recipes
from popcli import rng
from popcli.artifact import inspect
from popcli.errors import ArtifactError, RecipeError
from popcli.methods import subspace
from popcli.models import masked_layers

from artifact_fuzz import parts, seal


def hadamard(n: int) -> np.ndarray:
    """Sylvester's H_n (unnormalised, entries +-1), float64."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def explicit_matrix(seed: int, total: int, dim: int) -> np.ndarray:
    """P (float64 [D, d]) from the definition in docs/FORMAT.md, matrices formed explicitly."""
    n = subspace.block_size(dim)
    blocks = -(-total // n)
    signs, perm, gauss, chi = rng.fastfood_parts(seed, blocks, n)
    h = hadamard(n)
    rows = []
    for b in range(blocks):
        pi = np.zeros((n, n))
        pi[np.arange(n), perm[b]] = 1.0  # (Pi u)_i = u_{perm[i]}
        norm = np.sqrt(np.sum(gauss[b].astype(np.float64) ** 2))
        scale = (chi[b] / (norm * np.sqrt(n) * np.sqrt(total))).astype(np.float32)  # R_b / sqrt(D), float32
        v = np.diag(scale.astype(np.float64)) @ h @ np.diag(gauss[b].astype(np.float64)) @ pi @ h @ np.diag(signs[b].astype(np.float64))
        rows.append(v)
    return np.concatenate(rows)[:total, :dim]


def test_fwht_is_sylvesters_hadamard_exactly():
    for n in (1, 2, 8, 64):
        assert torch.equal(subspace.fwht(torch.eye(n, dtype=torch.float64)), torch.from_numpy(hadamard(n)))
    with pytest.raises(ValueError, match="power-of-two"):
        subspace.fwht(torch.zeros(6))


@pytest.mark.parametrize("total,dim", [(50, 5), (37, 8), (300, 20), (7, 3)])
def test_projection_matches_the_materialised_matrix(total, dim):
    """P z (float32, never formed) = the explicit float64 product to float32 rounding: every entry
    within 1e-5 of the largest |(P z)_i| (the float32 sum of 2 x log2(n) rounded steps)."""
    projection = subspace.Fastfood(11, total, dim)
    p = explicit_matrix(11, total, dim)
    z = torch.randn(dim, generator=torch.Generator().manual_seed(3))
    expected = p @ z.double().numpy()
    found = projection(z)
    assert found.dtype == torch.float32 and found.shape == (total,)
    assert np.abs(found.double().numpy() - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.abs(projection.matrix().double().numpy() - p).max() <= 1e-5 * np.abs(p).max()
    assert np.allclose(projection(z.double()).numpy(), expected, rtol=0, atol=1e-9)  # float64: the same math


def test_projection_columns_have_unit_norm_in_expectation():
    p = subspace.Fastfood(0, 20000, 40).matrix()
    norms = (p.double() ** 2).sum(0)
    assert abs(float(norms.mean()) - 1.0) < 0.05 and float(norms.std()) < 0.1


def test_gradient_wrt_z_is_p_transpose(one_thread):
    projection = subspace.Fastfood(5, 13, 5)
    z = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(projection, (z,))
    up = torch.randn(13, dtype=torch.float64)
    (grad,) = torch.autograd.grad(projection(z), z, up)
    assert torch.allclose(grad, torch.from_numpy(explicit_matrix(5, 13, 5)).T @ up, rtol=0, atol=1e-12)


def test_projection_is_determined_by_the_seed_and_pinned():
    z = torch.linspace(-2, 2, 37)
    a, b, c = (subspace.Fastfood(seed, 1000, 37)(z) for seed in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    digest = hashlib.sha256(a.numpy().astype("<f4").tobytes()).hexdigest()
    assert digest == GOLDEN_P_Z  # the same bits on every machine (docs/FORMAT.md, "Subspace")
    signs, perm, gauss, chi = rng.fastfood_parts(0, 2, 8)
    assert signs.tolist()[0][:4] == GOLDEN_SIGNS and perm[0].tolist() == GOLDEN_PERM


GOLDEN_P_Z = "190c1f15e5646df478648d60b18f6686fda159aae2e5398cd67231773479f9ec"  # pinned 2026-12-05
GOLDEN_SIGNS = [-1.0, -1.0, 1.0, -1.0]
GOLDEN_PERM = [1, 4, 7, 3, 6, 2, 5, 0]


# --------------------------------------------------------------------------- recipe


def test_recipe_keys_and_refusals():
    r = recipes.load(None, ["search.method=subspace", "search.density=1.0", "search.subspace_dim=64"])
    assert (r.search.optimizer, r.search.lr, r.search.weight_decay, r.search.subspace_dim) == ("adam", 0.3, 0.0, 64)
    with pytest.raises(RecipeError, match=r"search.density.*search.density=1.0") as err:
        recipes.load(None, ["search.method=subspace", "search.density=0.5"])
    assert "\n" not in str(err.value)
    with pytest.raises(RecipeError, match="search.global_topk"):
        recipes.load(None, ["search.method=subspace", "search.density=1.0", "search.global_topk=true"])
    with pytest.raises(RecipeError, match="search.subspace_dim"):
        recipes.load(None, ["search.method=subspace", "search.density=1.0", "search.subspace_dim=0"])
    with pytest.raises(RecipeError, match="search.subspace_dtype"):
        recipes.load(None, ["search.subspace_dtype=bfloat16"])
    from popcli.recipe.keys import describe_keys

    rows = {row["key"]: row for row in describe_keys(r)}
    for dim, lr in ((500, 0.3), (1000, 0.3), (4000, 0.075)):  # Adam's lr: min(0.3, 300 / d) unless set
        assert recipes.load(None, ["search.method=subspace", "search.density=1.0", f"search.subspace_dim={dim}"]
                            ).search.lr == lr
    assert recipes.load(None, ["search.method=subspace", "search.density=1.0", "search.subspace_dim=4000",
                               "search.lr=0.5"]).search.lr == 0.5
    assert rows["search.subspace_dim"]["value"] == 64 and "w0 + P z" in rows["search.subspace_dim"]["help"]


# --------------------------------------------------------------------------- search, artifact, load

SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=128", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "model.batchnorm=false",
         "model.init=kaiming_normal", "search.method=subspace", "search.density=1.0", "search.subspace_dim=40",
         "search.epochs=2"]


def _run(tmp_path: Path, *extra: str) -> Path:
    from popcli.engine.loop import search

    search(recipes.load(None, [*SYNTH, *extra]), tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_search_export_load_identical_logits(tmp_path, one_thread, dtype):
    from popcli.export import export, model_from_checkpoint

    run_dir = _run(tmp_path, f"search.subspace_dtype={dtype}")
    out = tmp_path / "a.safetensors"
    report = export(run_dir, out, onnx=tmp_path / "a.onnx" if dtype == "float32" else None, parity_samples=64)
    assert report["verified"] and report["method"] == "subspace"
    searched, recipe, _, _ = model_from_checkpoint(run_dir / "last.pt")
    searched.eval()
    z = searched.popcli_subspace_z.detach()
    assert z.abs().sum() > 0  # the search moved z (and only z: the weights are the seed's)
    for name, layer in masked_layers(searched):
        assert torch.equal(layer.weight, rng.generate_weight(recipe.seed, name, layer.weight.shape, "kaiming_normal"))
    tensors, meta = parts(out)
    state = json.loads(meta["method_state"])
    assert state["projection"] == "fastfood-v1" and state["dim"] == 40 and state["dtype"] == dtype
    assert tensors["subspace.z"].dtype == np.dtype(dtype) and tensors["subspace.z"].shape == (40,)
    assert torch.equal(torch.from_numpy(tensors["subspace.z"].astype(np.float32)), subspace.used_z(z, dtype))
    assert not any(k.startswith("state.") for k in tensors)  # no weights stored: seed + z
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = searched(x)
        for mode in ("infer", "search"):
            assert torch.equal(popcli.load(out, mode=mode)(x), expected), mode
    if dtype == "float32":
        parity = report["onnx"]["parity"]  # ONNX Runtime on the baked w0 + P z
        assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
        onnx_logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(onnx_logits - expected.numpy()).max() <= 1e-4
    report = inspect(out)
    assert report["verified"] and report["subspace"] == {"projection": "fastfood-v1", "dim": 40, "dtype": dtype,
                                                         "z_bytes": 40 * (4 if dtype == "float32" else 2)}
    from popcli.cli.tables import inspect_tables

    assert any("projection fastfood-v1" in str(row) for row in inspect_tables(report)[0].columns[1]._cells)


def test_an_interrupted_search_resumes_exactly(tmp_path, one_thread):
    """z and Adam's state are in last.pt: a stopped, resumed run ends where an uninterrupted one does."""
    from popcli.engine.loop import search
    from popcli.errors import SearchInterrupted
    from popcli.storage.checkpoint import load_checkpoint

    recipe = recipes.load(None, SYNTH)
    search(recipe, tmp_path / "straight")
    steps = []
    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "resumed", should_stop=lambda: len(steps) >= 3,
               on_event=lambda kind, info: steps.append(1) if kind == "step" else None)
    search(recipe, tmp_path / "resumed", resume=True)
    a, b = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("straight", "resumed"))
    assert subspace.Z_PARAM in a and a[subspace.Z_PARAM].abs().sum() > 0
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A subspace artifact (fc 16-32-4, d = 24) with nonzero z, written by popcli.save."""
    from popcli.models import build_model

    tmp = tmp_path_factory.mktemp("subspace")
    r = recipes.load(None, [*SYNTH, "model.hidden=[16]", "search.subspace_dim=24"])
    model = build_model(r.model, r.search, in_channels=1, image_size=8, num_classes=4, seed=r.seed)
    with torch.no_grad():
        model.popcli_subspace_z.copy_(torch.randn(24, generator=torch.Generator().manual_seed(1)))
    path = tmp / "s.safetensors"
    popcli.save(model, path, recipe=r, data_info={"shape": [1, 8, 8], "num_classes": 4})
    return path


@pytest.mark.parametrize("change,fragment", [
    (lambda t, m: ({**t, "subspace.z": t["subspace.z"][:-1]}, m), "expected float32 \\[24\\]"),
    (lambda t, m: ({**t, "subspace.z": np.where(np.arange(24) == 3, np.nan, t["subspace.z"]).astype(np.float32)}, m),
     "NaN"),
    (lambda t, m: ({k: v for k, v in t.items() if k != "subspace.z"}, m), "no 'subspace.z' tensor"),
    (lambda t, m: ({**t, "subspace.z": t["subspace.z"].astype(np.float64)}, m), "float64"),
    (lambda t, m: ({**t, "subspace.z": t["subspace.z"] * np.float32(1.5)}, m), "do not match the stored checksum"),
    (lambda t, m: (t, {**m, "method_state": m["method_state"].replace("fastfood-v1", "fastfood-v9")}), "fastfood-v9"),
    (lambda t, m: (t, {**m, "method_state": m["method_state"].replace('"dim":24', '"dim":25')}), "dim"),
    (lambda t, m: (t, {k: v for k, v in m.items() if k != "method_state"}), "method_state"),
])
def test_verification_refuses_a_bad_z_in_one_line(saved, tmp_path, change, fragment):
    tensors, meta = parts(saved)
    bad = seal(tmp_path / "bad.safetensors", *change(dict(tensors), dict(meta)))
    with pytest.raises(ArtifactError, match=fragment) as err:
        popcli.load(bad)
    assert "\n" not in str(err.value)
    try:
        report = inspect(bad)
    except ArtifactError as refused:  # refused while reading: the same line as load's
        assert str(refused) == str(err.value)
    else:  # read, then verified: the same verification refuses it
        assert not report["verified"] and report["problems"][0] == str(err.value)


def test_saved_file_is_seed_plus_z(saved):
    tensors, _ = parts(saved)
    assert sorted(tensors) == ["masks", "subspace.z"]
    assert tensors["subspace.z"].nbytes == 4 * 24


def test_library_api_create_model_search_save_load(tmp_path, one_thread):
    """popcli.create_model(method="subspace", subspace_dim=...) -> popcli.search on the user's data ->
    popcli.save -> popcli.load: identical logits; mode="packed" is refused (w0 + P z is not +-c)."""
    from torch.utils.data import TensorDataset

    model = popcli.create_model("fc", method="subspace", density=1.0, subspace_dim=30, num_classes=2,
                                input_shape=(1, 8, 8), hidden=[16], init="signed_constant")
    assert model.popcli_subspace_z.shape == (30,)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, 8, generator=gen)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    popcli.search(model, TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), run_dir=tmp_path / "run",
                  batch_size=16, epochs=1, threads=1)
    assert model.popcli_subspace_z.abs().sum() > 0
    with pytest.raises(Exception, match="subspace_dim"):  # the model's own structure wins
        popcli.search(model, TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), run_dir=tmp_path / "r2",
                      batch_size=16, epochs=1, subspace_dim=31)
    popcli.save(model, tmp_path / "m.safetensors")
    model.eval()
    with torch.no_grad():
        assert torch.equal(popcli.load(tmp_path / "m.safetensors")(x), model(x))
    with pytest.raises(ArtifactError, match="mode='infer'"):
        popcli.load(tmp_path / "m.safetensors", mode="packed")
