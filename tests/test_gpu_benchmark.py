"""benchmarks/gpu.py without a GPU: --help, the clear no-CUDA exit, and its table."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def run(*args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever the machine has
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_and_no_cuda_exit():
    helped = run("--help")
    assert helped.returncode == 0 and "--no-compile" in helped.stdout and "--smoke" in helped.stdout
    no_gpu = run()
    assert no_gpu.returncode == 2 and "no CUDA GPU" in no_gpu.stderr and "Traceback" not in no_gpu.stderr
    cpu = run("--device", "cpu")  # the figures are GPU figures: cpu only for --smoke
    assert cpu.returncode == 2 and "--smoke" in cpu.stderr


def test_table_has_one_line_per_row():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [{"section": "train step", "case": "conv6", "method": "edge-popup", "compile": True, "batch": 256,
             "amp": "bfloat16", "channels_last": True, "step_ms": 10.0, "images_per_s": 25600.0, "first_step_s": 30.0,
             "over_dense": 1.05},
            {"section": "failed", "case": "resnet50", "compile": True, "error": "RuntimeError: boom"},
            {"section": "artifact", "case": "conv6+bn", "tensors": 42, "bit_identical_on_gpu": True,
             "logits_max_abs_diff": 1e-6, "bytes": 100},
            {"section": "loaded latency", "case": "conv6+bn", "batch": 1, "amp": "fp32", "p50_ms": 0.5,
             "images_per_s": 2000.0}]
    lines = module.table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert "25600 img/s" in lines[2] and "1.05x dense" in lines[2] and "compile=on" in lines[2]
    assert "RuntimeError: boom" in lines[3] and "bit-identical: True" in lines[4] and "0.500 ms p50" in lines[5]
