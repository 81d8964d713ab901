"""popcli.load(mode="packed"): layers run from keep and sign bits, against the default infer model."""

from pathlib import Path

import pytest
import torch

import cli_helpers as cli
import popcli
from popcli import recipe as recipes
from popcli.engine.loop import search
from popcli.errors import ArtifactError
from popcli.export import export
from popcli.nn import packed
from popcli.nn.packed import PackedConv2d, PackedLinear, pack_rows, resident_bytes, set_isa

SYNTH = ["data.dataset=synthetic", "data.num_classes=4", "data.train_size=128", "data.test_size=64",
         "data.batch_size=32", "search.epochs=1", "search.density=0.3"]
FC = ["data.shape=[1,8,8]", "model.arch=fc", "model.hidden=[40]", "model.batchnorm=true"]
CONV = ["data.shape=[3,8,8]", "model.arch=conv2", "model.width=0.125"]


def artifact(tmp_path: Path, *extra: str) -> Path:
    search(recipes.load(None, [*SYNTH, *extra]), tmp_path / "run")
    export(tmp_path / "run", tmp_path / "a.safetensors")
    return tmp_path / "a.safetensors"


PATHS = ("avx512", "avx2", "generic")


def runnable_paths() -> list[str]:
    """The kernel paths this CPU runs (packed.kernel_isa falls back from a wider one)."""
    return [isa for isa in PATHS if packed.kernel_isa(isa) == isa]


@pytest.fixture(params=PATHS)
def each_path(request):
    """One packed kernel path, forced with set_isa (skipped where this CPU cannot run it)."""
    if packed.kernel_isa(request.param) != request.param:
        pytest.skip(f"this CPU does not run the {request.param} packed path")
    return request.param


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("extra", [
    [*FC, "model.init=signed_constant"],
    [*FC, "search.method=biprop", "model.init=kaiming_normal"],
    [*CONV, "model.init=scaled_signed_constant"],
], ids=["fc-signed-constant", "fc-biprop", "conv-scaled-signed-constant"])
def test_packed_logits_match_the_infer_model_on_every_path(tmp_path, extra):
    path = artifact(tmp_path, *extra)
    dense, model = popcli.load(path), popcli.load(path, mode="packed")
    assert any(isinstance(m, (PackedLinear, PackedConv2d)) for m in model.modules())
    shape = [int(v) for v in extra[0].split("=")[1].strip("[]").split(",")]
    with torch.no_grad():
        for batch in (1, 3, 64):
            x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
            want = dense(x)
            got = {isa: set_isa(model, isa)(x) for isa in runnable_paths()}
            for isa, logits in got.items():
                assert torch.equal(logits, got["generic"]), isa  # the same summation order on every path
                assert close(logits, want), (isa, (logits - want).abs().max())
    assert resident_bytes(model) < resident_bytes(dense)


def test_float_init_is_refused_in_one_line(tmp_path):
    path = artifact(tmp_path, *FC, "model.init=kaiming_normal")
    with pytest.raises(ArtifactError, match="default mode='infer'") as err:
        popcli.load(path, mode="packed")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("n,k", [(13, 21), (16, 64), (9, 100)])
@pytest.mark.parametrize("batch", [1, 2, 5, 8, 9, 40])
def test_kernel_against_dense_linear_odd_shapes(n, k, batch, each_path):
    g = torch.Generator().manual_seed(n * k + batch)
    w = torch.where(torch.rand(n, k, generator=g) < 0.4, torch.where(torch.rand(n, k, generator=g) < 0.5, -1.0, 1.0), 0.0)
    w = w * (torch.rand(n, 1, generator=g) + 0.1)
    linear = torch.nn.Linear(k, n)
    linear.weight.data, linear.bias.data = w, torch.randn(n, generator=g)
    layer = PackedLinear.from_linear(linear)
    assert torch.equal(layer.unpacked_weight(), w)
    x = torch.randn(batch, k, generator=g)
    with torch.no_grad():
        set_isa(layer, "generic")
        portable = layer(x)
        set_isa(layer, each_path)
        assert torch.equal(layer(x), portable)
        assert close(layer(x), linear(x))


def test_every_path_matches_the_portable_one_on_a_wide_layer(each_path):
    """Rows of 784 and 1000 inputs (whole 64-weight words and a tail), batch 1 to 8."""
    g = torch.Generator().manual_seed(7)
    for n, k in ((37, 784), (20, 1000)):
        w = torch.where(torch.rand(n, k, generator=g) < 0.5, torch.where(torch.rand(n, k, generator=g) < 0.5, -0.3, 0.3), 0.0)
        linear = torch.nn.Linear(k, n)
        linear.weight.data = w
        layer = PackedLinear.from_linear(linear)
        with torch.no_grad():
            for batch in (1, 2, 4, 7, 8):
                x = torch.randn(batch, k, generator=g)
                portable = set_isa(layer, "generic")(x)
                assert torch.equal(set_isa(layer, each_path)(x), portable), (n, k, batch)
                assert close(portable, linear(x))


def test_two_magnitudes_in_a_row_do_not_pack():
    assert pack_rows(torch.tensor([[1.0, -1.0, 0.0], [2.0, 1.0, 0.0]])) is None
    assert packed.kernel_isa("generic") in ("generic", "torch")


def test_popcli_kernel_isa_generic_forces_the_portable_path(monkeypatch):
    linear = torch.nn.Linear(24, 5)
    linear.weight.data = torch.where(torch.arange(120).reshape(5, 24) % 3 == 0, -0.5, 0.5)
    monkeypatch.setenv("POPCLI_KERNEL_ISA", "generic")
    layer = PackedLinear.from_linear(linear)
    x = torch.randn(1, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert close(layer(x), linear(x))
    assert layer._call[3] == packed.ISAS["generic"]
    with pytest.raises(popcli.errors.ModelError, match="auto, avx512, avx2 or generic"):
        set_isa(layer, "sse9")


@pytest.mark.parametrize("init,packable", [("signed_constant", True), ("kaiming_normal", False)])
def test_inspect_inference_bytes_are_what_loading_holds(tmp_path, init, packable):
    """inspect's bytes at inference, from the header alone, equal the bytes the loaded models' tensors hold
    (no batch norm here, whose statistics load folds into biases)."""
    from popcli.artifact import inspect

    model = popcli.create_model("fc", hidden=(1024, 1024), density=0.2, input_shape=(1, 28, 28), init=init).eval()
    popcli.save(model, tmp_path / "m.safetensors")
    held = inspect(tmp_path / "m.safetensors")["inference_bytes"]
    assert held["fp32"] == resident_bytes(popcli.load(tmp_path / "m.safetensors")) == 4 * (784 * 1024 + 1024 * 1024 + 1024 * 10)
    assert held["int8"] == held["fp32"] // 4
    if packable:
        assert held["packed"] == resident_bytes(popcli.load(tmp_path / "m.safetensors", mode="packed"))
        assert 8 * held["packed"] / (784 * 1024 + 1024 * 1024 + 1024 * 10) <= 2.1  # the goal, on the quick start (2.07)
    else:
        assert held["packed"] is None
    text = cli.run("inspect", tmp_path / "m.safetensors").stdout
    assert "weights at inference" in text and ('mode="packed"' in text)
