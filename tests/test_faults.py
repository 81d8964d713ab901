"""Fault injection: SIGKILL at every write and at random moments, full disks, read-only folders,
impossible names, concurrent searches and exports. Each ends in the uninterrupted run's exact
state or in one error line with nothing lost and nothing half-written."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import kill_driver
from popcli.cli import get_app
from popcli.errors import PopcliError, RunError, StorageError
from popcli.storage import atomic, faults
from popcli.storage.checkpoint import load_checkpoint
from popcli.recipe import from_dict
from popcli.storage.runlock import RunLock
from popcli.engine.loop import search

RECIPE = kill_driver.RECIPE


def cli(*args):
    """(exit code, stderr) of an in-process ``popcli`` command."""
    result = CliRunner().invoke(get_app(), [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: show it
    return result.exit_code, result.stderr


def one_line_error(code, stderr, fragment=""):
    assert code != 0, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert fragment.lower() in stderr.lower(), stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def temps(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every faulted one must end equal to."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    search(from_dict(RECIPE), run_dir)
    return run_dir


@pytest.fixture(autouse=True)
def no_faults(monkeypatch):
    monkeypatch.delenv("POPCLI_FAULT", raising=False)
    faults.reset()
    yield
    faults.reset()


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"checkpoint_every_steps": 2}], ids=["per-epoch", "every-2-steps"])
def test_sigkill_at_every_write_and_at_random_moments_then_resume_is_bit_identical(tmp_path, extra):
    work = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path  # fsync is free on tmpfs
    work = Path(subprocess.check_output(["mktemp", "-d", "-p", str(work)], text=True).strip())
    try:
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_driver.py")), str(work), "4", "7",
                              json.dumps(extra)], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        report = json.loads(out.stdout)
    finally:
        subprocess.run(["rm", "-rf", str(work)])
    assert "error" not in report, report
    points = report["points"]  # 3 epochs: recipe.yaml, 3 x (last.pt, metrics.jsonl), best.pt twice or more, summary.json
    for name in ("open:last.pt#3", "write:last.pt#2", "rename:last.pt#1", "rename:metrics.jsonl#3",
                 "write:best.pt#1", "rename:summary.json#1", "write:recipe.yaml#1"):
        assert name in points, points
    # 9 steps, 3 per epoch: last.pt at each epoch's end, and after steps 2, 4 and 8 with every-2-steps
    assert sum(p.startswith("rename:last.pt") for p in points) == (6 if extra else 3), points
    by_point = [s for s in report["scenarios"] if s["name"].startswith("kill@")]
    assert len(by_point) == len(points) and all(s["killed"] for s in by_point)
    assert any(s["killed"] for s in report["scenarios"] if s["name"].startswith("random"))
    bad = [s for s in report["scenarios"] if s["problems"]]
    assert not bad, bad


def _kill_at_step(run_dir: Path, step: int) -> str:
    """Run the every-2-steps search in a forked child that SIGKILLs itself after training ``step``."""
    def on_event(kind, info):
        if kind == "step" and info["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_driver._child(lambda: kill_driver._run(run_dir, resume=False, on_event=on_event))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a search to SIGKILL it")
def test_checkpoint_every_steps_a_kill_mid_epoch_loses_at_most_n_steps_and_resume_is_exact(tmp_path, monkeypatch):
    monkeypatch.setitem(kill_driver.SEARCH_EXTRA, "checkpoint_every_steps", 2)
    torch.set_num_threads(1)
    ref = tmp_path / "ref"
    assert kill_driver._child(lambda: kill_driver._run(ref, resume=False)) == "ok"
    # killed in the step event of step 5 (mid-epoch 2), of step 8 (before that step's own checkpoint:
    # the most a kill can lose, N = 2 steps) and of step 1 (before any checkpoint)
    for step, kept in ((5, 4), (8, 6), (1, None)):
        run = tmp_path / f"killed{step}"
        assert _kill_at_step(run, step) == "killed"
        if kept is None:
            assert not (run / "last.pt").exists() and (run / "recipe.yaml").is_file()
        else:  # step - kept <= N steps lost
            assert load_checkpoint(run / "last.pt")["progress"]["global_step"] == kept
        # --resume: continues from last.pt, or starts a run that never checkpointed
        assert kill_driver._child(lambda: kill_driver._run(run, resume=True)) == "ok"
        assert kill_driver.compare(ref, run) == [], step


def test_resume_with_a_checkpoint_missing_a_key_is_one_line(tmp_path, reference):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("recipe.yaml", "metrics.jsonl"):
        (run / name).write_bytes((reference / name).read_bytes())
    state = torch.load(reference / "last.pt", weights_only=True)
    del state["recipe"]
    torch.save(state, run / "last.pt")
    one_line_error(*cli("search", "--resume", "--out", run, "--quiet"), "lacks 'recipe'")
    state["progress"] = "not a dict"
    torch.save({**state, "recipe": {}}, run / "last.pt")
    one_line_error(*cli("search", "--resume", "--out", run, "--quiet"), "malformed 'progress'")
    assert not (run / ".lock").exists() and not temps(run)


# --------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("point", ["open:recipe.yaml#1", "write:last.pt#1", "open:metrics.jsonl#2",
                                   "write:best.pt#1", "write:last.pt#3", "open:summary.json#1"])
def test_disk_full_at_a_write_then_resume_ends_identical(tmp_path, monkeypatch, reference, point):
    run = tmp_path / "run"
    monkeypatch.setenv("POPCLI_FAULT", f"enospc@{point}")
    with pytest.raises(StorageError, match="No space left on device") as err:
        search(from_dict(RECIPE), run)
    assert "\n" not in str(err.value) and not temps(tmp_path) and not (run / ".lock").exists()
    monkeypatch.delenv("POPCLI_FAULT")
    search(from_dict(RECIPE), run, resume=(run / "last.pt").is_file())
    assert kill_driver.compare(reference, run) == []


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "mnt"
    if not _mount_tmpfs(mount, "160k"):
        pytest.skip("needs root and mount to make a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_real_full_disk_search_and_exports(small_tmpfs, reference):
    big = {**RECIPE, "model": {"arch": "fc", "hidden": [512]}}  # last.pt ~400 KB > 160 KB
    recipe = small_tmpfs / "big.yaml"
    recipe.write_text(yaml.safe_dump(big))
    one_line_error(*cli("search", recipe, "--out", small_tmpfs / "run", "--quiet"), "no space left")
    assert not temps(small_tmpfs) and not (small_tmpfs / "run" / "last.pt").exists()
    try:  # fill what is left
        with open(small_tmpfs / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass
    one_line_error(*cli("export", reference, "-o", small_tmpfs / "m.safetensors"), "no space left")
    one_line_error(*cli("export", reference, "--onnx", small_tmpfs / "m.onnx", "--parity-samples", 8), "no space left")
    assert not temps(small_tmpfs) and not (small_tmpfs / "m.safetensors").exists() and not (small_tmpfs / "m.onnx").exists()


# --------------------------------------------------------------------------- read-only


@pytest.fixture
def read_only_run(tmp_path, reference):
    """A finished run in a folder this process cannot write (a read-only tmpfs, or chmod for non-root)."""
    mount = tmp_path / "ro"
    mounted = _mount_tmpfs(mount, "4m")
    run = mount / "run"
    run.mkdir()
    for name, data in snapshot(reference).items():
        (run / name).write_bytes(data)
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    else:
        run.chmod(0o555)
        mount.chmod(0o555)
        if os.access(run, os.W_OK):
            pytest.skip("cannot make a read-only folder here")
    yield run
    if mounted:
        subprocess.run(["umount", "-l", str(mount)])
    else:
        mount.chmod(0o755)
        run.chmod(0o755)


def test_read_only_folder_one_line_errors_nothing_changed(read_only_run, reference, tmp_path):
    before = snapshot(read_only_run)
    for args in (["search", "--resume", "--out", read_only_run],
                 ["search", "--force", "--set", "search.epochs=1", "--out", read_only_run],
                 ["search", "--out", read_only_run.parent / "new"],
                 ["export", reference, "-o", read_only_run / "m.safetensors"],
                 ["export", read_only_run, "-o", read_only_run / "best.safetensors", "--force"]):
        code, stderr = cli(*args, *(["--quiet"] if args[0] == "search" else []))
        one_line_error(code, stderr, "read-only")
    code, stderr = cli("export", read_only_run, "-o", read_only_run / "best.pt", "--force")  # an artifact over a
    assert code == 2 and "name it" in stderr  # checkpoint: refused by its suffix before anything is tried
    assert snapshot(read_only_run) == before and not (read_only_run.parent / "new").exists()


def test_injected_read_only_error_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCLI_FAULT", "erofs@open:last.pt")
    with pytest.raises(StorageError, match="read-only"):
        search(from_dict(RECIPE), tmp_path / "run")
    assert not temps(tmp_path)


# --------------------------------------------------------------------------- names and paths


def test_long_names_symlinks_and_folders_as_destinations(tmp_path, reference):
    long_ok = tmp_path / ("m" * 240 + ".safetensors")  # 252 bytes: legal, the temporary name beside it is cut
    code, stderr = cli("export", reference, "-o", long_ok, "--json")
    assert code == 0, stderr
    assert long_ok.is_file() and not temps(tmp_path)
    one_line_error(*cli("export", reference, "-o", tmp_path / ("m" * 300 + ".safetensors")), "too long")
    one_line_error(*cli("search", "--out", tmp_path / ("r" * 300), "--quiet"), "too long")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    one_line_error(*cli("search", "--out", tmp_path / "dangling", "--quiet"), "symlink")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    one_line_error(*cli("search", "--out", tmp_path / "loop", "--quiet"), "symlink")
    (tmp_path / "a_folder").mkdir()
    one_line_error(*cli("export", reference, "-o", tmp_path / "a_folder", "--force"), "folder")
    one_line_error(*cli("export", reference, "--onnx", tmp_path / "a_folder", "--force"), "folder")
    assert (tmp_path / "a_folder").is_dir() and not list((tmp_path / "a_folder").iterdir())
    assert not temps(tmp_path) and not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- concurrency


def test_a_held_run_folder_refuses_every_other_search(tmp_path, reference):
    run = tmp_path / "run"
    run.mkdir()
    for name, data in snapshot(reference).items():
        (run / name).write_bytes(data)
    before = snapshot(run)
    with RunLock(run):
        for kwargs in ({}, {"force": True}, {"resume": True}):
            with pytest.raises(RunError, match=f"in use by another search \\(pid {os.getpid()} on "):
                search(from_dict(RECIPE), run, **kwargs)
    assert snapshot(run) == before and not (run / ".lock").exists()


@pytest.mark.slow
def test_two_concurrent_searches_into_one_folder(tmp_path):
    """A real second process: the first holds the folder until it is killed; the lock dies with it."""
    run = tmp_path / "run"
    recipe = tmp_path / "long.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "search": {**RECIPE["search"], "epochs": 100000}}))
    first = subprocess.Popen([sys.executable, "-m", "popcli", "search", str(recipe), "--out", str(run), "--quiet"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (run / "last.pt").exists(), first.stderr.read() if first.poll() is not None else "no checkpoint"
        for extra in ([], ["--force"], ["--resume"]):
            one_line_error(*cli("search", recipe, "--out", run, "--quiet", *extra), f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    with RunLock(run):  # the kernel released the dead holder's lock; its stale .lock file blocks nobody
        pass


def test_force_validates_the_new_run_before_replacing_the_old(tmp_path, reference):
    run = tmp_path / "run"
    run.mkdir()
    for name, data in snapshot(reference).items():
        (run / name).write_bytes(data)
    before = snapshot(run)
    for bad in (["--set", "model.arch=nope"], ["--set", "data.dataset=fashion-mnist", "--set", "data.data_dir=/nope"],
                ["--set", "model.hidden=[1000000000]"]):
        code, stderr = cli("search", "--force", "--out", run, "--quiet", "--set", "data.dataset=synthetic", *bad)
        one_line_error(code, stderr)
    assert snapshot(run) == before


def test_two_concurrent_exports_to_one_destination_exactly_one_wins(tmp_path, reference, monkeypatch):
    """Both pass the up-front existence check, then meet at the final (exclusive) create."""
    from popcli.export import export

    out = tmp_path / "m.safetensors"
    barrier = threading.Barrier(2, timeout=60)
    publish = atomic._publish

    def meet_then_publish(tmp, path, exclusive):
        barrier.wait()
        publish(tmp, path, exclusive)

    monkeypatch.setattr(atomic, "_publish", meet_then_publish)
    outcomes = []

    def one_export():
        try:
            export(reference, out)
            outcomes.append("ok")
        except PopcliError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=one_export) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes)[-1] == "ok" and outcomes.count("ok") == 1, outcomes
    assert "already exists" in [o for o in outcomes if o != "ok"][0]
    assert not temps(tmp_path)
    from popcli import load

    load(out)  # the winner's file is whole


def test_out_of_inodes_is_one_line(tmp_path):
    mount = tmp_path / "inodes"
    if not _mount_tmpfs(mount, "4m,nr_inodes=4"):
        pytest.skip("needs root and mount to make a small tmpfs")
    try:
        for i in range(8):  # use up the inodes
            try:
                (mount / f"f{i}").touch()
            except OSError:
                break
        one_line_error(*cli("search", "--out", mount / "run", "--quiet"), "no space left")
        assert not (mount / "run").exists()
    finally:
        subprocess.run(["umount", "-l", str(mount)])
