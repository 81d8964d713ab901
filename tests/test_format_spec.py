"""docs/FORMAT.md read literally (issue 20, section 4): each statement an independent reader relies
on is checked here against the code, most by recomputing it from the page's own words (numpy's
Philox and float32 arithmetic, not popcli's functions) or by parsing the page's tables."""

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import popcli
from popcli import codecs, rng
from popcli.artifact import read as read_artifact
from popcli.artifact import schema
from popcli.data.facts import FACTS
from popcli.errors import ArtifactError
from popcli.models import build_model, masked_layers
from popcli.recipe import ModelConfig, Recipe, SearchConfig, from_dict
from popcli.recipe import load as load_recipe
from popcli.recipe.keys import describe_keys

FORMAT = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()
F32 = np.float32


def section(title: str) -> str:
    """The text of the ``### title`` section (up to the next heading)."""
    start = FORMAT.index(f"### {title}")
    end = re.compile(r"^##", re.M).search(FORMAT, start + 4)
    return FORMAT[start:end.start() if end else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]
    return rows[1:]  # without the header


def stream_u32(seed: int, name: str, n: int) -> np.ndarray:
    """FORMAT.md "Bits": numpy's Philox keyed (seed, first 8 bytes of SHA-256(name) little-endian),
    each 64-bit word giving its low then its high 32 bits."""
    k1 = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    words = np.random.Philox(key=np.array([seed, k1], dtype=np.uint64), counter=0).random_raw((n + 1) // 2)
    return words.astype("<u8").view("<u4")[:n]


def centered(u32: np.ndarray) -> np.ndarray:
    """q = (f32(x >> 9) - 4194303.5) * 2^-23, every step a float32 operation."""
    return ((u32 >> 9).astype(F32) - F32(4194303.5)) * F32(2.0 ** -23)


# --------------------------------------------------------------------------- the weight generator


def test_scale_table_lists_every_init_and_its_formula_is_the_code():
    rows = {name.strip("`"): formula for cells in table_rows(section("Scale")) for name, formula in [cells]
            for name in cells[0].split(", ")}
    assert set(rows) == set(rng.INITS), "every init has a row (elus_signed_constant was missing)"
    shape, density = (16, 12, 3, 3), 0.3
    fan_in, fan_out = rng.fans(shape)
    for init, formula in rows.items():
        expression = formula.split("`")[1]  # `sqrt(3 / fan_in)` (the bound) -> sqrt(3 / fan_in)
        value = eval(expression, {"sqrt": math.sqrt, "fan_in": fan_in, "fan_out": fan_out, "density": density})
        assert float(F32(value)) == rng.weight_scale(init, shape, density), init


def test_elus_weights_are_signed_constants_of_its_scale():
    weight = rng.generate_weight(5, "conv1", (4, 3, 3, 3), "elus_signed_constant").numpy()
    assert set(np.abs(weight).ravel()) == {F32(math.sqrt(3 / 27))}


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 5)
        self.token = nn.Parameter(torch.zeros(2, 3))

    def forward(self, x):
        return self.fc(x.flatten(1)) + self.token.sum()


def test_frozen_parameters_follow_the_written_spec():
    """"Other parameters": stream param:<name>, a bias U(-b, b) with b from its layer's fan_in, others N(0, 0.02^2)."""
    seed = 11
    model = popcli.subnetify(TokenNet(), 0.5, seed=seed, biases="frozen", params="frozen", allow_unhandled=True)
    assert sorted(model.popcli_report.frozen) == ["fc.bias", "token"]
    q = centered(stream_u32(seed, "param:fc.bias", 5))
    bound = F32(1.0 / math.sqrt(12))  # fan_in of fc's weight [5, 12], in float64, then float32
    assert np.array_equal(model.fc.bias.detach().numpy(), (q * F32(2.0)) * bound)
    z = rng.normal_from_centered(centered(stream_u32(seed, "param:token", 6)))  # the normal transform (test_rng)
    assert np.array_equal(model.token.detach().numpy().ravel(), z * F32(0.02))


def test_rans_with_layers_that_keep_nothing():
    text = section("Mask bits and codecs")
    written = re.search(r"the 4 bytes `([0-9a-f ]+)`", text).group(1)
    assert codecs.encode(np.zeros(0, bool), [0], "rans").tobytes() == bytes.fromhex(written.replace(" ", ""))
    assert codecs.frequency_of_one(0, 0) == 1 and codecs.frequency_of_one(0, 7) == 1  # n_l = 0; kept_l = 0
    bits = np.array([0, 0, 0, 1, 0, 1, 1], dtype=bool)  # layers of 0, 3 (keeping nothing) and 4 symbols
    data = codecs.encode(bits, [0, 3, 4], "rans")
    assert np.array_equal(codecs.decode(data, [0, 3, 4], [0, 0, 3], "rans")[0], bits)


# --------------------------------------------------------------------------- what a reader needs


def test_recipe_key_table_is_the_schema():
    rows = {cells[0].strip("`"): cells for cells in table_rows(section("Recipe keys"))}
    schema_rows = {row["key"]: row for row in describe_keys(Recipe())}
    assert list(rows) == list(schema_rows)
    for key, row in schema_rows.items():
        assert json.loads(rows[key][2].strip("`")) == row["default"], key
        for choice in row["choices"] or []:
            assert f"`{choice}`" in rows[key][1], key


EXAMPLE = re.compile(r"^- (\w+)(?:, width ([\d.]+))?(?:, hidden \[([\d, ]+)\])?, input \[(\d+), (\d+), (\d+)\], "
                     r"K = (\d+): (.+)$", re.M)


def test_architecture_examples_are_what_popcli_builds():
    examples = EXAMPLE.findall(section("The model a recipe names"))
    assert {e[0] for e in examples} >= {"fc", "conv2", "conv4", "conv6", "resnet18"}
    for arch, width, hidden, c, h, _, k, layers in examples:
        sizes = [int(v) for v in hidden.split(",")] if hidden else [1]
        cfg = ModelConfig(arch=arch, width=float(width or 1), hidden=sizes)
        model = build_model(cfg, SearchConfig(), in_channels=int(c), image_size=int(h), num_classes=int(k), seed=0)
        built = ", ".join(f"{name} {list(layer.weight.shape)}" for name, layer in masked_layers(model))
        assert built == layers, arch


@pytest.mark.parametrize("arch", ["fc", "conv4", "resnet18"])
def test_batch_norm_is_non_affine_with_the_documented_eps(arch):
    assert "`eps = 1e-5`" in section("The model a recipe names")
    cfg = ModelConfig(arch=arch, width=0.25, hidden=[8], batchnorm=True)
    model = build_model(cfg, SearchConfig(), in_channels=3, image_size=32, num_classes=10, seed=0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 and not m.affine for m in norms)


def test_dataset_statistics_table_is_data_facts():
    rows = {cells[0].strip("`"): cells for cells in table_rows(section("Dataset statistics"))}
    assert set(rows) == set(FACTS)
    for name, facts in FACTS.items():
        assert [float(v) for v in rows[name][1].split(",")] == list(facts.mean), name
        assert [float(v) for v in rows[name][2].split(",")] == list(facts.std), name


def test_permutation_as_written_is_the_recorded_pixel_order(tmp_path):
    from popcli.artifact import preprocess
    from popcli.data.load import permutation

    seed, task = 9, 3
    order = np.argsort(stream_u32(seed, f"permute/{task}", 64), kind="stable")  # the page's recipe, numpy only
    assert np.array_equal(order, permutation(seed, task, 64).numpy())
    recipe = from_dict({"seed": seed, "data": {"dataset": "synthetic", "shape": [2, 8, 8],
                                                             "permute_task": task}})
    config = preprocess.data_config(recipe, {"shape": [2, 8, 8], "num_classes": 10})
    assert config["permute_task"] == task and config["pixel_order"] == order.tolist()


def test_metrics_section_names_every_checked_key_and_the_losses():
    text = section("Metrics")
    for key in schema._METRIC_RANGES:
        assert f"`{key}`" in text, key
    losses = re.search(r"Losses \(these two only[^)]*\): `(\w+)`, .*?and `(\w+)`", text, re.S).groups()
    assert set(losses) == {k for k in schema._METRIC_RANGES if "loss" in k}


def test_a_bf16_tensor_is_refused_naming_it(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bf16.safetensors"
    save_file({"state.x": torch.ones(2, dtype=torch.bfloat16)}, str(path),
              metadata={"format": "popcli-artifact", "format_version": "2", "generator": rng.GENERATOR_NAME,
                        "generator_version": str(rng.GENERATOR_VERSION)})
    assert "BF16 and the F8 types have no dtype string here, and a reader refuses a file holding one" in FORMAT
    with pytest.raises(ArtifactError, match="'state.x' is BF16"):
        read_artifact(path)


def test_biprop_alpha_is_written_as_the_widened_float32(tmp_path):
    from popcli.artifact.container import read_raw
    from popcli.engine.loop import search
    from popcli.export import export

    recipe = load_recipe(None, ["data.dataset=synthetic", "data.shape=[1,6,6]", "data.num_classes=3",
                                       "data.train_size=48", "data.test_size=24", "data.batch_size=16",
                                       "model.hidden=[8]", "model.batchnorm=false", "search.method=biprop",
                                       "search.epochs=1", "search.threads=1", "search.device=cpu"])
    search(recipe, tmp_path / "run")
    export(tmp_path / "run", tmp_path / "b.safetensors")
    text = read_raw(tmp_path / "b.safetensors")[0]["method_state"]
    alphas = json.loads(text)["alpha"]
    assert alphas and all(float(F32(a)) == a and repr(a) in text for a in alphas)  # exact double of a float32
    assert "0.05000000074505806" in section("Method state")


def test_subspace_projection_as_written(tmp_path):
    """FORMAT.md "Method state", subspace, steps 1-5 recomputed from the page's words with numpy's
    Philox and float32 numpy arithmetic: the same bits as popcli's w0 + P z and its weights_sha256."""
    from popcli.methods import subspace

    r = from_dict({"seed": 9, "model": {"arch": "fc", "hidden": [12], "batchnorm": False, "init": "kaiming_normal"},
                   "data": {"dataset": "synthetic", "shape": [1, 4, 4], "num_classes": 3},
                   "search": {"method": "subspace", "density": 1.0, "subspace_dim": 5}})
    model = build_model(r.model, r.search, in_channels=1, image_size=4, num_classes=3, seed=9)
    z = np.array([0.5, -1.25, 2.0, 0.125, -0.75], dtype=F32)
    with torch.no_grad():
        model.popcli_subspace_z.copy_(torch.from_numpy(z))
    assert "subspace/fastfood-v1/perm" in section("Method state")
    shapes = [tuple(layer.weight.shape) for _, layer in masked_layers(model)]
    total, n = sum(math.prod(s) for s in shapes), 8
    blocks = -(-total // n)

    def words(name, count):
        k1 = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return np.random.Philox(key=np.array([9, k1], dtype=np.uint64), counter=0).random_raw(count).astype("<u8")

    k = blocks * n
    bits = np.unpackbits(words("subspace/fastfood-v1/B", (k + 63) // 64).view(np.uint8), bitorder="little")[:k]
    signs = np.where(bits == 1, F32(1), F32(-1)).reshape(blocks, n)
    perm = np.argsort(words("subspace/fastfood-v1/perm", k).reshape(blocks, n), axis=1, kind="stable")
    gauss = rng.normal_from_centered(centered(stream_u32(9, "subspace/fastfood-v1/G", k))).reshape(blocks, n)
    g = rng.normal_from_centered(centered(stream_u32(9, "subspace/fastfood-v1/S", k))).astype(np.float64)
    c = 2.0 / (9 * n)
    t = np.maximum(0.0, 1.0 - c + g * math.sqrt(c))
    chi = np.sqrt(n * t * t * t).reshape(blocks, n)
    out = []
    for b in range(blocks):
        sumsq = 0.0
        for v in gauss[b].astype(np.float64):
            sumsq += v * v
        scale = (chi[b] / (math.sqrt(sumsq) * math.sqrt(n) * math.sqrt(total))).astype(F32)
        u = signs[b] * np.concatenate([z, np.zeros(n - 5, F32)])
        for stage in range(2):
            h = 1
            while h < n:
                for j in range(n):
                    if j % (2 * h) < h:
                        u[j], u[j + h] = u[j] + u[j + h], u[j] - u[j + h]
                h *= 2
            if stage == 0:
                u = gauss[b] * u[perm[b]]
        out.append(scale * u)
    delta = np.concatenate(out)[:total]
    offset = 0
    effective = []
    for (name, layer), shape in zip(masked_layers(model), shapes):
        w0 = rng.generate_weight(9, name, shape, "kaiming_normal").numpy().reshape(-1)
        effective.append(w0 + delta[offset:offset + w0.size])
        offset += w0.size
        assert np.array_equal(layer.effective_weight().detach().numpy().reshape(-1), effective[-1]), name
    digest = hashlib.sha256(b"".join(w.astype("<f4").tobytes() for w in effective)).hexdigest()
    path = tmp_path / "s.safetensors"
    popcli.save(model, path, recipe=r, data_info={"shape": [1, 4, 4], "num_classes": 3})
    assert json.loads(read_artifact(path).metadata["method_state"])["weights_sha256"] == digest
