"""The artifact header schema, one source of truth per fact, format version 2 vs 1, and a reader
written from docs/FORMAT.md alone. Every case of issue 11's "hostile artifacts" is one row."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import popcli
from popcli import artifact
from popcli.errors import ArtifactError
from popcli.artifact import inspect

from artifact_fuzz import _render, json_edit, make_bases, parts, seal

GOLDEN = Path(__file__).parent / "golden"
V1_FILES = sorted(GOLDEN.glob("v1_*.safetensors"))


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> list[Path]:
    """fc + BN (rans), conv2 with a dense last layer (packbits), dense fc: all format version 2."""
    return make_bases(tmp_path_factory.mktemp("bases"))


# --------------------------------------------------------------------------- versions 1 and 2


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: p.stem)
def test_version_1_files_still_load_exactly(path, tmp_path):
    """A v1 file (written by the v1 writer) loads; re-saved it is a v2 file of the same model."""
    old = artifact.read(path)
    assert old.metadata["format_version"] == "1" and isinstance(json.loads(old.metadata["recipe"])["seed"], int)
    model = popcli.load(path, mode="search")  # subnet layers: what a saver writes
    new = popcli.save(model, tmp_path / "v2.safetensors", recipe=old.recipe, data_info=old.data_info, codec=old.codec)
    assert new.metadata["format_version"] == "2"
    assert json.loads(new.metadata["recipe"])["seed"] == str(old.recipe.seed)  # exact in any JSON parser
    assert new.layers == old.layers and sorted(new.tensors) == sorted(old.tensors)
    x = torch.randn(5, *old.data_info["shape"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(popcli.load(tmp_path / "v2.safetensors", mode="search")(x), model(x))
    has_0d = any(t.ndim == 0 for t in old.tensors.values())
    assert (new.header.content_sha256 != old.header.content_sha256) or not has_0d


def test_seed_near_2_63_is_a_string_in_the_recipe():
    art = artifact.read(GOLDEN / "v1_fc_bn_rans.safetensors")
    assert art.recipe.seed == 9007199254740993 and float(art.recipe.seed) != art.recipe.seed  # a double rounds it


# --------------------------------------------------------------------------- a reader from the document alone

_DTYPE_STR = {"U8": "|u1", "I8": "|i1", "BOOL": "|b1", "F16": "<f2", "F32": "<f4", "F64": "<f8", "I16": "<i2",
              "I32": "<i4", "I64": "<i8"}  # docs/FORMAT.md, content_sha256


def doc_content_sha256(path: Path) -> tuple[str, str]:
    """(content_sha256 computed as docs/FORMAT.md says, the stored one), without numpy or safetensors."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    version = meta["format_version"]
    digest = hashlib.sha256()
    for name in sorted(header):  # code point order
        entry = header[name]
        shape = entry["shape"] if entry["shape"] or version != "1" else [1]
        text = "[" + ", ".join(str(d) for d in shape) + "]"
        digest.update(f"{name}\n{_DTYPE_STR[entry['dtype']]}\n{text}\n".encode())
        start, end = entry["data_offsets"]
        digest.update(data[8 + n + start:8 + n + end])
    rest = {k: v for k, v in meta.items() if k != "content_sha256"}
    digest.update(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest(), meta["content_sha256"]


def test_a_reader_following_the_document_accepts_every_file(bases):
    for path in [*bases, *V1_FILES]:  # batch norm (a 0-d num_batches_tracked), rans, packbits, dense; v1 and v2
        computed, stored = doc_content_sha256(path)
        assert computed == stored, path.name
        meta = parts(path)[1]
        recipe, data, layers = (json.loads(meta[k]) for k in ("recipe", "data", "layers"))
        assert str(recipe["seed"]) == meta["seed"] and recipe["model"]["arch"] == meta["arch"]  # copies agree
        assert float(meta["density"]) == recipe["search"]["density"]
        if meta["mask_codec"] == "packbits" and layers:
            raw = np.frombuffer(path.read_bytes(), np.uint8)  # the masks tensor, unpacked by the rule in the doc
            n_bits = sum(int(np.prod(r["shape"])) for r in layers)
            masks = artifact.read(path).tensors["masks"]
            bits = [(int(masks[i // 8]) >> (i % 8)) & 1 for i in range(n_bits)]
            assert sum(bits) == sum(r["kept"] for r in layers) and raw.size > 0
            assert int(masks[-1]) >> (n_bits % 8 or 8) == 0  # padding bits are zero


# --------------------------------------------------------------------------- issue 11's hostile headers

META_CASES = [  # (metadata key, new value, fragment of the one-line error)
    ("init_density", "abc", "'init_density' says 'abc'"),
    ("metrics", "not json", "'metrics' is not valid JSON"),
    ("metrics", "5", "'metrics' is a JSON int, expected a JSON dict"),
    ("metrics", '{"test_acc": "high"}', "'metrics.test_acc' is 'high'"),
    ("metrics", '{"test_loss": NaN}', "'metrics' is not valid JSON"),
    ("checkpoint_bytes", "abc", "'checkpoint_bytes' holds 'abc'"),
    ("density", "Infinity", "'density' says 'Infinity'"),
    ("data", "[]", "'data' is a JSON list"),
    ("recipe", "{}", "'recipe' has no seed"),
    ("recipe", "[]", "'recipe' is a JSON list"),
    ("layers", "[]", "masked layers of 'fc' built by this popcli differ"),
    ("layers", "{}", "'layers' is a JSON dict"),
    ("arch", "[/x]", "'arch' says '[/x]' but the recipe says 'fc'"),
    ("torch_version", "2.1\x1b[31m", "'torch_version' is not a short printable"),
    ("seed", "007", "'seed' holds '007'"),
    ("format_version", "01", "format_version '01'"),
    ("mask_codec", "zstd", "unknown mask codec"),
]
JSON_CASES = [  # (metadata key, JSON path, new value, fragment)
    ("data", ("shape",), [1, 27, 28], "synthetic data has [1, 8, 8]"),
    ("data", ("num_classes",), 11, "says shape [1, 8, 8] and 11 classes"),
    ("data", ("num_classes",), -10, "'data.num_classes' holds '-10'"),
    ("recipe", ("model", "arch"), "conv4", "'arch' says 'fc' but the recipe says 'conv4'"),
    ("recipe", ("model", "arch"), "DELETE", "does not state model.arch"),
    ("recipe", ("model", "width"), 2.0, "masked layers of 'fc' built by this popcli differ"),
    ("recipe", ("model", "hidden"), [300, 100], "masked layers of 'fc' built by this popcli differ"),
    ("recipe", ("model", "batchnorm"), False, "'fcbn1.num_batches_tracked' is unexpected in the file"),
    ("recipe", ("model", "init"), "kaiming_normal", "'init' says 'signed_constant' but the recipe says"),
    ("recipe", ("search", "method"), "supermask", "'method' says 'edge-popup' but the recipe says 'supermask'"),
    ("recipe", ("search", "density"), 0.25, "'density' says '0.1' but the recipe gives 0.25"),
    ("recipe", ("search", "global_topk"), "DELETE", "does not state search.global_topk"),
    ("recipe", ("seed",), 7, "no seed as a decimal string"),
    ("layers", (0, "kept"), 3, "keeps 3 weights of layer 'fc1', but edge-popup at the recipe's density 0.1 keeps 205"),
    ("layers", (0, "shape"), [100000, 100000], "keeps 1000000000"),  # refused before any of its 40 GB is allocated
    ("layers", (0, "shape"), [2**40, 64], "'layers[0].shape' holds"),
    ("layers", (0, "name"), "[/x]", "masked layers of 'fc' built by this popcli differ"),
    ("layers", (0, "sha256"), "XYZ", "'layers[0].sha256' is not 64 lowercase hex"),
]


def expect_one_line(path: Path, fragment: str) -> None:
    with pytest.raises(ArtifactError) as info:
        popcli.load(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
    try:  # inspect refuses the header, or reads it and reports what verification found
        assert not inspect(path)["verified"]
    except ArtifactError:
        pass


@pytest.mark.parametrize("key,value,fragment", META_CASES, ids=[f"{c[0]}={c[1]!r}" for c in META_CASES])
def test_hostile_metadata_values(bases, tmp_path, key, value, fragment):
    tensors, meta = parts(bases[0])
    expect_one_line(seal(tmp_path / "m.safetensors", tensors, {**meta, key: value}), fragment)


@pytest.mark.parametrize("key,path,value,fragment", JSON_CASES, ids=[f"{c[0]}.{'.'.join(map(str, c[1]))}={c[2]!r}"
                                                                      for c in JSON_CASES])
def test_hostile_json_edits(bases, tmp_path, key, path, value, fragment):
    tensors, meta = parts(bases[0])
    expect_one_line(seal(tmp_path / "m.safetensors", tensors, json_edit(meta, key, path, value)), fragment)


@pytest.mark.parametrize("stat,value,fragment", [("running_var", -1.0, "negative values"),
                                                 ("running_var", np.nan, "NaN or infinite"),
                                                 ("running_mean", np.inf, "NaN or infinite"),
                                                 ("num_batches_tracked", -1, "negative values")])
def test_batch_norm_statistics_no_model_can_hold(bases, tmp_path, stat, value, fragment):
    tensors, meta = parts(bases[0])
    key = f"state.fcbn1.{stat}"
    changed = tensors[key].copy()
    changed.reshape(-1)[0] = value
    expect_one_line(seal(tmp_path / "m.safetensors", {**tensors, key: changed}, meta), fragment)


def test_packbits_padding_bits_must_be_zero(bases, tmp_path):
    tensors, meta = parts(bases[1])  # conv2: packbits
    n_bits = sum(r.numel for r in artifact.read(bases[1]).layers)
    assert n_bits % 8, "the test needs padding bits"
    masks = tensors["masks"].copy()
    masks[-1] |= 0x80
    expect_one_line(seal(tmp_path / "m.safetensors", {**tensors, "masks": masks}, meta), "padding bits")


def test_duplicate_keys_and_harmless_edits(bases, tmp_path):
    tensors, meta = parts(bases[0])
    dup = meta["data"][:-1] + ',"num_classes":4}'  # a JSON object naming num_classes twice
    expect_one_line(seal(tmp_path / "d.safetensors", tensors, {**meta, "data": dup}), "'data' is not valid JSON")
    # unknown optional keys and a version string with markup are fine, and print as written
    ok = seal(tmp_path / "ok.safetensors", tensors, {**meta, "popcli_version": "[/x] 9", "preprocess.mean": "[0.5]"})
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(popcli.load(ok)(x), popcli.load(bases[0])(x))
    assert "popcli [/x] 9" in _render(inspect(ok))


def test_writer_keeps_metrics_strict_json(bases, tmp_path):
    model = popcli.load(bases[0], mode="search")
    art = artifact.read(bases[0])
    written = popcli.save(model, tmp_path / "n.safetensors", recipe=art.recipe, data_info=art.data_info,
                          metrics={"test_acc": 0.5, "test_loss": float("nan"), "note": Path("x")})
    assert json.loads(written.metadata["metrics"]) == {"test_acc": 0.5, "test_loss": None, "note": "x"}


def test_cli_inspect_prints_markup_as_text_and_refuses_in_one_line(bases, tmp_path):
    tensors, meta = parts(bases[0])
    bad = seal(tmp_path / "[bad].safetensors", tensors, {**meta, "arch": "[/x]"})
    good = seal(tmp_path / "good.safetensors", tensors, {**meta, "torch_version": "[/red]2.1"})
    result = subprocess.run([sys.executable, "-m", "popcli", "inspect", str(bad)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # a corrupt artifact: runtime
    assert len(result.stderr.strip().splitlines()) == 1 and "'[/x]'" in result.stderr and "[bad]" in result.stderr
    result = subprocess.run([sys.executable, "-m", "popcli", "inspect", str(good)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "torch [/red]2.1" in result.stdout, result.stderr
