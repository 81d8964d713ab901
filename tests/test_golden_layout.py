"""The package redesign (0.2.0) changed no behaviour: golden runs made with the code before it.

For the quick start and Conv4 on Fashion-MNIST (seed 0, one thread, a fixed number of steps)
this drives the CLI as a user would (``python -m popcli search`` then ``export``) and compares
with tests/golden/layout/<case>.json, written by the 0.1.0 code (commit 467422b) on one machine
(recorded: on another CPU model or torch the float sums round differently, and the test skips):

- metrics.jsonl: every record identical except ``epoch_time_s`` (a timing);
- summary.json: every key identical except the timings, the run folder and the version;
- the artifact: identical bytes once the entries that name the version or a timing are set
  to fixed values (``popcli_version``, ``metrics.wall_s`` and ``.epoch_time_s``, ``checkpoint_bytes``, whose size
  follows the timings' digits in last.pt) and the header's keys are sorted (safetensors lists
  the metadata keys in a different order at every write, see ``canonical``). The test re-seals
  the file with those entries (``content_sha256`` as docs/FORMAT.md specifies it, recomputed
  here) and compares SHA-256 of the whole file; it first checks that re-sealing the unchanged
  file reproduces it (same length, same bytes up to that order). Recipe keys added since
  (``ADDED_KEYS``), at their default values, are left out of the recorded recipe first.

Regenerate (only for an intended change of behaviour): POPCLI_WRITE_GOLDEN=1 pytest this file.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden" / "layout"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
COMMON = ["seed=0", "search.threads=1", "search.epochs=1", "search.device=cpu"]
CASES = {
    "quickstart": [*COMMON, "search.max_steps=40"],
    "conv4": [*COMMON, "model.arch=conv4", "model.batchnorm=false", "search.max_steps=8"],
}
TIMING_SUMMARY = ("step_time_ms", "images_per_s", "wall_s", "session_wall_s", "run_dir", "popcli_version",
                  "cpu_kernels")
TIMING_METRICS = ("wall_s", "epoch_time_s")
NORMALIZED = {"popcli_version": "golden", "checkpoint_bytes": "0"}
# recipe keys added after the golden runs, at their defaults: they change no behaviour, only the
# recipe the header records (removed before comparing; a non-default value is a real difference)
ADDED_KEYS = {("search", "checkpoint_every_steps"): None, ("search", "distill_teacher"): None,
              ("search", "distill_temperature"): 4.0, ("search", "distill_weight"): 0.5,
              ("search", "iterand_every_steps"): 0, ("search", "iterand_rate"): 0.1}


def machine() -> str:
    """The CPU model and torch's CPU capability: float sums (matmul, conv) round differently elsewhere."""
    import platform

    import torch

    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}; {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}"


def cli(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "popcli", *args], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "POPCLI_SKIP_MEMORY_CHECK": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


def content_sha256(metadata: dict[str, str], tensors: dict[str, np.ndarray]) -> str:
    """docs/FORMAT.md, "content_sha256" (format version 2)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        digest.update(f"{name}\n{array.dtype.str}\n{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "content_sha256"}, sort_keys=True,
                             separators=(",", ":")).encode())
    return digest.hexdigest()


def sealed(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The file safetensors writes for ``tensors`` and ``metadata`` (its content_sha256 recomputed)."""
    from safetensors.numpy import save

    return save(tensors, metadata={**metadata, "content_sha256": content_sha256(metadata, tensors)})


def canonical(data: bytes) -> bytes:
    """A safetensors file with its header's keys sorted. safetensors keeps ``__metadata__`` in a
    Rust HashMap, so the order of those keys in the header differs between any two writes of the
    same content; everything else (the tensor entries, offsets, the data) is deterministic."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + data[8 + length:]


def normalized(path: Path) -> tuple[dict[str, str], str]:
    """(the metadata with version and timings set to fixed values, SHA-256 of the file re-sealed
    with it, header keys sorted)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    raw = path.read_bytes()
    tensors = load_file(str(path))
    with safe_open(str(path), "np") as f:
        metadata = dict(f.metadata())
    resealed = sealed(tensors, metadata)
    assert len(resealed) == len(raw) and canonical(resealed) == canonical(raw), "re-sealing changes the file"
    metrics = json.loads(metadata["metrics"])
    metrics.update({key: 0.0 for key in TIMING_METRICS if key in metrics})
    recipe = json.loads(metadata["recipe"])
    for (section, key), default in ADDED_KEYS.items():
        if key in recipe[section] and recipe[section][key] == default:
            del recipe[section][key]
    metadata = {**metadata, **NORMALIZED, "metrics": json.dumps(metrics, separators=(",", ":")),
                "recipe": json.dumps(recipe, separators=(",", ":"))}
    return metadata, hashlib.sha256(canonical(sealed(tensors, metadata))).hexdigest()


def observed(tmp_path: Path, overrides: list[str]) -> dict:
    run = tmp_path / "run"
    cli("search", "--out", str(run), "-q", "--data-dir", str(FMNIST), *[a for o in overrides for a in ("--set", o)])
    cli("export", str(run), "-o", str(tmp_path / "a.safetensors"))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    metadata, sha = normalized(tmp_path / "a.safetensors")
    return {"machine": machine(), "metrics": [{k: v for k, v in line.items() if k != "epoch_time_s"} for line in lines],
            "summary": {k: v for k, v in summary.items() if k not in TIMING_SUMMARY},
            "artifact_metadata": {k: v for k, v in metadata.items() if k != "content_sha256"},
            "artifact_sha256": sha}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_runs_and_artifacts_as_before_the_redesign(case, tmp_path):
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{FMNIST} is missing on CI; install it with `apt-get install dataset-fashion-mnist`")
        pytest.skip(f"{FMNIST} not installed (apt-get install dataset-fashion-mnist)")
    got = observed(tmp_path, CASES[case])
    golden = GOLDEN / f"{case}.json"
    if os.environ.get("POPCLI_WRITE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(golden.read_text())
    if want["machine"] != got["machine"]:
        pytest.skip(f"golden runs are bit-exact on the machine that made them ({want['machine']}), not on this one")
    assert got["metrics"] == want["metrics"]
    assert got["summary"] == want["summary"]
    assert got["artifact_metadata"] == want["artifact_metadata"]
    assert got["artifact_sha256"] == want["artifact_sha256"]
