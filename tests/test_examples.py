"""examples/torchvision_search.py end to end: a torchvision model on a user Dataset, searched with
the Python API, exported, loaded in a fresh process (logits bit for bit) and exported to ONNX."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchvision_search_example(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "torchvision_search.py"), "--steps", "2",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "same predictions: True" in result.stdout and "max |loaded - searched|" in result.stdout
    assert "'target': 'torchvision_search:build'" in result.stdout
    assert (tmp_path / "shapes.safetensors").is_file() and (tmp_path / "shapes.onnx").is_file()
    assert (tmp_path / "run" / "summary.json").is_file()
