"""A file never makes popcli run code (issue 20, section 1): builders named in re-sealed artifact
headers, run folders and checkpoints of every kind (standard library, installed third-party,
popcli's own CLI, a module whose import writes a marker file, a name "registered" by such a
module) are one line and exit 1 without the opt-in, and nothing is imported (the marker file
never appears); ``popcli inspect`` shows the recorded builder and imports nothing; with
``trust_code`` / ``--trust-code`` a legitimate user model loads; CIFAR batches cannot run code;
torch's warnings never precede popcli's one line; names that become paths stay in their folder."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import popcli
from artifact_fuzz import parts, seal
from popcli import recipe as recipes
from popcli.artifact import inspect
from popcli.export import export
from popcli.errors import DataError, PopcliError, UntrustedCodeError
from popcli.models import build_model
from test_external_models import make_package

MARKER_MODULE = '''
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the module ran")


def build(**kwargs):
    Path(__file__).with_name("CALLED").write_text("the builder ran")
    raise SystemExit(3)
'''
SYNTH = ["data.dataset=synthetic", "data.shape=[1,8,8]", "data.num_classes=4", "model.arch=fc", "model.hidden=[16]",
         "search.density=0.3"]
# (arch, model_source or None): every kind of builder a hostile header can name
HOSTILE = {
    "stdlib": ("subprocess:run", None),
    "stdlib-os": ("os:system", {"kind": "import", "target": "os:system", "package": "os", "version": None}),
    "third-party-pytest": ("pytest:main", {"kind": "import", "target": "pytest:main", "package": "pytest",
                                           "version": "9"}),
    "third-party-pip": ("pip._internal.cli.main:main", None),
    "third-party-torch-subprocesses": ("torch.utils.collect_env:main", None),
    "popcli-cli": ("popcli.cli:main", None),
    "import-time-code": ("marker_mod:build", {"kind": "import", "target": "marker_mod:build", "package": "marker_mod",
                                              "version": "1.0"}),
    "registered-by-module": ("evil_net", {"kind": "registered", "target": "marker_mod:build", "package": "marker_mod",
                                          "version": "1.0"}),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small popcli fc artifact (batch norm statistics included)."""
    path = tmp_path_factory.mktemp("trust") / "fc.safetensors"
    recipe = recipes.load(None, [*SYNTH, "model.batchnorm=true"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=recipe.seed)
    popcli.save(model, path, recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4})
    return path


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path (and PYTHONPATH) holding marker_mod, whose import writes IMPORTED."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "marker_mod.py").write_text(MARKER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    yield folder
    assert not (folder / "IMPORTED").exists() and not (folder / "CALLED").exists(), "a file made popcli run code"
    assert "marker_mod" not in sys.modules


def renamed(base: Path, out: Path, arch: str, source: dict | None) -> Path:
    """``base`` re-sealed (a valid checksum) naming ``arch`` as its builder, ``source`` as model_source."""
    tensors, meta = parts(base)
    recipe = json.loads(meta["recipe"])
    recipe["model"]["arch"] = arch
    meta = {**meta, "arch": arch, "recipe": json.dumps(recipe)}
    meta.pop("model_source", None)
    if source is not None:
        meta["model_source"] = json.dumps(source)
    return seal(out, tensors, meta)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popcli", *args], capture_output=True, text=True, cwd=cwd,
                          env=os.environ.copy(), timeout=300)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    return lines[0]


# --------------------------------------------------------------------------- artifacts


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_builder_named_in_an_artifact_runs_nothing_without_the_opt_in(base, marker, tmp_path, kind):
    arch, source = HOSTILE[kind]
    path = renamed(base, tmp_path / f"{kind}.safetensors", arch, source)
    with pytest.raises(UntrustedCodeError) as info:
        popcli.load(path)
    message = str(info.value)
    assert "\n" not in message and repr(arch) in message and "--trust-code" in message and "trust_code=True" in message
    assert "model=" in message
    if source and source["kind"] == "registered":
        assert "registered by 'marker_mod:build' (package marker_mod 1.0)" in message
    report = inspect(path)  # reads the header and the tensors only: shows the recorded builder
    assert report["builder"]["arch"] == arch and report["builder"]["trusted"] is False
    assert report["verified"] and report["structure_checked"] is False
    with pytest.raises(UntrustedCodeError):
        export(path, onnx=tmp_path / f"{kind}.onnx")
    assert not (tmp_path / f"{kind}.onnx").exists()


def test_each_kind_through_the_cli_is_one_line_and_exit_1(base, marker, tmp_path):
    """Fresh processes, as a user runs them: eval for every kind, export --onnx and inspect for one."""
    for kind, (arch, source) in HOSTILE.items():
        path = renamed(base, tmp_path / f"{kind}.safetensors", arch, source)
        line = one_line(cli("eval", str(path), "--batch-sizes", "1", "--limit", "8", cwd=tmp_path))
        assert repr(arch) in line and "--trust-code" in line, line
    path = tmp_path / "import-time-code.safetensors"
    assert "--trust-code" in one_line(cli("export", str(path), "--onnx", "x.onnx", cwd=tmp_path))
    shown = cli("inspect", str(path), cwd=tmp_path)
    assert shown.returncode == 0 and "marker_mod:build" in shown.stdout and "not imported" in shown.stdout
    assert "structure was not checked" in shown.stderr


def test_a_hostile_file_loads_into_your_own_module_and_saves_without_its_builder(base, marker, tmp_path):
    """model=: nothing the file names is imported, and saving the loaded model (whose recipe came from
    the file) does not build, import or record the untrusted builder either."""
    path = renamed(base, tmp_path / "h.safetensors", "marker_mod:build", HOSTILE["import-time-code"][1])
    own = popcli.create_model("fc", hidden=[16], batchnorm=True, density=0.3, num_classes=4, in_chans=1, image_size=8)
    loaded = popcli.load(path, model=own, mode="search")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), popcli.load(base, mode="search")(x))
    again = popcli.save(loaded, tmp_path / "again.safetensors")
    assert again.recipe.model.arch == "" and again.header.model_source is None


def test_stdlib_builders_are_refused_even_when_trusted(base, tmp_path):
    path = renamed(base, tmp_path / "os.safetensors", "os:system", None)
    with pytest.raises(PopcliError, match="standard-library module"):
        popcli.load(path, trust_code=True)


def test_popcli_names_with_a_hostile_model_source_import_nothing(base, marker, tmp_path):
    """popcli's own arch, or an unknown name, with a model_source pointing at code: never imported."""
    tensors, meta = parts(base)
    meta["model_source"] = json.dumps({"kind": "registered", "target": "marker_mod:build", "package": "m"})
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(popcli.load(seal(tmp_path / "own.safetensors", tensors, meta))(x), popcli.load(base)(x))
    unknown = renamed(base, tmp_path / "unknown.safetensors", "no_such_net",
                      {"kind": "entry_point", "group": "popcli.models", "target": "marker_mod:build"})
    with pytest.raises(PopcliError, match="model 'no_such_net' needs package"):  # one line, nothing imported
        popcli.load(unknown)


LOAD_IT = """
import sys, torch, popcli
from popcli.errors import UntrustedCodeError
torch.set_num_threads(1)  # as the parent computed the expected logits: sums in one order
path, x, expected = sys.argv[1], torch.load(sys.argv[2]), torch.load(sys.argv[3])
try:
    popcli.load(path)
except UntrustedCodeError as err:
    print("refused:", err)
else:
    raise SystemExit("loaded without the opt-in")
import tinynets.nets  # the user's own module, imported by the user: load(model=) needs no trust
own = tinynets.nets.build(in_channels=1, image_size=8, num_classes=4)
with torch.no_grad():
    assert torch.equal(popcli.load(path, model=own, fold_bn=False)(x), expected)
    assert torch.equal(popcli.load(path, trust_code=True, fold_bn=False)(x), expected)
print("ok")
"""


@pytest.mark.slow
def test_with_the_opt_in_a_user_model_still_loads(tmp_path, monkeypatch, one_thread):
    """An import-path user model in a fresh process: refused without the opt-in, loaded exactly with
    trust_code=True and without any trust into the user's own module (model=); in the process that
    built it (the user's own code) it loads as popcli's own do; --trust-code on the CLI."""
    site = make_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    recipe = recipes.load(None, [*SYNTH, "model.arch=tinynets.nets:build"])
    model = build_model(recipe.model, recipe.search, in_channels=1, image_size=8, num_classes=4, seed=0).eval()
    path = tmp_path / "user.safetensors"
    popcli.save(model, path, recipe=recipe, data_info={"shape": [1, 8, 8], "num_classes": 4})
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(popcli.load(path, fold_bn=False)(x), expected)  # this process built it: its own code
    torch.save(x, tmp_path / "x.pt")
    torch.save(expected, tmp_path / "y.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    fresh = subprocess.run([sys.executable, "-c", LOAD_IT, str(path), "x.pt", "y.pt"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=300)
    assert fresh.returncode == 0 and fresh.stdout.endswith("ok\n"), fresh.stderr
    assert "'tinynets.nets:build' (package tinynets 0.3.1)" in fresh.stdout
    assert inspect(path, trust_code=True)["structure_checked"] is True
    done = subprocess.run([sys.executable, "-m", "popcli", "export", str(path), "--onnx", "u.onnx", "--trust-code",
                           "--parity-samples", "16"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "u.onnx").is_file()


# --------------------------------------------------------------------------- run folders and checkpoints


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    from popcli.engine.loop import search

    run = tmp_path_factory.mktemp("run") / "r"
    search(recipes.load(None, [*SYNTH, "data.train_size=64", "data.test_size=32", "data.batch_size=32",
                               "search.epochs=1", "search.max_steps=2"]), run)
    return run


def hostile_run(run: Path, out: Path, arch: str) -> Path:
    """A copy of ``run`` whose recipe.yaml and last.pt name ``arch`` (received from elsewhere)."""
    import shutil

    shutil.copytree(run, out)
    state = torch.load(out / "last.pt", weights_only=True)
    state["recipe"]["model"]["arch"] = arch
    torch.save(state, out / "last.pt")
    (out / "recipe.yaml").write_text((out / "recipe.yaml").read_text().replace("arch: fc", f"arch: {arch}"))
    return out


def test_a_run_folder_received_from_elsewhere_follows_the_file_rule(run_folder, marker, tmp_path):
    run = hostile_run(run_folder, tmp_path / "hostile", "marker_mod:build")
    with pytest.raises(UntrustedCodeError, match="'marker_mod:build'"):
        export(run, tmp_path / "x.safetensors")
    line = one_line(cli("export", str(run), "-o", "x.safetensors", cwd=tmp_path))
    assert "last.pt names the model builder 'marker_mod:build'" in line and "--trust-code" in line
    line = one_line(cli("search", "--resume", "--out", str(run), "-q", cwd=tmp_path))
    assert "recipe.yaml names the model builder 'marker_mod:build'" in line and "--trust-code" in line
    line = one_line(cli("export", "--mask", f"a={run}", "-o", "m.safetensors", cwd=tmp_path))
    assert "--trust-code" in line
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("payload", ["pickle", "torchscript"])
def test_a_foreign_checkpoint_is_one_line_without_torch_warnings(tmp_path, marker, payload):
    run, target = tmp_path / "run", marker / "PWNED"
    run.mkdir()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    if payload == "pickle":  # a pickle whose load would run code (and warns about its protocol)
        (run / "last.pt").write_bytes(pickle.dumps({"format": "popcli-checkpoint/1", "x": Payload()}, protocol=4))
    else:  # a TorchScript archive: torch.load warns that it dispatches to torch.jit.load
        torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), str(run / "last.pt"))
    line = one_line(cli("export", str(run), "-o", "x.safetensors", cwd=tmp_path))
    assert "last.pt" in line and "is unreadable or not a popcli checkpoint" in line
    assert not target.exists()


# --------------------------------------------------------------------------- data folders


def _cifar(folder: Path, entry_of) -> Path:
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(entry_of(name))
    return folder


def test_cifar_batches_cannot_run_code(base, marker, tmp_path):
    """A re-sealed artifact whose recipe points data.data_dir at a shipped CIFAR folder with a
    pickle payload: popcli eval refuses the batch in one line, and the payload never runs."""
    target = marker / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {target}",))

    folder = _cifar(tmp_path / "cifar", lambda name: pickle.dumps({"data": Payload(), "labels": [0]}))
    recipe = recipes.load(None, ["data.dataset=cifar10", f"data.data_dir={folder}", "model.arch=fc",
                                 "model.hidden=[8]", "search.density=0.5"])
    model = build_model(recipe.model, recipe.search, in_channels=3, image_size=32, num_classes=10, seed=0)
    path = tmp_path / "c.safetensors"
    popcli.save(model, path, recipe=recipe, data_info={"shape": [3, 32, 32], "num_classes": 10})
    line = one_line(cli("eval", str(path), "--batch-sizes", "1", cwd=tmp_path))
    assert "data_batch_1" in line and "posix.system" in line and "CIFAR batch" in line
    assert not target.exists()
    from popcli.data.folders import read_cifar_folder

    with pytest.raises(DataError, match="names posix.system"):
        read_cifar_folder("cifar10", folder)
    assert not target.exists()


def _python2_pickle(entry: dict) -> bytes:
    """A protocol-2 pickle whose bytes are Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as the
    real CIFAR-10 python batches are; read back with encoding="latin1"."""
    import io
    import struct

    class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, with bytes written as Python 2 str
        def save_bytes(self, obj):
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj if len(obj) < 256
                       else pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
            self.memoize(obj)

        dispatch = dict(pickle._Pickler.dispatch)
        dispatch[bytes] = save_bytes

    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(entry)
    return buffer.getvalue()


def test_cifar_batches_in_the_real_format_still_read(tmp_path):
    from popcli.data.folders import read_cifar_folder

    rng = np.random.default_rng(0)
    images = {}

    def entry(name: str) -> bytes:
        images[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        return _python2_pickle({b"batch_label": b"training batch", b"labels": [1, 2, 3, 9], b"data": images[name],
                                b"filenames": [b"a.png"] * 4})

    folder = _cifar(tmp_path / "cifar-10-batches-py", entry)
    train_x, train_y, test_x, test_y = read_cifar_folder("cifar10", folder)
    assert torch.equal(test_x, torch.from_numpy(images["test_batch"].reshape(-1, 3, 32, 32)))
    assert train_y.tolist() == [1, 2, 3, 9] * 5 and train_x.shape == (20, 3, 32, 32)


# --------------------------------------------------------------------------- names that become paths


@pytest.mark.parametrize("value", ["../../escape", "/etc/passwd", "a/b/../../..", "..", "x\x00y", "~root"])
def test_names_that_become_paths_stay_in_their_folder(value, tmp_path):
    from popcli.artifact.multimask import parse_specs
    from popcli.cli.search import _default_run_dir
    from popcli.deploy.int8 import int8_path
    from popcli.errors import ArtifactError
    from popcli.sweep.grid import point_name

    recipe = recipes.load(None, [])
    name = point_name([f"model.arch={value}"], recipe)  # a sweep point's run folder name
    assert "/" not in name and name not in (".", "..") and "\x00" not in name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    recipe.model.arch = value  # the default run folder of a search: one folder under runs/
    run_dir = _default_run_dir(recipe)
    assert run_dir.parent == Path("runs") and "/" not in run_dir.name and run_dir.name not in (".", "..")
    with pytest.raises(ArtifactError, match="NAME=RUN"):
        parse_specs([f"{value}=run"])  # a mask name never holds a path
    assert int8_path(tmp_path / "m.onnx").parent == tmp_path


def test_every_torch_load_in_popcli_is_weights_only():
    """Read with ast: each torch.load call passes weights_only=True (a checkpoint never runs code)."""
    import ast

    calls = []
    for path in (Path(popcli.__file__).parent).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flags = {k.arg: k.value for k in node.keywords}
                ok = isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True
                calls.append((path.name, node.lineno, ok))
    assert calls and all(ok for *_, ok in calls), calls
