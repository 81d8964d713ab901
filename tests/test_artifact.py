"""The artifact: exact reconstruction, sizes, codecs and every kind of bad file."""

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import popcli
from popcli import artifact, codecs
from popcli import recipe as recipes
from popcli.data import load_data
from popcli.errors import ArtifactError, PopcliError
from popcli.artifact import inspect
from popcli.artifact.masks import decode as decode_masks
from popcli.export import export, model_from_checkpoint
from popcli.models import build_model
from popcli.engine.loop import evaluate, search

SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
         "data.test_size=128", "data.batch_size=32", "model.arch=fc", "model.hidden=[64]", "search.lr=0.05",
         "search.epochs=2"]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def run(tmp_path: Path, *extra: str, name: str = "run") -> Path:
    search(recipes.load(None, [*SYNTH, *extra]), tmp_path / name)
    return tmp_path / name


def assert_same_model(run_dir: Path, path: Path) -> None:
    """The loaded model gives the searched model's logits bit for bit (plain layers without batch-norm
    folding, and subnet layers), and the same accuracy; folded, to float32 rounding."""
    searched, recipe, _, _ = model_from_checkpoint(run_dir / "last.pt")
    loaded, subnet, folded = popcli.load(path, fold_bn=False), popcli.load(path, mode="search"), popcli.load(path)
    assert not loaded.training and not subnet.training
    splits = load_data(recipe.data, recipe.seed)
    x, _ = next(splits.test.batches())
    with torch.no_grad():
        assert torch.equal(searched(x), loaded(x)) and torch.equal(searched(x), subnet(x))
        torch.testing.assert_close(folded(x), searched(x), rtol=1e-5, atol=1e-5)
    assert evaluate(searched, splits.test) == evaluate(loaded, splits.test)


# --------------------------------------------------------------------------- exact reconstruction


@pytest.mark.parametrize("options", [
    [],
    ["model.batchnorm=true", "model.init=kaiming_normal"],
    ["model.arch=conv2", "data.shape=[3,8,8]", "model.width=0.125", "model.init=scaled_kaiming_normal"],
    ["model.arch=resnet18", "data.shape=[3,8,8]", "model.width=0.125", "search.epochs=1", "model.init=xavier_normal"],
    ["search.global_topk=true", "search.density=0.3"],
    ["search.dense_first=true", "search.dense_last=true", "model.init=kaiming_uniform"],
    ["search.method=dense"],
])
def test_round_trip_is_exact(tmp_path, options):
    run_dir = run(tmp_path, *options)
    report = export(run_dir, tmp_path / "a.safetensors")
    assert report["verified"] and not report["problems"]
    assert_same_model(run_dir, tmp_path / "a.safetensors")


def test_artifact_holds_only_masks_stats_and_metadata(tmp_path):
    run_dir = run(tmp_path, "model.batchnorm=true", "search.dense_last=true")
    export(run_dir, tmp_path / "a.safetensors")
    tensors = load_file(tmp_path / "a.safetensors")
    assert sorted(tensors) == ["masks", "state.fcbn1.num_batches_tracked", "state.fcbn1.running_mean",
                               "state.fcbn1.running_var", "state.out.weight"]  # out is dense: trained weights
    assert tensors["masks"].dtype == np.uint8 and tensors["masks"].size == 64 * 64 // 8  # 1 bit per weight
    art = artifact.read(tmp_path / "a.safetensors")
    for key in ("format", "format_version", "generator", "generator_version", "seed", "arch", "init", "density",
                "layers", "recipe", "metrics", "popcli_version", "torch_version", "content_sha256"):
        assert key in art.metadata, key
    layer = json.loads(art.metadata["layers"])[0]
    assert layer["name"] == "fc1" and layer["kept"] == 2048 and len(layer["sha256"]) == 64
    assert json.loads(art.metadata["metrics"])["test_acc"] == json.loads((run_dir / "summary.json").read_text())["test_acc"]


@pytest.mark.slow
def test_real_fashion_mnist_round_trip(tmp_path):
    if not FMNIST.exists():
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is missing on CI; install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed")
    run_dir = tmp_path / "run"
    summary = search(recipes.load(None, ["search.epochs=1", "search.max_steps=200", "model.hidden=[256, 128]"]), run_dir)
    export(run_dir, tmp_path / "fmnist.safetensors")
    assert_same_model(run_dir, tmp_path / "fmnist.safetensors")
    assert inspect(tmp_path / "fmnist.safetensors")["metrics"]["test_acc"] == summary["test_acc"]


# --------------------------------------------------------------------------- sizes and codecs


def built(arch: str, density: float, seed: int = 0):
    """A searched-looking model without training: random scores give a random mask per layer."""
    recipe = recipes.load(None, [f"model.arch={arch}", f"search.density={density}", "model.init=signed_constant",
                                 "model.batchnorm=false", f"seed={seed}"])
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=32, num_classes=10, seed=recipe.seed)
    return model, recipe


# whole file: masks + header (the recipe in it grew by the distill keys: 0.4783 -> 0.4802 at 0.1)
@pytest.mark.parametrize("density,codec,limit", [(0.5, "packbits", 1.02), (0.1, "rans", 0.485)])
def test_conv4_size_targets(tmp_path, density, codec, limit):
    model, recipe = built("conv4", density)
    popcli.save(model, tmp_path / "c.safetensors", recipe=recipe, data_info={"shape": [3, 32, 32], "num_classes": 10},
                metrics={"test_acc": 0.5}, codec=codec)
    report = inspect(tmp_path / "c.safetensors")
    assert report["verified"] and report["masked_weights"] > 2_000_000
    assert report["bits_per_masked_weight"] <= limit, report["bits_per_masked_weight"]


def test_auto_codec_picks_the_smaller(tmp_path):
    model, recipe = built("conv2", 0.1)
    art = popcli.save(model, tmp_path / "c.safetensors", recipe=recipe, data_info={"shape": [3, 32, 32], "num_classes": 10})
    assert art.codec == "rans"
    model, recipe = built("conv2", 0.5)
    art = popcli.save(model, tmp_path / "d.safetensors", recipe=recipe, data_info={"shape": [3, 32, 32], "num_classes": 10})
    assert art.codec == "packbits"


@pytest.mark.parametrize("sizes", [[1], [7, 1], [8, 9, 1000], [16384], [70_001, 3, 40_000]])
@pytest.mark.parametrize("p", [0.0, 0.001, 0.1, 0.5, 0.97, 1.0])
def test_codecs_round_trip(sizes, p):
    gen = np.random.default_rng(len(sizes))
    bits = np.concatenate([gen.random(n) < p * (i + 1) / len(sizes) for i, n in enumerate(sizes)])  # densities differ
    starts = np.cumsum([0, *sizes])
    kept = [int(bits[a:b].sum()) for a, b in zip(starts[:-1], starts[1:])]
    for codec in codecs.CODECS:
        data = codecs.encode(bits, sizes, codec)
        decoded, ones = codecs.decode(data, sizes, kept, codec)
        assert np.array_equal(decoded, bits) and ones == kept, codec


def test_rans_c_and_numpy_decoders_agree(monkeypatch):
    from popcli import kernels

    sizes = [50_000, 3, 80_001]
    gen = np.random.default_rng(3)
    bits = np.concatenate([gen.random(n) < p for n, p in zip(sizes, (0.2, 0.5, 0.05))])
    kept = [int(part.sum()) for part in np.split(bits, np.cumsum(sizes)[:-1])]
    data = codecs.encode(bits, sizes, "rans")
    results = []
    for isa in kernels.ISAS:  # each C build this CPU runs, then the numpy reference
        if kernels.build(isa) is not None:
            monkeypatch.setattr(kernels, "_loaded", (kernels.build(isa), f"{isa} build for this test"))
            results.append(codecs.decode(data, sizes, kept, "rans"))
    monkeypatch.setattr(kernels, "_loaded", (None, "numpy path for this test"))
    results.append(codecs.decode(data, sizes, kept, "rans"))
    for decoded, ones in results:
        assert np.array_equal(decoded, bits) and ones == kept
    with pytest.raises(codecs.CodecError):
        codecs.decode(data[:-2], sizes, kept, "rans")


def test_rans_approaches_entropy_and_rejects_damage():
    sizes = [600_000, 400_000]
    gen = np.random.default_rng(0)
    bits = np.concatenate([gen.random(600_000) < 0.1, gen.random(400_000) < 0.3])
    kept = [int(bits[:600_000].sum()), int(bits[600_000:].sum())]
    data = codecs.encode(bits, sizes, "rans")
    entropy = sum(codecs.entropy_bits(k, n) for k, n in zip(kept, sizes)) / bits.size
    assert 8 * data.size / bits.size < entropy + 0.003  # lane states (4 bytes each) and 16-bit probabilities
    with pytest.raises(codecs.CodecError):
        codecs.decode(data[:-2], sizes, kept, "rans")
    with pytest.raises(codecs.CodecError):
        codecs.decode(data, sizes, [kept[0] + 5000, kept[1]], "rans")  # other probabilities: decodes to garbage


# --------------------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    run_dir = run(tmp, "model.batchnorm=true")
    export(run_dir, tmp / "good.safetensors", codec="rans")
    return tmp / "good.safetensors"


def rewrite(src: Path, dst: Path, *, tensors: dict | None = None, metadata: dict | None = None) -> Path:
    """A copy with some tensors / metadata replaced and a valid content checksum (a buggy writer)."""
    art = artifact.read(src)
    new_tensors = {**art.tensors, **(tensors or {})}
    new_meta = {**art.metadata, **(metadata or {})}
    new_meta["content_sha256"] = artifact.content_sha256(new_meta, new_tensors)
    save_file(new_tensors, str(dst), metadata=new_meta)
    return dst


def expect_error(path: Path, fragment: str) -> None:
    with pytest.raises(ArtifactError, match=fragment):
        popcli.load(path)


def test_truncated_and_corrupted_files(good, tmp_path):
    data = good.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) - 50])
    expect_error(tmp_path / "t.safetensors", "truncated|corrupt")
    (tmp_path / "s.safetensors").write_bytes(data[:5])
    expect_error(tmp_path / "s.safetensors", "too short")
    header_len = int.from_bytes(data[:8], "little")
    bad_json = bytearray(data)
    bad_json[8 + header_len - 1] = ord(",")  # the header's closing brace
    (tmp_path / "j.safetensors").write_bytes(bytes(bad_json))
    expect_error(tmp_path / "j.safetensors", "not valid JSON|corrupt")
    header = json.loads(data[8:8 + header_len])
    name = "masks"
    header[name]["data_offsets"][1] += 10_000  # points past the end of the file
    raw = json.dumps(header).encode()
    (tmp_path / "o.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + header_len:])
    expect_error(tmp_path / "o.safetensors", "unreadable|corrupt|truncated")


def test_not_an_artifact(tmp_path):
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"), metadata={"x": "y"})
    expect_error(tmp_path / "plain.safetensors", "not a popcli artifact")
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    expect_error(tmp_path / "model.pt", "not a safetensors file|too short")
    torch.save({"w": torch.zeros(3)}, tmp_path / "t.pt")
    expect_error(tmp_path / "t.pt", r"PyTorch file \(torch.save\), not a popcli artifact")
    expect_error(tmp_path / "missing.safetensors", "not found")
    expect_error(tmp_path, "not a file")


def test_newer_versions_say_upgrade(good, tmp_path):
    expect_error(rewrite(good, tmp_path / "f.safetensors", metadata={"format_version": "4"}), "newer.*upgrade popcli")
    expect_error(rewrite(good, tmp_path / "g.safetensors", metadata={"generator_version": "9"}), "newer.*upgrade popcli")
    expect_error(rewrite(good, tmp_path / "h.safetensors", metadata={"generator": "mt19937"}), "unknown")


def test_inconsistent_contents(good, tmp_path):
    art = artifact.read(good)
    layers = json.loads(art.metadata["layers"])
    short = {"masks": art.tensors["masks"][:-4]}
    expect_error(rewrite(good, tmp_path / "a.safetensors", tensors=short), "masks: .*truncated")
    packed = {"masks": np.packbits(np.ones(64 * 64 + 64 * 4, dtype=bool))}  # a valid packbits stream, all kept
    expect_error(rewrite(good, tmp_path / "p.safetensors", tensors=packed, metadata={"mask_codec": "packbits"}),
                 "mask of layer 'fc1' keeps 4096")
    expect_error(rewrite(good, tmp_path / "q.safetensors", metadata={"mask_codec": "zstd"}), "unknown mask codec")
    real = {"masks": np.packbits(np.concatenate(decode_masks(art)), bitorder="little")}
    repacked = rewrite(good, tmp_path / "r.safetensors", tensors=real, metadata={"mask_codec": "packbits"})
    assert popcli.load(repacked) is not None  # the same masks, coded with packbits: fine
    layers[0]["kept"] += 1
    # the kept count disagrees with edge-popup's density before any mask is decoded (rans: it would decode garbage)
    expect_error(rewrite(repacked, tmp_path / "b.safetensors", metadata={"layers": json.dumps(layers)}),
                 "keeps 2049 weights of layer 'fc1', but edge-popup at the recipe's density 0.5 keeps 2048")
    expect_error(rewrite(good, tmp_path / "b2.safetensors", metadata={"layers": json.dumps(layers)}), "keeps 2048")
    layers[0]["kept"] -= 1
    layers[0]["sha256"] = "0" * 64
    expect_error(rewrite(good, tmp_path / "c.safetensors", metadata={"layers": json.dumps(layers)}), "checksum")
    recipe = json.loads(art.metadata["recipe"])
    recipe["model"]["arch"] = "transformer9000"
    expect_error(rewrite(good, tmp_path / "d.safetensors", metadata={"recipe": json.dumps(recipe)}), "transformer9000")
    recipe["model"]["arch"], recipe["seed"] = "fc", str(int(recipe["seed"]) + 1)  # another seed: other weights
    expect_error(rewrite(good, tmp_path / "e0.safetensors", metadata={"recipe": json.dumps(recipe)}),
                 "metadata 'seed' says 0 but the recipe's seed is 1")  # the copy disagrees with its source
    expect_error(rewrite(good, tmp_path / "e.safetensors", metadata={"recipe": json.dumps(recipe), "seed": "1"}),
                 "checksum")
    stats = {k: v for k, v in art.tensors.items() if "running_mean" in k}
    trimmed = {k: v[:-1] for k, v in stats.items()}
    expect_error(rewrite(good, tmp_path / "f.safetensors", tensors=trimmed), r"float32 \[63\], the model needs")
    modified = bytearray(good.read_bytes())
    modified[-1] ^= 0xFF  # a flipped bit in the tensor data: the content checksum catches it
    (tmp_path / "g.safetensors").write_bytes(bytes(modified))
    expect_error(tmp_path / "g.safetensors", "checksum")


def test_fuzzed_files_load_exactly_or_fail_cleanly(good, tmp_path):
    data = good.read_bytes()
    reference = popcli.load(good)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = reference(x)
    rnd = random.Random(0)
    header_end = 8 + int.from_bytes(data[:8], "little")
    cases = [data[:cut] for cut in rnd.sample(range(len(data)), 40)]
    for _ in range(120):
        buf = bytearray(data)
        region = rnd.choice([(0, 8), (8, header_end), (header_end, len(data))])
        for _ in range(rnd.randint(1, 3)):
            buf[rnd.randrange(*region)] ^= 1 << rnd.randrange(8)
        cases.append(bytes(buf))
    loaded = 0
    for i, case in enumerate(cases):
        path = tmp_path / f"fuzz{i}.safetensors"
        path.write_bytes(case)
        try:
            model = popcli.load(path)
        except PopcliError:
            continue  # a clean, one-line error (anything else fails the test)
        loaded += 1
        assert torch.equal(model(x), expected)  # loaded means: exactly the same subnetwork
    assert loaded < len(cases)


def test_export_refuses_to_overwrite_and_checks_paths(good, tmp_path):
    run_dir = run(tmp_path)
    export(run_dir, tmp_path / "a.safetensors")
    before = (tmp_path / "a.safetensors").read_bytes()
    with pytest.raises(ArtifactError, match="--force"):
        export(run_dir, tmp_path / "a.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == before
    export(run_dir, tmp_path / "a.safetensors", force=True, codec="packbits")
    with pytest.raises(ArtifactError, match="does not exist"):
        export(run_dir, tmp_path / "nope" / "a.safetensors")
    with pytest.raises(PopcliError, match="last.pt"):
        export(tmp_path, tmp_path / "b.safetensors")
    with pytest.raises(PopcliError, match="codec"):
        export(run_dir, tmp_path / "c.safetensors", codec="zip")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary files left behind
