"""The CLI end to end: real subprocesses, exit codes, one-line errors, --json."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SYNTH = ["--set", "data.dataset=synthetic", "--set", "data.shape=[1,8,8]", "--set", "data.num_classes=4",
         "--set", "data.train_size=256", "--set", "data.test_size=128", "--set", "data.batch_size=32",
         "--set", "model.hidden=[32]", "--set", "search.lr=0.05"]


def popcli(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "popcli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_help_and_version():
    result = popcli("--help")
    assert result.returncode == 0 and "search" in result.stdout and "models" in result.stdout
    assert popcli("search", "--help").returncode == 0
    assert popcli("--version").stdout.startswith("popcli ")


def test_models_lists_registry():
    result = popcli("models", "--json")
    names = json.loads(result.stdout)
    assert {"fc", "conv2", "conv4", "conv6", "conv8", "resnet18", "tv_resnet50"} <= set(names)


def test_search_json_end_to_end(tmp_path):
    result = popcli("search", *SYNTH, "--set", "search.epochs=2", "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("test_acc", "params_total", "params_kept", "density", "seed", "method", "arch", "epochs", "steps",
                "step_time_ms", "images_per_s", "wall_s", "run_dir"):
        assert key in summary, key
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["steps"] == 16
    again = popcli("search", *SYNTH, "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("args,fragment,code", [
    (["--set", "search.lr=abc"], "search.lr", 2),  # usage: a bad recipe value
    (["--set", "model.arch=nope"], "nope", 2),
    (["--set", "data.dataset=fashion-mnist", "--set", "data.data_dir=/nonexistent"], "/nonexistent", 1),  # runtime
    (["missing-recipe.yaml"], "not found", 2),
    (["--device", "cuda:7"], "cuda", 1),  # a valid request this machine cannot serve
    (["--device", "tpu"], "unknown device", 2),
])
def test_bad_input_one_line_error(tmp_path, args, fragment, code):
    env = {**os.environ, "POPCLI_DATA": str(tmp_path / "none"), "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "popcli", "search", *SYNTH[:0], *args, "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ctrl_c_checkpoints_and_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "popcli", "search", *SYNTH, "--set", "search.epochs=400", "--out", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline:  # wait for the first epoch's checkpoint
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    from popcli.storage.checkpoint import load_checkpoint

    stopped = load_checkpoint(run / "last.pt")["progress"]["global_step"]
    result = popcli("search", "--resume", "--out", str(run), "--set", f"search.max_steps={stopped + 8}", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["steps"] == stopped + 8


def test_export_and_inspect_end_to_end(tmp_path):
    run = tmp_path / "run"
    assert popcli("search", *SYNTH, "--set", "search.epochs=1", "--out", str(run), "--quiet").returncode == 0
    out = tmp_path / "model.safetensors"
    result = popcli("export", str(run), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["artifact_bytes"] == out.stat().st_size
    assert report["dense_over_artifact"] > 1 and report["checkpoint_over_artifact"] > 1  # tiny model: the header dominates
    shown = popcli("inspect", str(out))
    assert shown.returncode == 0 and "bits per masked weight" in shown.stdout and "verified" in shown.stderr
    assert json.loads(popcli("inspect", str(out), "--json").stdout)["layers"][0]["name"] == "fc1"
    again = popcli("export", str(run), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_inspect_exits_nonzero_when_verification_fails(tmp_path):
    from safetensors.numpy import save_file

    from popcli import artifact

    run = tmp_path / "run"
    assert popcli("search", *SYNTH, "--set", "search.max_steps=3", "--out", str(run), "--quiet").returncode == 0
    assert popcli("export", str(run), "-o", str(tmp_path / "a.safetensors")).returncode == 0
    art = artifact.read(tmp_path / "a.safetensors")
    layers = json.loads(art.metadata["layers"])
    layers[0]["sha256"] = "f" * 64  # as if another machine's generator had written it
    meta = {**art.metadata, "layers": json.dumps(layers)}
    meta["content_sha256"] = artifact.content_sha256(meta, art.tensors)
    save_file(art.tensors, str(tmp_path / "b.safetensors"), metadata=meta)
    result = popcli("inspect", str(tmp_path / "b.safetensors"))
    assert result.returncode == 1 and "checksum" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,fragment,code", [
    (["export", "{tmp}/nope", "-o", "{tmp}/a.safetensors"], "not found", 1),
    (["export", "{tmp}", "-o", "{tmp}/a.safetensors"], "last.pt", 1),
    (["inspect", "{tmp}/missing.safetensors"], "not found", 1),
    (["inspect", "{tmp}/junk.bin"], "not a safetensors file", 1),
    (["eval", "{tmp}/missing.safetensors"], "not found", 1),
    (["eval", "{tmp}/junk.bin"], "neither an artifact nor an ONNX", 1),
    (["export", "{tmp}/nope"], "nothing to write", 2),
    (["eval", "{tmp}/junk.bin", "--batch-sizes", "0"], "--batch-sizes", 2),
])
def test_export_inspect_eval_bad_input_one_line(tmp_path, args, fragment, code):
    (tmp_path / "junk.bin").write_bytes(b"\x80\x04garbage" * 10)
    result = popcli(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == code and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_example_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "examples/search_api.py", "--synthetic"], capture_output=True, text=True,
                            timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert "verified: True" in result.stdout and "loaded model: test accuracy" in result.stdout


def test_onnx_export_and_eval_end_to_end(tmp_path):
    run = tmp_path / "run"
    assert popcli("search", *SYNTH, "--set", "search.epochs=1", "--out", str(run), "--quiet").returncode == 0
    result = popcli("export", str(run), "-o", str(tmp_path / "a.safetensors"), "--onnx", str(tmp_path / "a.onnx"),
                    "--prune-dead-units", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["onnx"]["parity"]["max_abs_diff"] <= 1e-4
    shown = popcli("eval", str(tmp_path / "a.safetensors"), "--batch-sizes", "1,8", "--limit", "64")
    assert shown.returncode == 0, shown.stderr
    assert "onnxruntime fp32" in shown.stdout and "p99 ms" in shown.stdout and "sparsity" in shown.stdout
    as_json = json.loads(popcli("eval", str(tmp_path / "a.onnx"), "--batch-sizes", "2", "--json").stdout)
    assert as_json["kind"] == "onnx" and as_json["latency"][0]["batch_size"] == 2
