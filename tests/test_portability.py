"""An artifact loads with the same weights and logits under other torch versions and CPU paths.

Each case loads the same artifact in a child process (another interpreter, torch version, CPU
dispatch or generator path) that prints per-layer weight and mask digests, and the logits and
accuracy on the run's test split (saved by this process). Weights and masks must be bit-identical to this process's, and
the accuracy the same; logits may differ in the last bits where torch's own kernels differ
(another torch version or CPU dispatch sums in another order), so they are compared to 1e-5. The torch 2.13.0
case builds a virtual environment from the CPU wheel on this machine's disk (/opt/wheels), as CI
does; elsewhere it is skipped unless CI is set.
"""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_213 = sorted(glob.glob("/opt/wheels/torch-2.13.0*.whl"))
CHILD = r"""
import hashlib, json, sys
import torch
import popcli
from popcli import rng, kernels
from popcli.models import masked_layers
model = popcli.load(sys.argv[1], mode="search")  # subnet layers: masks to compare
x, y = torch.load(sys.argv[2], weights_only=True)  # the run's test split, as the searching machine made it
logits = model(x)
print(json.dumps({
    "torch": torch.__version__, "kernels": kernels.status(),
    "weights": {name: rng.weight_sha256(layer.weight) for name, layer in masked_layers(model)},
    "masks": {name: hashlib.sha256(layer.mask().numpy().tobytes()).hexdigest() for name, layer in masked_layers(model)},
    "logits": logits.detach().tolist(),
    "acc": (logits.argmax(1) == y).float().mean().item(),
}))
"""


@pytest.fixture(scope="module")
def artifact_and_batch(tmp_path_factory):
    from popcli import recipe as recipes
    from popcli.export import export
    from popcli.engine.loop import search

    tmp = tmp_path_factory.mktemp("portable")
    overrides = ["data.dataset=synthetic", "data.shape=[3,16,16]", "data.num_classes=4", "data.train_size=256",
                 "data.test_size=64", "data.batch_size=32", "model.arch=conv2", "model.width=0.25",
                 "model.init=kaiming_normal", "model.batchnorm=true", "search.epochs=1", "search.density=0.2"]
    search(recipes.load(None, overrides), tmp / "run")
    export(tmp / "run", tmp / "a.safetensors")
    import torch

    from popcli.data import load_data

    recipe = recipes.load(None, overrides)
    batches = list(load_data(recipe.data, recipe.seed).test.batches())
    torch.save((torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])), tmp / "test.pt")
    return tmp / "a.safetensors", tmp / "test.pt"


def run_child(python: str, artifact: Path, batch: Path, env: dict | None = None) -> dict:
    result = subprocess.run([python, "-c", CHILD, str(artifact), str(batch)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def same(a: dict, b: dict) -> None:
    import torch

    assert a["weights"] == b["weights"] and a["masks"] == b["masks"] and a["acc"] == b["acc"]
    torch.testing.assert_close(torch.tensor(a["logits"]), torch.tensor(b["logits"]), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("env", [
    {},
    {"ATEN_CPU_CAPABILITY": "default"},  # torch's generic CPU kernels
    {"POPCLI_CPU_KERNELS": "0", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},  # numpy path, no AVX2+
    {"OMP_NUM_THREADS": "1"},
])
def test_same_model_under_other_cpu_paths(artifact_and_batch, env):
    artifact, batch = artifact_and_batch
    same(run_child(sys.executable, artifact, batch), run_child(sys.executable, artifact, batch, env))


@pytest.mark.slow
def test_same_model_under_torch_2_13(artifact_and_batch, tmp_path_factory):
    if not TORCH_213:
        if os.environ.get("CI"):
            pytest.fail("the torch 2.13.0 CPU wheel is missing from /opt/wheels")
        pytest.skip("no torch 2.13.0 wheel in /opt/wheels")
    venv = tmp_path_factory.mktemp("torch213") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", TORCH_213[-1], "numpy", "pyyaml", "safetensors"],
                   check=True, timeout=900, capture_output=True)
    artifact, batch = artifact_and_batch
    theirs = run_child(python, artifact, batch)
    assert theirs["torch"].startswith("2.13.0")
    same(run_child(sys.executable, artifact, batch), theirs)
