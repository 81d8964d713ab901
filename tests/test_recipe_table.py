"""Hostile recipes, one row each: a clean one-line error and no run folder left behind, or a run
that works (non-square inputs, batch size 1 without batch norm)."""

import struct

import pytest
from typer.testing import CliRunner

from popcli.cli import get_app

app = get_app()

# a tiny synthetic search: every --set a case adds comes after these and wins
SMALL = ["--set", "data.dataset=synthetic", "--set", "data.shape=[1,8,8]", "--set", "data.num_classes=4",
         "--set", "data.train_size=32", "--set", "data.test_size=16", "--set", "data.batch_size=16",
         "--set", "model.arch=fc", "--set", "model.hidden=[8]", "--set", "search.max_steps=1",
         "--set", "search.device=cpu", "--set", "search.threads=1"]
OK = None


def _set(*pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


CASES = [  # (id, recipe file bytes or None for the quick start, extra --set, expected message fragment or OK)
    ("binary file", bytes(range(256)) * 4, [], "not UTF-8"),
    ("latin-1 text", "model:\n  arch: caf\xe9\n".encode("latin-1"), [], "not UTF-8"),
    ("NUL bytes", b"seed: 1\x00\n", [], "NUL"),
    ("empty file", b"", [], "empty"),
    ("comments only", b"# a recipe\n\n   # nothing else\n", [], "empty"),
    ("a list, not a mapping", b"- 1\n- 2\n", [], "expected a mapping"),
    ("duplicate top-level key", b"seed: 1\nseed: 2\n", [], "appears twice"),
    ("duplicate nested key", b"search:\n  lr: 0.1\n  lr: 0.2\n", [], "appears twice"),
    ("duplicate section", b"search:\n  lr: 0.1\nsearch:\n  epochs: 2\n", [], "appears twice"),
    ("invalid YAML", b"model: [unclosed\n", [], "not valid YAML"),
    ("deeply nested", b"model:\n  hidden: " + b"[" * 600 + b"]" * 600 + b"\n", [], "nested too deeply"),
    ("5000-digit seed", b"seed: " + b"9" * 5000 + b"\n", [], "digits"),
    ("4000-digit seed", b"seed: " + b"9" * 4000 + b"\n", [], "out of range"),
    ("5000-digit seed via --set", None, _set("seed=" + "7" * 5000), "digits"),
    ("seed as a list", b"seed: [1, 2]\n", [], "seed"),
    ("unknown section", b"modle:\n  arch: fc\n", [], "unknown recipe key"),
    ("density NaN", None, _set("search.density=.nan"), "search.density"),
    ("lr infinite", None, _set("search.lr=.inf"), "search.lr"),
    ("width infinite", None, _set("model.width=.inf"), "model.width"),
    ("hidden as a float string", None, _set("model.hidden=[1e9]"), "model.hidden"),
    ("negative batch size", None, _set("data.batch_size=-1"), "data.batch_size"),
    ("batch size 1 with batch norm", None, _set("data.batch_size=1", "model.batchnorm=true"), "batch norm"),
    ("one training image with batch norm", None, _set("data.train_size=1", "model.batchnorm=true"), "batch norm"),
    ("conv4 batch norm, 1 image (1x1 after pooling)", None,
     _set("model.arch=conv2", "model.width=0.0625", "data.shape=[1,2,2]", "data.batch_size=1", "model.batchnorm=true"),
     "batch norm"),
    ("conv4 width 1000", None, _set("model.arch=conv4", "model.width=1000", "data.shape=[3,32,32]"), "memory"),
    ("hidden 10^9 units", None, _set("model.hidden=[1000000000]"), "memory"),
    ("synthetic 20000x20000 images", None, _set("data.shape=[1,20000,20000]"), "memory"),
    ("image too small for conv8", None, _set("model.arch=conv8", "data.shape=[1,8,8]"), "at least 16"),
    ("batch size 1 without batch norm", None, _set("data.batch_size=1", "model.batchnorm=false"), OK),
    ("non-square input, fc", None, _set("data.shape=[1,28,20]"), OK),
    ("non-square input, conv4", None, _set("model.arch=conv4", "model.width=0.0625", "data.shape=[1,28,20]"), OK),
    ("non-square input, conv4 with batch norm", None,
     _set("model.arch=conv4", "model.width=0.0625", "model.batchnorm=true", "data.shape=[3,20,12]"), OK),
]


def _idx(path, dims, fill):
    data = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    count = 1
    for d in dims:
        count *= d
    path.write_bytes(data + bytes((fill(i) for i in range(count))))


def run(tmp_path, content, extra, recipe_name="recipe.yaml"):
    args = ["search"]
    if content is not None:
        (tmp_path / recipe_name).write_bytes(content)
        args.append(str(tmp_path / recipe_name))
    out = tmp_path / "runs" / "r"
    result = CliRunner().invoke(app, [*args, *SMALL, *extra, "--out", str(out), "--quiet", "--json"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result, out


@pytest.mark.parametrize("content,extra,fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_recipe(tmp_path, content, extra, fragment):
    result, out = run(tmp_path, content, extra)
    if fragment is OK:
        assert result.exit_code == 0, result.stderr
        assert (out / "summary.json").is_file() and not (out / ".lock").exists()
        return
    assert result.exit_code != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment.lower() in lines[0].lower() and len(lines[0]) < 400, lines[0]
    assert not (tmp_path / "runs").exists()  # a failed start leaves no (empty) run folder


def test_non_square_idx_images(tmp_path):
    """An MNIST-style folder of 28x20 images: fc sizes its input C*H*W, not C*H*H."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n in (("train", 32), ("t10k", 16)):
        _idx(folder / f"{split}-images-idx3-ubyte", (n, 28, 20), lambda i: (i * 7) % 256)
        _idx(folder / f"{split}-labels-idx1-ubyte", (n,), lambda i: i % 10)
    result, out = run(tmp_path, None, _set("data.dataset=mnist", f"data.data_dir={folder}"))
    assert result.exit_code == 0, result.stderr
    assert (out / "last.pt").is_file()


def test_recipe_that_is_a_folder_or_unreadable(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    result = CliRunner().invoke(app, ["search", str(tmp_path / "folder.yaml"), "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "not found" in result.stderr and len(result.stderr.strip().splitlines()) == 1
