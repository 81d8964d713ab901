"""User models across processes: entry points, import paths and register_model, rebuilt from an
artifact in a fresh process; missing model code is a one-line error naming the package."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from popcli.errors import ModelError

SYNTH = ["--set", "data.dataset=synthetic", "--set", "data.shape=[1,8,8]", "--set", "data.num_classes=4",
         "--set", "data.train_size=256", "--set", "data.test_size=128", "--set", "data.batch_size=32",
         "--set", "search.lr=0.05", "--set", "search.epochs=1", "--set", "search.max_steps=4"]

NETS = '''
import torch.nn as nn
from popcli.models import register_model


def build(*, in_channels, image_size, num_classes, width=1.0):
    """A plain torch MLP: popcli converts it (subnetify) on the meta device."""
    hidden = int(24 * width)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, hidden, bias=True),
                         nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


@register_model("tiny_registered", "a contract builder registered by user code")
def build_registered(*, in_channels, image_size, num_classes, linear_layer, **_):
    return nn.Sequential(nn.Flatten(), linear_layer(in_channels * image_size * image_size, 16), nn.ReLU(),
                         linear_layer(16, num_classes))
'''


def make_package(root):
    """tinynets 0.3.1 on a PYTHONPATH folder, with a popcli.models entry point `tinymlp`."""
    (root / "tinynets").mkdir(parents=True)
    (root / "tinynets" / "__init__.py").write_text('__version__ = "0.3.1"\n')
    (root / "tinynets" / "nets.py").write_text(NETS)
    info = root / "tinynets-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinynets\nVersion: 0.3.1\n")
    (info / "top_level.txt").write_text("tinynets\n")
    (info / "entry_points.txt").write_text("[popcli.models]\ntinymlp = tinynets.nets:build\n")
    return root


def run(args, pythonpath, cwd, python=False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in pythonpath] + [os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, *(["-c"] if python else ["-m", "popcli"]), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


LOAD_AND_COMPARE = textwrap.dedent('''
    import inspect, json, sys, torch, popcli
    from pathlib import Path
    from popcli.export import model_from_checkpoint
    from popcli import artifact
    # bit for bit: without folding batch norm into the weights where popcli.load can fold it
    exact = {"fold_bn": False} if "fold_bn" in inspect.signature(popcli.load).parameters else {}
    trusted = sys.argv[1] == "trust"  # an import path or a name registered by a package: the user opts in
    sources = []
    for path, checkpoint in zip(sys.argv[2::2], sys.argv[3::2]):  # (artifact, its search checkpoint) pairs
        loaded = popcli.load(path, trust_code=trusted, **exact)
        searched = model_from_checkpoint(Path(checkpoint), trust_code=trusted)[0]
        x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(loaded(x), searched(x)), "logits differ"
        sources.append(artifact.read(path).header.model_source)
    print(json.dumps(sources))
''')


@pytest.mark.slow
def test_entry_point_model_cli_search_export_load_fresh_process(tmp_path, monkeypatch):
    from popcli.models import model_descriptions

    site = make_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    assert "tinynets 0.3.1" in model_descriptions()["tinymlp"]  # what `popcli models` shows
    searched = run(["search", *SYNTH, "--set", "model.arch=tinymlp", "--out", "run", "--json", "-q"], [site], tmp_path)
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["weights_verified"] is True
    exported = run(["export", "run", "-o", "m.safetensors"], [site], tmp_path)
    assert exported.returncode == 0, exported.stderr
    loaded = run([LOAD_AND_COMPARE, "no-trust", "m.safetensors", "run/last.pt"], [site], tmp_path, python=True)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == [{"kind": "entry_point", "group": "popcli.models",
                                          "target": "tinynets.nets:build", "package": "tinynets", "version": "0.3.1"}]
    # The same artifact where the package is missing (popcli.load inside): one line naming it, no traceback.
    missing = run(["export", "m.safetensors", "--onnx", "m.onnx"], [], tmp_path)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert "tinynets" in missing.stderr and "0.3.1" in missing.stderr and "pip install" in missing.stderr


@pytest.mark.slow
def test_import_path_and_registered_models_load_in_fresh_process(tmp_path, monkeypatch):
    from popcli import recipe as recipes
    from popcli.export import export
    from popcli.engine.loop import search

    site = make_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    import tinynets.nets  # noqa: F401  (registers tiny_registered in this process)

    overrides = [o for o in SYNTH if o != "--set"]
    pairs = []
    for arch, kind in (("tinynets.nets:build", "import"), ("tiny_registered", "registered")):
        recipe = recipes.load(None, [*overrides, f"model.arch={arch}"])
        search(recipe, tmp_path / kind)
        export(tmp_path / kind, tmp_path / f"{kind}.safetensors", trust_code=kind == "import")
        pairs += [f"{kind}.safetensors", f"{kind}/last.pt"]
    loaded = run([LOAD_AND_COMPARE, "trust", *pairs], [site], tmp_path, python=True)  # fresh: nothing registered
    assert loaded.returncode == 0, loaded.stderr
    imported, registered = json.loads(loaded.stdout)
    assert imported == {"kind": "import", "target": "tinynets.nets:build", "package": "tinynets", "version": "0.3.1"}
    assert registered == {"kind": "registered", "target": "tinynets.nets:build_registered", "package": "tinynets",
                          "version": "0.3.1"}


def test_import_path_errors_are_one_line(tmp_path, monkeypatch):
    from popcli.models import get_model_builder

    with pytest.raises(ModelError, match="'nosuchpkg_xyz' is not importable"):
        get_model_builder("nosuchpkg_xyz.nets:build")
    with pytest.raises(ModelError, match="not an import path"):
        get_model_builder("a b:c")
    with pytest.raises(ModelError, match="standard-library module"):
        get_model_builder("os:system")
    with pytest.raises(ModelError, match="has no 'nope'"):
        get_model_builder("popcli.models.paper:nope")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        get_model_builder("nope")


def test_module_imported_under_meta_keeps_real_tensors(tmp_path, monkeypatch):
    from popcli.models import build_architecture
    from popcli.recipe import ModelConfig, SearchConfig

    (tmp_path / "constnets.py").write_text("import torch\nimport torch.nn as nn\nSCALE = torch.ones(3)\n\n\n"
                                           "def build(*, num_classes, **_):\n"
                                           "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with torch.device("meta"):  # as the memory estimate and the artifact loader build
        build_architecture(ModelConfig(arch="constnets:build"), SearchConfig(), in_channels=1, image_size=8,
                           num_classes=4)
    import constnets

    assert constnets.SCALE.device.type == "cpu"


def test_plain_builder_is_converted_without_global_rng(tmp_path, monkeypatch):
    from popcli.models import build_architecture, masked_layers
    from popcli.recipe import ModelConfig, SearchConfig

    monkeypatch.syspath_prepend(str(make_package(tmp_path / "site")))
    state = torch.random.get_rng_state()
    model = build_architecture(ModelConfig(arch="tinynets.nets:build"), SearchConfig(density=0.3), in_channels=1,
                               image_size=8, num_classes=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # built on meta: no draws from the global RNG
    assert [name for name, _ in masked_layers(model)] == ["1", "4"]
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["1.scores", "4.scores"]
