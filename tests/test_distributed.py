"""torchrun with 2 CPU processes (gloo): identical masks on every rank, one run folder, artifact loads.

Each case launches a small driver through ``python -m torch.distributed.run``: every rank runs
the library's ``search`` and writes its own mask digest; the CUDA path (NCCL, AMP, channels_last)
runs only where a GPU is present.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import popcli
from popcli.export import export

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "data.train_size=256",
             "data.test_size=64", "data.batch_size=32", "model.arch=fc", "model.hidden=[32]", "model.batchnorm=true",
             "search.lr=0.05", "search.epochs=2", "search.device=cpu"]
DRIVER = textwrap.dedent("""
    import json, os, sys
    import torch
    from popcli import recipe as recipes
    from popcli.engine import loop as engine
    from popcli.engine.distributed import masks_digest

    run_dir, desync = sys.argv[1], os.environ.get("DESYNC") == "1"
    rank = int(os.environ["RANK"])
    real_save = engine.save

    def save(job, prog, *args):  # record what each rank holds at every checkpoint
        if desync and rank == 1:  # a rank whose scores drifted: the checkpoint must refuse
            with torch.no_grad():
                scores = next(p for n, p in job.model.named_parameters() if n.endswith("scores"))
                scores.copy_(torch.arange(scores.numel(), dtype=scores.dtype).view_as(scores))
        digests.append(masks_digest(job.model))
        real_save(job, prog, *args)

    digests = []
    engine.save = save
    summary = engine.search(recipes.load(None, sys.argv[2:]), run_dir)
    with open(os.path.join(run_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"digests": digests, "summary": summary}, f)
""")


def torchrun(tmp_path: Path, run_dir: Path, env: dict | None = None, nproc: int = 2) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(driver), str(run_dir), *OVERRIDES],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_two_gloo_ranks_agree_and_export(tmp_path):
    run_dir = tmp_path / "run"
    result = torchrun(tmp_path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["digests"] and ranks[0]["digests"] == ranks[1]["digests"]  # identical masks at every checkpoint
    assert ranks[0]["summary"] == {**ranks[1]["summary"], "wall_s": ranks[0]["summary"]["wall_s"],
                                   "session_wall_s": ranks[0]["summary"]["session_wall_s"],
                                   "step_time_ms": ranks[0]["summary"]["step_time_ms"],
                                   "images_per_s": ranks[0]["summary"]["images_per_s"]}  # reduced metrics
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 * 8 and summary["test_acc"] > 0.4
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # written once, by rank 0
    export(run_dir, tmp_path / "a.safetensors")
    model = popcli.load(tmp_path / "a.safetensors")
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 4)


@pytest.mark.slow
def test_ranks_that_disagree_stop_with_an_error(tmp_path):
    result = torchrun(tmp_path, tmp_path / "run", env={"DESYNC": "1"})
    assert result.returncode != 0 and "ranks disagree on the masks" in result.stderr


@pytest.mark.slow
def test_torchrun_cli_resumes(tmp_path):
    def run(*extra):
        args = [a for o in OVERRIDES for a in ("--set", o)]
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "popcli", "search", *args, "--out", str(tmp_path / "run"), "--quiet", "--json",
                               *extra], capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})

    first = run("--set", "search.max_steps=5")
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["steps"] == 5  # one JSON object: only rank 0 prints
    resumed = run("--resume", "--set", "search.max_steps=12")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["steps"] == 12 and summary["world_size"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path runs where one is present")
def test_cuda_search_with_amp_and_channels_last(tmp_path):
    from popcli import recipe as recipes
    from popcli.engine.loop import search

    summary = search(recipes.load(None, [*OVERRIDES[:-1], "model.arch=conv2", "data.shape=[3,16,16]",
                                         "search.device=cuda", "search.amp=true", "search.channels_last=true"]),
                     tmp_path / "run")
    assert summary["device"].startswith("cuda") and summary["amp"] is not None and summary["weights_verified"]
