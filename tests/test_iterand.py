"""IteRand (search.iterand_every_steps / search.iterand_rate): pruned weights re-drawn from the
seed's streams during a search, a resumed run re-drawing exactly the same, and artifacts that
store which draw each kept weight holds so that popcli.load regenerates the searched model."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import popcli
from popcli import codecs, kernels, rng
from popcli import recipe as recipes
from popcli.artifact import inspect, read
from popcli.engine.loop import search
from popcli.errors import ArtifactError, PopcliError, RecipeError, SearchInterrupted
from popcli.export.api import export
from popcli.methods import iterand
from popcli.models import build_model, masked_layers
from popcli.storage.checkpoint import load_checkpoint

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "search.density=0.2",
         "search.device=cpu", "search.threads=1", "seed=3"]


def make(*extra):
    return recipes.load(None, [*SYNTH, *extra])


# --------------------------------------------------------------------------- the generator


def test_draw_zero_is_the_weight_and_draw_j_is_its_own_stream(monkeypatch):
    shape = (6, 10)
    base = rng.generate_weight(4, "fc1", shape, "kaiming_normal")
    assert rng.redraw_name("fc1", 0) == "fc1" and rng.redraw_name("fc1", 3) == "fc1#redraw=3"
    assert torch.equal(rng.redrawn_weight(4, "fc1", shape, "kaiming_normal", 1.0, None), base)
    assert torch.equal(rng.redrawn_weight(4, "fc1", shape, "kaiming_normal", 1.0, torch.zeros(shape, dtype=torch.int16)), base)
    draws = torch.arange(60).remainder(3).reshape(shape)
    mixed = rng.redrawn_weight(4, "fc1", shape, "kaiming_normal", 1.0, draws)
    for j in range(3):
        stream = rng.generate_weight(4, f"fc1#redraw={j}" if j else "fc1", shape, "kaiming_normal")
        assert torch.equal(mixed[draws == j], stream[draws == j])
    assert not torch.equal(mixed, base)
    # pinned: draw 2 of this layer (docs/FORMAT.md, "IteRand draws"), the same bits on every machine
    two = rng.generate_weight(4, "fc1#redraw=2", shape, "kaiming_normal").numpy().astype("<f4").tobytes()
    assert hashlib.sha256(two).hexdigest() == GOLDEN_DRAW2
    monkeypatch.setattr(kernels, "library", lambda: None)  # numpy, the reference: the same bits
    two = rng.generate_weight(4, "fc1#redraw=2", shape, "kaiming_normal").numpy().astype("<f4").tobytes()
    assert hashlib.sha256(two).hexdigest() == GOLDEN_DRAW2


GOLDEN_DRAW2 = "b6687dd7514afcc6f890a8d8c3ed7b326fa77cbffbd3649aa91ab994160e47c3"


def test_candidates_are_bernoulli_rate_from_the_round_stream():
    a = rng.redraw_candidates(1, "conv", 7, 100000, 0.1)
    assert np.array_equal(a, rng.redraw_candidates(1, "conv", 7, 100000, 0.1))  # a function of (seed, layer, round)
    assert not np.array_equal(a, rng.redraw_candidates(1, "conv", 8, 100000, 0.1))
    assert abs(a.mean() - 0.1) < 0.005
    u = rng.uint32_stream(1, "conv#iterand-round=7", 100000).astype(np.uint64)
    assert np.array_equal(a, u < np.uint64(rng.rate_threshold(0.1)))  # as docs/FORMAT.md writes it
    assert rng.redraw_candidates(1, "conv", 1, 1000, 1.0).all() and rng.rate_threshold(0.5) == 2**31


def test_count_codec_round_trips_and_refuses_what_does_not_decode():
    gen = np.random.default_rng(0)
    counts = [gen.geometric(0.4, 3000) * (gen.random(3000) < 0.15), np.zeros(40, dtype=np.int64),
              gen.integers(0, 4, 9), np.zeros(0, dtype=np.int64)]
    for codec in ("packbits", "rans", "auto"):
        chosen, data, redrawn, total = codecs.encode_counts(counts, codec)
        back = codecs.decode_counts(data, [c.size for c in counts], redrawn, total, chosen)
        assert all(np.array_equal(a, b) for a, b in zip(counts, back))
    with pytest.raises(codecs.CodecError):
        codecs.decode_counts(data, [c.size for c in counts], [r + 1 for r in redrawn], total, chosen)
    with pytest.raises(codecs.CodecError):
        codecs.decode_counts(data[:-2], [c.size for c in counts], redrawn, total, chosen)


# --------------------------------------------------------------------------- recipe keys


@pytest.mark.parametrize("overrides, message", [
    (["search.iterand_every_steps=-1"], r"search.iterand_every_steps: -1 is out of range"),
    (["search.iterand_every_steps=1.5"], r"search.iterand_every_steps: expected int"),
    (["search.iterand_rate=1.5"], r"search.iterand_rate: 1.5 is out of range \[0.0, 1.0\]"),
    (["search.iterand_every_steps=10", "search.iterand_rate=0"], r"search.iterand_rate: 0 re-draws nothing"),
    (["search.iterand_every_steps=10", "search.method=biprop"], r"search.iterand_every_steps: IteRand applies to "
                                                                 r"edge-popup, not biprop"),
])
def test_recipe_keys_refuse_bad_values_naming_the_key(overrides, message):
    with pytest.raises(RecipeError, match=message) as err:
        recipes.load(None, overrides)
    assert "\n" not in str(err.value)


def test_recipe_show_documents_the_keys():
    from popcli.recipe.keys import describe_keys

    rows = {row["key"]: row for row in describe_keys(recipes.load(None, []))}
    assert rows["search.iterand_every_steps"]["default"] == 0 and "IteRand" in rows["search.iterand_every_steps"]["help"]
    assert rows["search.iterand_rate"]["range"] == [0.0, 1.0] and "probability" in rows["search.iterand_rate"]["help"]


def test_too_many_rounds_for_a_counter_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="search.iterand_every_steps: 1 gives 40000 redraw rounds"):
        search(make("search.epochs=0", "search.max_steps=40000", "search.iterand_every_steps=1"), tmp_path / "run")


# --------------------------------------------------------------------------- the mechanism


def test_a_round_redraws_only_pruned_weights_at_rate_r():
    recipe = make("search.iterand_every_steps=2", "search.iterand_rate=0.5", "model.init=kaiming_normal")  # floats:
    # a re-drawn weight differs (a signed constant keeps its value half the time)
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=3)
    controller = iterand.enable(model, recipe.search, 3, recipe.model.init, 0.2)
    before = {name: (layer.weight.clone(), layer.mask().clone()) for name, layer in masked_layers(model)}
    assert not controller.after_step(model, 1)  # step 1 is no multiple of K = 2
    assert controller.after_step(model, 2) and controller.rounds == 1
    for name, layer in masked_layers(model):
        weight, mask = before[name]
        changed = layer.weight != weight
        draws = iterand.draws_of(layer)
        assert not changed[mask].any() and torch.equal(changed, draws == 1)  # kept weights never move
        chosen = ~mask.reshape(-1).numpy() & rng.redraw_candidates(3, name, 1, mask.numel(), 0.5)
        assert np.array_equal((draws == 1).reshape(-1).numpy(), chosen)
        fresh = rng.generate_weight(3, f"{name}#redraw=1", weight.shape, recipe.model.init, 0.2)
        assert torch.equal(layer.weight[draws == 1], fresh[draws == 1])


def test_search_redraws_and_still_verifies_its_weights(tmp_path):
    summary = search(make("search.epochs=2", "search.iterand_every_steps=3", "search.iterand_rate=0.5"), tmp_path / "r")
    assert summary["weights_verified"] is True
    state = load_checkpoint(tmp_path / "r" / "last.pt")
    assert state["iterand"]["rounds"] == summary["steps"] // 3
    draws = state["iterand"]["draws"]
    assert all(d.dtype == torch.int16 for d in draws.values()) and max(int(d.max()) for d in draws.values()) > 1
    off = search(make("search.epochs=2"), tmp_path / "off")
    assert "iterand" not in load_checkpoint(tmp_path / "off" / "last.pt") and off["weights_verified"] is True


@pytest.mark.parametrize("stop_at", [4, 7])  # just after a round, and between rounds
def test_resume_redraws_exactly_as_an_uninterrupted_run(tmp_path, stop_at):
    recipe = make("search.epochs=2", "search.iterand_every_steps=4", "search.iterand_rate=0.3")
    search(recipe, tmp_path / "straight")
    steps = []
    with pytest.raises(SearchInterrupted):
        search(recipe, tmp_path / "resumed", on_event=lambda kind, info: steps.append(1) if kind == "step" else None,
               should_stop=lambda: len(steps) >= stop_at)
    cut = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert cut["iterand"]["rounds"] == stop_at // 4
    search(recipe, tmp_path / "resumed", resume=True)
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "resumed"))
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["iterand"]["rounds"] == b["iterand"]["rounds"]
    for name in a["iterand"]["draws"]:
        assert torch.equal(a["iterand"]["draws"][name], b["iterand"]["draws"][name]), name


def test_checkpoint_state_round_trips_the_draw_counts():
    recipe = make("search.iterand_every_steps=1", "search.iterand_rate=0.5")
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=3)
    iterand.enable(model, recipe.search, 3, recipe.model.init, 0.2).after_step(model, 1)
    saved = iterand.state(model)
    other = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=3)
    iterand.enable(other, recipe.search, 3, recipe.model.init, 0.2)
    iterand.restore(other, saved)
    assert other._popcli_iterand.rounds == 1
    for (_, a), (_, b) in zip(masked_layers(model), masked_layers(other)):
        assert torch.equal(iterand.draws_of(a), iterand.draws_of(b)) and int(iterand.draws_of(a).sum()) > 0
    with pytest.raises(PopcliError, match="no IteRand draw counters"):
        iterand.restore(other, None)


# --------------------------------------------------------------------------- the artifact


@pytest.fixture(scope="module")
def fmnist_run(tmp_path_factory):
    """A real short search: LeNet-300-100 on Fashion-MNIST, density 0.1, a round every 10 steps."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists() and not (FMNIST / "train-images-idx3-ubyte").exists():
        pytest.skip("Fashion-MNIST IDX files not installed")
    out = tmp_path_factory.mktemp("iterand")
    recipe = recipes.load(None, ["model.arch=fc", "model.hidden=[300,100]", "search.density=0.1", "search.epochs=1",
                                 "search.max_steps=60", "search.device=cpu", "search.threads=1",
                                 "search.iterand_every_steps=10", "search.iterand_rate=0.1",
                                 f"data.data_dir={FMNIST}"])
    summary = search(recipe, out / "run")
    report = export(out / "run", out / "a.safetensors", onnx=out / "a.onnx", parity_samples=256)
    return out, summary, report


def test_loaded_model_gives_the_searched_logits_exactly(fmnist_run):
    from popcli.data.sample import real_inputs
    from popcli.export.run import model_from_checkpoint

    out, summary, report = fmnist_run
    assert summary["weights_verified"] and report["verified"] and report["iterand_redrawn_kept"] > 0
    assert report["iterand_draw_bytes"] > 0 and report["artifact_bytes"] == (out / "a.safetensors").stat().st_size
    searched, recipe, _, _ = model_from_checkpoint(out / "run" / "last.pt")
    x, _, _ = real_inputs(recipe, str(FMNIST), test=500)
    loaded = popcli.load(out / "a.safetensors", mode="search").eval()
    with torch.no_grad():
        expected = searched(x)
        assert torch.equal(loaded(x), expected)
        torch.testing.assert_close(popcli.load(out / "a.safetensors")(x), expected, rtol=1e-5, atol=1e-5)
        # the draw entry matters: the same masks over draw-0 weights give other logits
        plain = popcli.load(out / "a.safetensors", mode="search").eval()
        for (name, layer), record in zip(masked_layers(plain), read(out / "a.safetensors").layers):
            layer.weight = torch.nn.Parameter(rng.generate_weight(recipe.seed, name, record.shape, recipe.model.init,
                                                                  0.1), requires_grad=False)
        assert not torch.equal(plain(x), expected)


def test_onnx_export_runs_the_redrawn_weights(fmnist_run):
    out, _, report = fmnist_run
    parity = report["onnx"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    again = export(out / "a.safetensors", onnx=out / "b.onnx", parity_samples=128)["onnx"]["parity"]
    assert again["max_abs_diff"] <= 1e-4 and again["top1_agreement"] == 1.0


def test_entry_is_as_the_format_says(fmnist_run):
    out, _, _ = fmnist_run
    art = read(out / "a.safetensors")
    state = json.loads(art.metadata["iterand"])
    assert set(state) == {"codec", "redrawn", "draws", "sha256"} and len(state["redrawn"]) == len(art.layers)
    masks = [m for m in np.split(codecs.decode(art.tensors["masks"], [r.numel for r in art.layers],
                                               [r.kept for r in art.layers], art.codec)[0],
                                 np.cumsum([r.numel for r in art.layers])[:-1])]
    counts = codecs.decode_counts(art.tensors["iterand.draws"], [r.kept for r in art.layers], state["redrawn"],
                                  state["draws"], state["codec"])
    seed, init = art.recipe.seed, art.recipe.model.init
    for record, mask, kept_draws, digest in zip(art.layers, masks, counts, state["sha256"]):
        full = np.zeros(record.numel, dtype=np.int64)
        full[mask] = kept_draws
        weight = rng.generate_weight(seed, record.name, record.shape, init, 0.1).reshape(-1)
        for j in np.unique(full[full > 0]):
            weight[torch.from_numpy(full == j)] = rng.generate_weight(seed, f"{record.name}#redraw={j}", record.shape,
                                                                      init, 0.1).reshape(-1)[torch.from_numpy(full == j)]
        assert hashlib.sha256(weight.numpy().astype("<f4").tobytes()).hexdigest() == digest


def test_broken_entries_are_one_line_errors_for_inspect_and_load(fmnist_run, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from artifact_fuzz import parts, seal

    out, _, _ = fmnist_run
    tensors, meta = parts(out / "a.safetensors")
    state = json.loads(meta["iterand"])
    cases = {
        "missing": ({k: v for k, v in tensors.items() if k != "iterand.draws"}, meta, "no 'iterand.draws' tensor"),
        "truncated": ({**tensors, "iterand.draws": tensors["iterand.draws"][:-4]}, meta, "iterand.draws: "),
        "short list": (tensors, {**meta, "iterand": json.dumps({**state, "redrawn": state["redrawn"][:1]})},
                       "'iterand.redrawn' does not list the 3 masked layers"),
        "no entry": (tensors, {k: v for k, v in meta.items() if k != "iterand"}, "metadata has no 'iterand'"),
        "checksum": (tensors, {**meta, "iterand": json.dumps({**state, "sha256": ["a" * 64] * 3})}, "checksum"),
    }
    for name, (t, m, message) in cases.items():
        path = seal(tmp_path / f"{name.replace(' ', '-')}.safetensors", t, m)
        with pytest.raises(ArtifactError, match=message) as err:
            popcli.load(path)
        assert "\n" not in str(err.value)
        try:
            report = inspect(path)
        except ArtifactError as err:  # refused while reading the header
            assert message in str(err) and "\n" not in str(err), name
        else:
            assert not report["verified"] and message in report["problems"][0], name


def test_files_without_iterand_have_no_entry(tmp_path):
    recipe = make()
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=3)
    popcli.save(model, tmp_path / "a.safetensors", recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4})
    art = read(tmp_path / "a.safetensors")
    assert art.header.iterand is None and "iterand.draws" not in art.tensors and "iterand" not in art.metadata
    assert "iterand_draw_bytes" not in inspect(art)


def test_a_multi_mask_file_refuses_iterand_masks(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from artifact_fuzz import iterand_base

    from popcli.artifact import multimask

    path, model = iterand_base(tmp_path)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(popcli.load(path, mode="search").eval()(x), model(x))
    art = read(path)
    assert sum(art.header.iterand["redrawn"]) > 0
    with pytest.raises(ArtifactError, match="searched with IteRand") as err:
        multimask.combine(["a", "b"], [art, art])
    assert "\n" not in str(err.value)


def test_cli_search_export_inspect(tmp_path):
    from typer.testing import CliRunner

    from popcli.cli import get_app

    runner, app = CliRunner(), get_app()
    sets = [arg for pair in [*SYNTH, "search.epochs=1", "search.iterand_every_steps=2", "search.iterand_rate=0.5"]
            for arg in ("--set", pair)]
    result = runner.invoke(app, ["search", *sets, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "a.safetensors")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["inspect", str(tmp_path / "a.safetensors")])
    assert result.exit_code == 0 and "IteRand draws:" in result.output, result.output
    result = runner.invoke(app, ["search", *sets, "--set", "search.iterand_rate=0", "--out", str(tmp_path / "bad")])
    assert result.exit_code != 0 and "search.iterand_rate: 0 re-draws nothing" in result.output
