"""The portable weight generator: specified bits, golden values, dispatch- and thread-independence."""

import json
import math
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest
import torch

from popcli import kernels, rng

# --------------------------------------------------------------------------- the bit stream

_M0, _M1 = 0xD2E7470EE14C6C93, 0xCA5A826395121157  # Philox4x64 multipliers (Salmon et al. 2011)
_W0, _W1 = 0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B  # Weyl key increments
_MASK = (1 << 64) - 1


def philox4x64_10(counter: list[int], key: tuple[int, int]) -> list[int]:
    """Philox4x64-10 in pure Python, written from the paper / docs/FORMAT.md, not from numpy."""
    x, (k0, k1) = list(counter), key
    for _ in range(10):
        p0, p1 = _M0 * x[0], _M1 * x[2]
        x = [(p1 >> 64) ^ x[1] ^ k0, p1 & _MASK, (p0 >> 64) ^ x[3] ^ k1, p0 & _MASK]
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return x


def reference_words(seed: int, name: str, n: int) -> list[int]:
    """Block j (0-based) at counter j + 1, words in order v0..v3 (docs/FORMAT.md)."""
    import hashlib

    key = (seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
    out: list[int] = []
    block = 1
    while len(out) < n:
        out += philox4x64_10([block & _MASK, block >> 64, 0, 0], key)
        block += 1
    return out[:n]


@pytest.mark.parametrize("seed,name", [(0, "conv1"), (2**63 - 1, "layer4.2.conv3"), (7, "fc.é")])
def test_bit_stream_is_philox4x64_10_as_specified(seed, name):
    assert rng.raw_words(seed, name, 11).tolist() == reference_words(seed, name, 11)


def test_uint32_split_low_half_first():
    words = rng.raw_words(3, "x", 3)
    u32 = rng.uint32_stream(3, "x", 5)
    assert u32.tolist() == [int(words[0]) & 0xFFFFFFFF, int(words[0]) >> 32, int(words[1]) & 0xFFFFFFFF,
                            int(words[1]) >> 32, int(words[2]) & 0xFFFFFFFF]


# --------------------------------------------------------------------------- golden values

# generate_weight(1234, "layer1.0.conv1", (64, 64, 3, 3), init, density=0.3): SHA-256 of the
# little-endian float32 bytes, and the first three values as bit patterns. Changing any of these
# changes every artifact ever written: that needs a new GENERATOR_VERSION, not a new golden.
GOLDEN = {
    "kaiming_normal": ("699f1d2a41470ab46c9fdf3721679462b0617a56132ed01c55345d963915688e",
                       [0xBDEB53B8, 0xBDAF7D2F, 0xBDA18357]),
    "signed_constant": ("20121a49b4d8b1e1f66f7ca0f626ef00fdf0a90b77245134522ed3f0f2b5a92d",
                        [0xBD715BEF, 0x3D715BEF, 0xBD715BEF]),
    "scaled_kaiming_normal": ("30eea4ebb546392fc9ad512ca9c787bf944bb1a9d5b42680f8483f894cb107eb",
                              [0xBE56D2BD, 0xBE2032E4, 0xBE1370C9]),
    "scaled_signed_constant": ("212b9b3b9b6ddb8000675ac79a604dd4a929762bdac4a8a28340adb1123c922a",
                               [0xBDDC5468, 0x3DDC5468, 0xBDDC5468]),
    "kaiming_uniform": ("0bbf22661b0dbacccd35a6ae27c90e56ae9c43cfb1af6a089800c1bc1d1a4f6a",
                        [0xBDC65397, 0xBDB286EB, 0xBDAB3C7F]),
    "xavier_normal": ("174118429dbb02f94c07168bd3580852fa2b48c9a3ed95ef4f41cf938026c7b6",
                      [0xBDA666BE, 0xBD782DCE, 0xBD6469F8]),
    # signed_constant's signs at float32(sqrt(3 / 576)) = 0x3D93CD3A
    "elus_signed_constant": ("535cc7752b457fffa9b53815e1bb2d748dbe0cd3245a41ae0e38299db16d9fb5",
                             [0xBD93CD3A, 0x3D93CD3A, 0xBD93CD3A]),
}


def golden_digests() -> dict[str, str]:
    return {init: rng.weight_sha256(rng.generate_weight(1234, "layer1.0.conv1", (64, 64, 3, 3), init, 0.3))
            for init in rng.INITS}


@pytest.fixture(params=[*(f"c-{isa}" for isa in kernels.ISAS), "numpy"])
def generator_path(request, monkeypatch):
    """Every implementation of the generator: popcli/kernels/rng.c in each ISA build this CPU runs
    (generic, AVX2, AVX-512) and the numpy reference."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "_loaded", (None, "numpy path for this test"))
        return request.param
    lib = kernels.build(request.param[2:])
    if lib is None:
        pytest.skip(f"{request.param}: {kernels.status()}")
    monkeypatch.setattr(kernels, "_loaded", (lib, f"{request.param} for this test"))
    return request.param


@pytest.mark.parametrize("init", rng.INITS)
def test_golden_values(init, generator_path):
    weight = rng.generate_weight(1234, "layer1.0.conv1", (64, 64, 3, 3), init, 0.3)
    assert weight.dtype == torch.float32 and weight.shape == (64, 64, 3, 3)
    digest, first = GOLDEN[init]
    assert weight.flatten()[:3].numpy().view(np.uint32).tolist() == first
    assert rng.weight_sha256(weight) == digest


_CHILD = "import json; from tests.test_rng import golden_digests; print(json.dumps(golden_digests()))"


@pytest.mark.slow
@pytest.mark.parametrize("env", [
    {"ATEN_CPU_CAPABILITY": "default"},  # torch's generic kernels instead of AVX2/AVX-512
    {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},  # numpy without AVX2+ dispatch
    {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
])
def test_same_bits_under_other_dispatch_and_threads(env):
    if "NPY_DISABLE_CPU_FEATURES" in env and sys.platform != "linux":
        pytest.skip("x86 feature names")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=root,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {k: v[0] for k, v in GOLDEN.items()}


# --------------------------------------------------------------------------- the float transforms


def test_log_is_accurate():
    x = np.exp(np.linspace(-17, 0, 20001)).astype(np.float32)
    rel = np.abs(rng._log(x).astype(np.float64) - np.log(x.astype(np.float64))) / np.maximum(1.0, -np.log(x))
    assert rel.max() < 1e-6  # float32 accuracy, from exactly rounded operations only


def test_normal_quantile_is_accurate():
    q = np.linspace(-0.5 + 2**-24, 0.5 - 2**-24, 40001).astype(np.float32)
    ours = rng.normal_from_centered(q).astype(np.float64)
    exact = np.array([statistics.NormalDist().inv_cdf(0.5 + float(v)) for v in q])
    assert np.max(np.abs(ours - exact) / np.maximum(1.0, np.abs(exact))) < 2e-6


@pytest.mark.parametrize("init", rng.INITS)
def test_c_kernels_match_numpy_on_every_size(init, monkeypatch):
    if kernels.library() is None:
        pytest.skip(kernels.status())
    shapes = [(1, 1), (7, 3), (3, 85), (1001, 3), (64, 3, 7, 7), (2048, 512, 1, 1)]  # block and word boundaries
    fast = [rng.generate_weight(9, f"l{i}", s, init, 0.7) for i, s in enumerate(shapes)]
    monkeypatch.setattr(kernels, "_loaded", (None, "numpy path for this test"))
    for i, (shape, weight) in enumerate(zip(shapes, fast)):
        reference = rng.generate_weight(9, f"l{i}", shape, init, 0.7)
        assert np.array_equal(weight.numpy().view(np.uint32), reference.numpy().view(np.uint32)), shape


def test_centered_uniform_is_exact_and_symmetric():
    u32 = np.array([0, 511, 512, 2**31, 2**32 - 1], dtype=np.uint32)
    q = rng.centered_uniform(u32)
    assert q.dtype == np.float32
    assert q.tolist() == [(-4194303.5) * 2**-23, (-4194303.5) * 2**-23, (1 - 4194303.5) * 2**-23,
                          (2**22 - 4194303.5) * 2**-23, (2**23 - 1 - 4194303.5) * 2**-23]
    assert q[0] == -q[-1]


@pytest.mark.parametrize("init", rng.INITS)
def test_distributions(init):
    shape, density = (256, 128, 3, 3), 0.3
    w = rng.generate_weight(5, "conv", shape, init, density).double()
    scale = rng.weight_scale(init, shape, density)
    fan_in = 128 * 9
    expected_std = {"kaiming_normal": math.sqrt(2 / fan_in), "signed_constant": math.sqrt(2 / fan_in),
                    "scaled_kaiming_normal": math.sqrt(2 / (density * fan_in)),
                    "scaled_signed_constant": math.sqrt(2 / (density * fan_in)),
                    "kaiming_uniform": math.sqrt(2 / fan_in),  # U(-b, b), b = sqrt(6 / fan_in)
                    "xavier_normal": math.sqrt(2 / (fan_in + 256 * 9)),
                    "elus_signed_constant": math.sqrt(3 / fan_in)}[init]
    assert abs(float(w.mean())) < 0.01 * expected_std
    assert float(w.std()) == pytest.approx(expected_std, rel=0.01)
    if "signed" in init:
        assert set(w.abs().unique().tolist()) == {float(np.float32(scale))}
    if init == "kaiming_uniform":
        assert float(w.abs().max()) <= scale


def test_streams_differ_by_seed_and_name_and_errors():
    a = rng.generate_weight(0, "a", (8, 8), "kaiming_normal")
    assert not torch.equal(a, rng.generate_weight(1, "a", (8, 8), "kaiming_normal"))
    assert not torch.equal(a, rng.generate_weight(0, "b", (8, 8), "kaiming_normal"))
    # the stream is a sequence: a layer with fewer rows (same fan_in, so same scale) is a prefix
    assert torch.equal(rng.generate_weight(0, "a", (4, 8), "kaiming_normal"), a[:4])
    with pytest.raises(rng.PopcliError, match="seed"):
        rng.generate_weight(-1, "a", (2, 2), "kaiming_normal")
    with pytest.raises(rng.PopcliError, match="unknown init"):
        rng.generate_weight(0, "a", (2, 2), "orthogonal")


def test_generator_leaves_global_rngs_alone():
    torch.manual_seed(1)
    np.random.seed(1)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    rng.generate_weight(0, "a", (64, 64), "kaiming_normal")
    assert torch.equal(before[0], torch.get_rng_state()) and np.array_equal(before[1], np.random.get_state()[1])
