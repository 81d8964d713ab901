"""SIGKILL a short search at every write point and at random moments, resume it, compare.

Run by tests/test_faults.py as a separate process (``python tests/kill_driver.py WORKDIR
RANDOM_KILLS SEED [SEARCH_KEYS_JSON]``, e.g. '{"checkpoint_every_steps": 2}'): it imports torch once, keeps to one thread, and forks one child per
search so that a SIGKILL takes down only that child. It prints one JSON object:
{"points": [...], "scenarios": [{"name", "killed", "problems"}...]}. A scenario's problems
list what differs from the uninterrupted run (tensors compared with torch.equal, metrics
lines compared with the wall-clock field ``epoch_time_s`` left out) and any file left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from popcli.storage.checkpoint import load_checkpoint
from popcli.recipe import from_dict
from popcli.engine.loop import search

RECIPE = {"seed": 3, "model": {"arch": "fc", "hidden": [16]},
          "data": {"dataset": "synthetic", "shape": [1, 8, 8], "num_classes": 4, "train_size": 48, "test_size": 32,
                   "batch_size": 16},
          "search": {"epochs": 3, "lr": 0.05, "device": "cpu", "threads": 1}}
TIMING = ("epoch_time_s", "wall_s", "session_wall_s", "step_time_ms", "images_per_s")


def _child(fn, env: dict[str, str] | None = None, kill_after: float | None = None) -> str:
    """Run ``fn`` in a forked child; "ok", "killed" or "failed: ..."."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.environ.update(env or {})
        try:
            fn()
            code = 0
        except BaseException:  # noqa: BLE001  (reported to the parent)
            os.write(write, traceback.format_exc()[-2000:].encode())
            code = 1
        os._exit(code)
    os.close(write)
    if kill_after is not None:
        time.sleep(kill_after)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    message = b""
    while chunk := os.read(read, 4096):
        message += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return "killed"
    return "ok" if os.WEXITSTATUS(status) == 0 else "failed: " + message.decode(errors="replace")


SEARCH_EXTRA: dict = {}  # more search keys for every run (argv[4], JSON): {"checkpoint_every_steps": 2}


def recipe(extra: dict | None = None) -> dict:
    return {**RECIPE, "search": {**RECIPE["search"], **SEARCH_EXTRA, **(extra or {})}}


def _run(run_dir: Path, resume: bool, on_event=None) -> None:
    search(from_dict(recipe()), run_dir, resume=resume, force=False, on_event=on_event)


def _finish(run_dir: Path) -> str:
    """What a user does after a kill: --resume if there is a checkpoint, else start again."""
    return _child(lambda: _run(run_dir, resume=(run_dir / "last.pt").is_file()))


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _checkpoint_view(path: Path) -> dict:
    state = load_checkpoint(path)
    state["metrics"] = _strip(state.get("metrics", {}))
    state["metrics_lines"] = [_strip(json.loads(line)) for line in state.get("metrics_lines", [])]
    return state


def compare(ref: Path, got: Path) -> list[str]:
    problems = []
    names = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    if names(ref) != names(got):
        problems.append(f"files {names(got)} != {names(ref)}")
    for name in ("last.pt", "best.pt"):
        if not (got / name).is_file():
            problems.append(f"{name} missing")
            continue
        a, b = _checkpoint_view(ref / name), _checkpoint_view(got / name)
        for key in sorted(a.keys() | b.keys()):
            if key not in ("popcli_version", *TIMING) and not _same(a.get(key), b.get(key)):
                problems.append(f"{name}: {key!r} differs")
    for name in ("metrics.jsonl",):
        lines = lambda d: [_strip(json.loads(l)) for l in (d / name).read_text().splitlines()]  # noqa: E731,E741
        if (got / name).is_file() and lines(ref) != lines(got):
            problems.append(f"{name}: {len(lines(got))} lines differ from the {len(lines(ref))} expected")
    if (got / "summary.json").is_file():
        a, b = (_strip(json.loads((d / "summary.json").read_text())) for d in (ref, got))
        a.pop("run_dir"), b.pop("run_dir")
        if a != b:
            problems.append(f"summary.json differs in {sorted(k for k in a if a[k] != b.get(k))}")
    if (got / "recipe.yaml").read_bytes() != (ref / "recipe.yaml").read_bytes():
        problems.append("recipe.yaml differs")
    return problems


def main(work: Path, random_kills: int, seed: int) -> dict:
    ref = work / "reference"
    trace = work / "trace.txt"
    outcome = _child(lambda: _run(ref, resume=False), env={"POPCLI_FAULT_TRACE": str(trace)})
    if outcome != "ok":
        return {"error": f"reference run: {outcome}"}
    points, seen = [], {}
    for name in (trace.read_text().split() if trace.exists() else []):
        seen[name] = seen.get(name, 0) + 1
        points.append(f"{name}#{seen[name]}")
    scenarios = []
    for index, spec in enumerate(points):
        run_dir = work / f"point{index}"
        killed = _child(lambda: _run(run_dir, resume=False), env={"POPCLI_FAULT": f"kill@{spec}"})
        finished = _finish(run_dir)
        problems = [] if finished == "ok" else [f"resume: {finished}"]
        scenarios.append({"name": f"kill@{spec}", "killed": killed == "killed",
                          "problems": problems or compare(ref, run_dir)})
    started = time.perf_counter()
    _child(lambda: _run(work / "timing", resume=False))
    duration = time.perf_counter() - started
    rng = random.Random(seed)
    for index in range(random_kills):
        run_dir = work / f"random{index}"
        delays = [rng.uniform(0.0, duration) for _ in range(1 + index % 2)]  # every other one killed twice
        killed = [_child(lambda: _run(run_dir, resume=(run_dir / "last.pt").is_file()), kill_after=delays[0])]
        for delay in delays[1:]:
            killed.append(_child(lambda: _run(run_dir, resume=(run_dir / "last.pt").is_file()), kill_after=delay))
        finished = _finish(run_dir)
        problems = [] if finished == "ok" else [f"resume: {finished}"]
        scenarios.append({"name": f"random kill after {', '.join(f'{d:.2f}' for d in delays)} s",
                          "killed": "killed" in killed, "problems": problems or compare(ref, run_dir)})
    return {"points": points, "scenarios": scenarios, "run_s": duration}


if __name__ == "__main__":
    torch.set_num_threads(1)  # before any op: the forked children then never meet a thread pool
    SEARCH_EXTRA.update(json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
