"""The fused CPU kernels: bit-identical to the torch expressions they replace, on every path
(each ISA build this CPU runs: generic, AVX2, AVX-512)."""

import os
import subprocess
import sys

import pytest
import torch

from popcli import kernels
from popcli.nn import SubnetLinear, cpu_kernels, fused, topk
from popcli.nn.topk import ThresholdTracker, kept_count, topk_mask

pytestmark = pytest.mark.skipif(cpu_kernels.load() is None, reason=cpu_kernels.status())


@pytest.fixture
def no_kernels(monkeypatch):
    """Run the plain torch/numpy path, as on a machine without a C compiler."""
    monkeypatch.setattr(kernels, "_loaded", (None, "disabled for this test"))


@pytest.fixture(params=kernels.ISAS)
def each_isa(request, monkeypatch):
    """The kernels of one instruction-set build (skipped where this CPU cannot run it)."""
    lib = kernels.build(request.param)
    if lib is None:
        pytest.skip(f"this CPU does not run the {request.param} build")
    monkeypatch.setattr(kernels, "_loaded", (lib, f"{request.param} build for this test"))
    return request.param


def reference_masked_weight(weight, scores, density):
    return weight * topk_mask(scores, density).float()


def scores_of(kind: str, shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(shape, generator=gen)
    return torch.randint(-3, 4, shape, generator=gen).float()  # |s| in {0..3}: ties everywhere


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.9])
@pytest.mark.parametrize("n", [1000, 40_000, 300_001])
def test_masked_weight_matches_torch_over_moving_scores(kind, density, n, each_isa):
    scores, weight = scores_of(kind, (n,), n), torch.randn(n, generator=torch.Generator().manual_seed(1))
    tracker = ThresholdTracker()
    step = torch.Generator().manual_seed(2)
    for _ in range(6):  # the tracker's bracket hits, misses and is absent along the way
        got = fused.masked_weight(weight, scores, density, tracker)
        assert torch.equal(got, reference_masked_weight(weight, scores, density))
        assert int(torch.count_nonzero(got)) <= kept_count(n, density)
        scores += 1e-3 * torch.randn(n, generator=step) if kind == "normal" else 0.0


def test_bracket_misses_are_exact(each_isa):
    n, density = 100_000, 0.3
    scores, weight = torch.randn(n), torch.randn(n)
    tracker = ThresholdTracker()
    fused.masked_weight(weight, scores, density, tracker)
    scores *= 2.0  # the threshold doubles: the remembered bracket misses it by far
    assert torch.equal(fused.masked_weight(weight, scores, density, tracker), reference_masked_weight(weight, scores, density))
    assert tracker.last == pytest.approx(float(topk.cpu_threshold(scores, kept_count(n, density)).value))


def test_score_grad_and_count_gather_match_torch(each_isa):
    gen = torch.Generator().manual_seed(0)
    g, w, s = (torch.randn(100_003, generator=gen) for _ in range(3))
    s[::7] = 0.0  # sign(0) = 0: those scores get a zero gradient
    assert torch.equal(cpu_kernels.score_grad(g, w, s), (g * w).mul_(torch.sign(s)))
    above, inside, values = cpu_kernels.count_gather(s, 0.5, 0.7, cap=s.numel())
    a = s.abs()
    assert above == int((a > 0.7).sum()) and inside == int(((a >= 0.5) & (a <= 0.7)).sum())
    assert torch.equal(values.sort().values, a[(a >= 0.5) & (a <= 0.7)].sort().values)
    above, inside, _ = cpu_kernels.count_gather(s, 0.5, 0.7, cap=10)
    assert inside > 10  # reports that the gather did not fit


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_results(threads, each_isa):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scores, weight = scores_of("normal", (257, 411), 5), torch.randn(257, 411)
        tracker = ThresholdTracker()
        for density in (0.5, 0.5, 0.2):
            assert torch.equal(fused.masked_weight(weight, scores, density, tracker),
                               reference_masked_weight(weight, scores, density))
    finally:
        torch.set_num_threads(previous)


def _train_steps(layer: SubnetLinear, steps: int = 4) -> list[torch.Tensor]:
    opt = torch.optim.SGD(layer.parameters(), lr=0.5, momentum=0.9)
    x = torch.randn(16, layer.in_features, generator=torch.Generator().manual_seed(3))
    outs = []
    for _ in range(steps):
        out = layer(x)
        out.square().sum().backward()
        opt.step()
        opt.zero_grad()
        outs.append(out.detach())
    return outs + [layer.scores.detach().clone()]


def test_layer_training_identical_with_and_without_kernels(monkeypatch, each_isa):
    def fresh():
        torch.manual_seed(0)  # test-local: the layer under test draws nothing itself
        layer = SubnetLinear(300, 200, density=0.4)
        layer.weight.data.normal_()
        layer.scores.data.normal_()
        return layer

    with_kernels = _train_steps(fresh())
    monkeypatch.setattr(kernels, "_loaded", (None, "disabled for this test"))
    without = _train_steps(fresh())
    for a, b in zip(with_kernels, without):
        assert torch.equal(a, b)


def test_topk_mask_without_kernels_is_exact(no_kernels):
    scores = scores_of("ties", (50_000,), 9)
    reference = torch.zeros(50_000, dtype=torch.bool)
    reference[torch.sort(-scores.abs(), stable=True).indices[: kept_count(50_000, 0.37)]] = True
    assert torch.equal(topk_mask(scores, 0.37), reference)
    assert cpu_kernels.load() is None and "off" in cpu_kernels.status()


def test_each_build_uses_its_vector_width():
    widths = {"generic": 16, "avx2": 32, "avx512": 64}
    for isa in kernels.ISAS:
        lib = kernels.build(isa)
        if lib is not None:
            assert lib.popcli_vector_bytes() == widths[isa]  # generic: SSE2 on x86-64, NEON on ARM64


@pytest.mark.parametrize("asked,expect", [("generic", "generic path (POPCLI_KERNEL_ISA)"),
                                          ("bogus", "POPCLI_KERNEL_ISA='bogus' unknown")])
def test_popcli_kernel_isa_forces_or_names_the_build(asked, expect):
    code = "from popcli import kernels; print(kernels.status())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "POPCLI_KERNEL_ISA": asked}).stdout
    assert expect in out, out
