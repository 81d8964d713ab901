"""The frontier benchmark's baselines and driver: the sparse int8 file round-trips exactly, pruning
keeps what it says, and benchmarks/frontier.py runs end to end (and resumes) on its tiny setting."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import baselines as bl  # noqa: E402


def _inputs(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("spec, density", [(bl.MLPSpec(hidden=[40, 20]), 0.03), (bl.MLPSpec(hidden=[40, 20]), 0.6),
                                           (bl.MLPSpec(hidden=[48], batchnorm=True), 0.2)])
def test_sparse_int8_file_gives_the_same_logits(tmp_path, spec, density):
    model = bl.mlp(spec, seed=3)
    if spec.batchnorm:  # non-trivial running statistics and affine parameters
        model.train()
        with torch.no_grad():
            model(_inputs(256) * 2 + 0.5)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    bl.prune_global(model, density)
    expected_model = bl.quantize_int8(model, spec)
    size = bl.save_sparse_int8(model, spec, tmp_path / "m.spq8.xz")
    loaded, loaded_spec = bl.load_sparse_int8(tmp_path / "m.spq8.xz")
    assert loaded_spec == spec and size == (tmp_path / "m.spq8.xz").stat().st_size
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected_model.eval()(x))  # exact: the file holds those weights
        # and int8 is close to the fp32 pruned model it came from
        assert (loaded(x) - model.eval()(x)).abs().max() < 0.05 * model(x).abs().max()
    for a, b in zip(bl.linear_layers(loaded), bl.linear_layers(expected_model)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_global_pruning_is_iterative_and_exact(tmp_path):
    model = bl.mlp(bl.MLPSpec(hidden=[40, 20]))
    total = bl.weight_count(model)
    for density in (0.5, 0.1, 0.02):
        bl.prune_global(model, density)
        assert bl.nonzero_weights(model) == round(density * total)
    survivors = torch.cat([m.weight.detach().flatten() for m in bl.linear_layers(model)])
    original = torch.cat([m.weight_orig.detach().flatten() for m in bl.linear_layers(model)])
    kept = survivors != 0
    # global L1: every kept weight is at least as large as every pruned one
    assert original[kept].abs().min() >= original[~kept].abs().max()


def test_pruning_ranks_the_current_weights_not_a_stale_attribute():
    """After load_state_dict (or an optimizer step) a pruned layer's ``weight`` attribute is stale
    until the next forward; the next pruning step must rank weight_orig * mask."""
    spec = bl.MLPSpec(hidden=[40, 20])
    model = bl.mlp(spec)
    bl.prune_global(model, 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key in state:
        if key.endswith("weight_orig"):
            state[key] = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(7))
    fresh = bl.mlp(spec)
    for layer in bl.linear_layers(fresh):
        torch.nn.utils.prune.identity(layer, "weight")
    fresh.load_state_dict(state)
    bl.prune_global(fresh, 0.1)
    current = torch.cat([(m.weight_orig * m.weight_mask).detach().flatten() for m in bl.linear_layers(fresh)])
    scores = torch.cat([(state[f"{i}.weight_orig"] * state[f"{i}.weight_mask"]).flatten()
                        for i, m in enumerate(fresh) if isinstance(m, torch.nn.Linear)])
    kept = current != 0
    assert int(kept.sum()) == round(0.1 * bl.weight_count(fresh))
    assert scores[kept].abs().min() >= scores[~kept].abs().max()


def test_sparse_file_is_small_and_corruption_is_one_error(tmp_path):
    spec = bl.MLPSpec(hidden=[300, 100])
    model = bl.mlp(spec)
    bl.prune_global(model, 0.01)
    size = bl.save_sparse_int8(model, spec, tmp_path / "m.xz")
    kept = bl.nonzero_weights(model)
    assert size < 3 * kept + 2 * 410 * 4 + 600  # ~1 byte per value + its position, biases fp32, header
    data = bytearray((tmp_path / "m.xz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.xz").write_bytes(bytes(data))
    with pytest.raises(bl.BaselineError, match="cannot read"):
        bl.load_sparse_int8(tmp_path / "bad.xz")


def test_varint_gaps_round_trip():
    values = torch.tensor([0, 1, 127, 128, 300, 16383, 16384, 10**7]).numpy()
    decoded, used = bl._unvarint(bl._varint(values), len(values))
    assert decoded.tolist() == values.tolist() and used == len(bl._varint(values))


def test_small_hidden_matches_the_parameter_count():
    for target in (2_000, 26_620, 931_840):
        h = bl.small_hidden(target)
        params = sum(p.numel() for p in bl.mlp(bl.MLPSpec(hidden=[h])).parameters())
        assert abs(params - target) <= 795 // 2 + 1


@pytest.mark.slow
def test_frontier_tiny_runs_end_to_end_and_resumes(tmp_path, capsys):
    import frontier

    assert frontier.main(["--tiny", "--work", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "frontier.csv")))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    methods = {r["method"] for r in rows}
    assert methods == {"dense", "magnitude", "small dense", "edge-popup"}
    measured = [r for r in rows if r["storage"] != "tune"]
    for row in measured:
        assert 0 <= float(row["test_acc"]) <= 1 and int(row["file_bytes"]) > 0 and int(row["infer_bytes"]) > 0
        assert float(row["ort_b1_ms"]) > 0 and float(row["ort_b64_ms"]) > 0 and row["command"]
    for row in measured:  # file bytes are the whole file on disk
        if row["method"] == "edge-popup":
            name = row["key"].replace("/", "_") + ".safetensors"
            assert int(row["file_bytes"]) == (tmp_path / "popcli" / name).stat().st_size
    assert (tmp_path / "frontier.png").stat().st_size > 0
    # a rerun measures nothing again
    capsys.readouterr()
    assert frontier.main(["--tiny", "--work", str(tmp_path)]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "frontier.csv")))) == len(rows)
    assert "  lenet/" not in capsys.readouterr().out


def test_baseline_training_with_a_distiller_uses_the_teacher_logits():
    """``train(distiller=)``: w=0 is plain cross-entropy bit for bit; w>0 trains another model."""
    from popcli import recipe as recipes
    from popcli.data import load_data
    from popcli.engine.distill import Distiller

    recipe = recipes.load(None, ["data.dataset=synthetic", "data.shape=[1,28,28]", "data.train_size=128",
                                 "data.test_size=32", "data.batch_size=32"])
    train = load_data(recipe.data, recipe.seed).train
    teacher = torch.randn(train.num_samples, 10, generator=torch.Generator().manual_seed(2))
    spec, cfg = bl.MLPSpec(hidden=[16]), bl.TrainConfig(epochs=2, lr=0.1)
    models = [bl.mlp(spec) for _ in range(3)]
    bl.train(models[0], train, cfg)
    bl.train(models[1], train, cfg, distiller=Distiller(teacher, 2.0, 0.0, "t", "0" * 64))
    bl.train(models[2], train, cfg, distiller=Distiller(teacher, 2.0, 0.5, "t", "0" * 64))
    a, b, c = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_frontier_tiny_with_distill(tmp_path):
    import frontier
    from popcli import recipe as recipes
    from popcli.engine.loop import search

    teacher = tmp_path / "teacher"
    sets = ["data.dataset=synthetic", "data.shape=[1,28,28]", "data.train_size=256", "data.test_size=128",
            "data.batch_size=64", "model.hidden=[32,16]", "search.method=dense", "search.max_steps=8",
            "search.threads=1"]
    search(recipes.load(Path(frontier.ROOT) / "recipes/fashion-mnist-paper-sweep.yaml", sets), teacher)
    assert frontier.main(["--tiny", "--work", str(tmp_path / "w"), "--distill", str(teacher),
                          "--distill-temperature", "2", "--distill-weight", "0.3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "w" / "frontier.csv")))
    assert {r["method"] for r in rows} == {f"{m}, distill T2 w0.3" for m in ("dense", "magnitude", "small dense",
                                                                            "edge-popup")}
    popcli_rows = [r for r in rows if r["method"].startswith("edge-popup")]
    assert popcli_rows and all(f"search.distill_teacher={teacher}" in r["command"] for r in popcli_rows)
    assert all("--distill " in r["command"] for r in rows if not r["method"].startswith("edge-popup"))
    import frontier_report

    assert not frontier_report.is_popcli({"method": "magnitude, distill T2 w0.3"})
