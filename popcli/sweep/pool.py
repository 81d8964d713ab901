"""Running a sweep's points: one after another, N at once (``popcli sweep -j N``), or on a cluster.

Every way runs one ``search`` per point into that point's run folder, so a point is resumable
however it ran and ``results.csv`` is the same. A point that fails (bad data, a diverged loss, a
crashed worker) is reported and the others go on; an interrupt stops starting new points.

- ``run_serial``: in this process.
- ``run_parallel``: N ``python -m popcli search`` worker processes at once. With several GPUs
  each worker sees one (``CUDA_VISIBLE_DEVICES``, round robin); on a CPU the cores are split
  (``search.threads`` = cores // N unless the recipe sets it). A worker dies with the sweep
  (``follow_parent``: Linux's parent-death signal, else a watch on its parent), so killing the
  sweep, ``kill -9`` included, leaves no search running; their checkpoints resume.
- ``run_submitit``: one cluster task per point through submitit (SLURM, or its local / debug
  executors), an optional dependency: ``pip install 'popcli[cluster]'``.
Nothing prints: progress goes through ``on_event``.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import recipe as recipes
from ..errors import Interrupted, PopcliError, UsageError
from ..storage.atomic import atomic_write_text

EventHandler = Callable[[str, dict[str, Any]], None]
PARENT_ENV = "POPCLI_SWEEP_PARENT"  # a worker's environment: the pid of the sweep that started it
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Task:
    index: int  # position in the grid (0-based)
    total: int
    point: list[str]  # its key=value overrides
    recipe: recipes.Recipe
    run_dir: Path

    def info(self, **extra: Any) -> dict[str, Any]:
        return {"index": self.index, "total": self.total, "point": self.point, "run_dir": str(self.run_dir), **extra}


def load_teacher(path: Path) -> Any:
    """An artifact teacher (``search.distill_teacher``) of a point: ``artifact.load``, the file rule."""
    from ..artifact import load

    return load(path)


def run_point(recipe_yaml: str, run_dir: str) -> dict[str, Any]:
    """Search one point in this process (resuming its checkpoint if it has one); its summary.
    Module-level and argument-plain so a cluster task can pickle it."""
    from ..engine.loop import search

    import yaml

    recipe = recipes.from_dict(yaml.safe_load(recipe_yaml))
    folder = Path(run_dir)
    resume = (folder / "last.pt").is_file()
    return search(recipe, folder, resume=resume, force=not resume, load_artifact=load_teacher)


def run_serial(tasks: list[Task], on_event: EventHandler, should_stop: Callable[[], bool],
               after_each: Callable[[], None]) -> list[dict[str, Any]]:
    """Each point in turn in this process; the failures (an interrupt is raised, not collected)."""
    from ..engine.loop import search

    failed = []
    for task in tasks:
        if should_stop():
            raise Interrupted(f"stopped before point {task.index + 1}/{task.total}; run the same popcli sweep "
                              "command again to go on")
        on_event("point", task.info())
        resume = (task.run_dir / "last.pt").is_file()
        try:
            search(task.recipe, task.run_dir, resume=resume, force=not resume, on_event=on_event, should_stop=should_stop,
                   load_artifact=load_teacher)
        except Interrupted:
            raise Interrupted(f"stopped in point {task.index + 1}/{task.total}, checkpoint saved; run the same "
                              "popcli sweep command again to resume where it stopped") from None
        except PopcliError as err:  # this point's problem: report it, run the others
            failed.append(task.info(error=str(err)))
            on_event("point_failed", failed[-1])
            continue
        after_each()
    return failed


def worker_env(slot: int, jobs: int, recipe: recipes.Recipe) -> tuple[dict[str, str], list[str]]:
    """(environment, extra --set overrides) of worker ``slot``: its GPU, or its share of the cores."""
    env = dict(os.environ)
    gpus = _visible_gpus()
    if recipe.search.device != "cpu" and len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        return env, []
    if recipe.search.threads is not None:
        return env, []
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env["OMP_NUM_THREADS"] = str(threads)
    return env, [f"search.threads={threads}"]


def follow_parent() -> None:
    """In a sweep worker (``PARENT_ENV`` set): die with SIGTERM when the sweep process dies. On
    Linux the kernel sends it (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread watches the
    parent pid every second. The variable is removed, so processes this one starts (data loader
    workers) do not follow it. A no-op outside sweep workers."""
    import signal

    expected = os.environ.pop(PARENT_ENV, None)
    if not expected or not expected.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != int(expected):  # the sweep died before the request took effect
                os.kill(os.getpid(), signal.SIGTERM)
            return
    import time

    def watch() -> None:
        while os.getppid() == int(expected):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="popcli-follow-parent", daemon=True).start()


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no usable CUDA: a CPU sweep
        return []


def _worker(task: Task, slot: int, jobs: int, out: Path) -> tuple[int, str]:
    """Run one point as ``python -m popcli search``; (exit code, last stderr line)."""
    env, extra = worker_env(slot, jobs, task.recipe)
    env[PARENT_ENV] = str(os.getpid())  # the worker dies with this process (follow_parent)
    recipe_file = out / "points" / f"{task.run_dir.name}.yaml"
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recipe_file, recipes.dump(task.recipe))
    resume = (task.run_dir / "last.pt").is_file()
    cmd = [sys.executable, "-m", "popcli", "search", str(recipe_file), "--out", str(task.run_dir), "--quiet",
           *(["--resume"] if resume else ["--force"]), *(a for o in extra for a in ("--set", o))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return done.returncode, (lines[-1] if lines else f"exit code {done.returncode}")


def run_parallel(tasks: list[Task], jobs: int, out: Path, on_event: EventHandler, should_stop: Callable[[], bool],
                 after_each: Callable[[], None]) -> list[dict[str, Any]]:
    """Up to ``jobs`` worker processes at once; the failures. A Ctrl-C reaches the workers too
    (same process group): each checkpoints, and no new point starts."""
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)
    failed, interrupted, lock = [], [], threading.Lock()

    def one(task: Task) -> None:
        if should_stop():
            interrupted.append(task)
            return
        slot = slots.get()
        try:
            with lock:
                on_event("point", task.info(worker=slot))
            code, last = _worker(task, slot, jobs, out)
        finally:
            slots.put(slot)
        with lock:
            if code == 0:
                after_each()
                on_event("point_done", task.info(worker=slot))
            elif code == 130:
                interrupted.append(task)
            else:
                failed.append(task.info(error=last.removeprefix("error: "), exit_code=code))
                on_event("point_failed", failed[-1])

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, tasks))
    if interrupted:
        raise Interrupted(f"stopped with {len(interrupted)} point(s) unfinished (checkpoints saved); run the same "
                          "popcli sweep command again to resume them")
    return failed


def run_submitit(tasks: list[Task], out: Path, options: dict[str, Any], on_event: EventHandler,
                 after_each: Callable[[], None]) -> list[dict[str, Any]]:
    """One submitit task per point (``options``: cluster=slurm|local|debug and executor
    parameters such as slurm_partition, timeout_min, gpus_per_node); waits for all; the failures."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher submitit needs submitit: pip install 'popcli[cluster]' (or run the points "
                         "here with -j N)") from None
    options = dict(options)
    executor = submitit.AutoExecutor(folder=str(out / "submitit"), cluster=options.pop("cluster", None))
    try:
        executor.update_parameters(**options)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--launcher-opt: {err}") from None
    jobs = []
    for task in tasks:
        jobs.append((task, executor.submit(run_point, recipes.dump(task.recipe), str(task.run_dir))))
        on_event("point", task.info(job_id=str(jobs[-1][1].job_id)))
    failed = []
    for task, job in jobs:
        try:
            job.result()
        except Exception as err:  # submitit wraps a task's exception (and a lost node) in its own types
            message = str(err).strip().splitlines()
            failed.append(task.info(error=(message[-1] if message else err.__class__.__name__)[:300]))
            on_event("point_failed", failed[-1])
            continue
        after_each()
        on_event("point_done", task.info())
    return failed
