"""Hostile data folders (issue 20, section 5): images and folder names that made popcli print a
traceback are one DataError line and exit 1, refused when the search starts, before any work:
a 20000x20000 PNG (decompression bomb), a 1x2,000,000 PNG (a resize to the input would need
gigabytes), a class folder whose name is not UTF-8, class names holding a newline or an ANSI
escape; ``popcli runs --csv`` over a run folder whose name is not UTF-8."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from popcli.cli import get_app
from popcli.data.imagefolder import open_image, read_image_folder
from popcli.errors import DataError
from popcli.recipe import DataConfig

app = get_app()


def png(path: Path, width: int, height: int, *, pixels: bool = True) -> Path:
    """A grayscale PNG of ``width`` x ``height`` zeros written chunk by chunk (no image in memory);
    ``pixels=False`` writes the header only (PIL refuses a bomb from its header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    body = b""
    if pixels:
        compressor, row = zlib.compressobj(9), b"\x00" * (width + 1)  # filter byte + a row of zeros
        body = chunk(b"IDAT", b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IEND", b""))
    return path


def good_png(path: Path, value: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)
    return path


def image_folder(root: Path, names: list, bad: tuple[str, Path] | None = None) -> Path:
    """Class folders (names str or bytes) with three good images each, plus ``bad`` in the first."""
    root.mkdir(parents=True)
    for i, name in enumerate(names):
        folder = os.path.join(os.fsencode(root), name if isinstance(name, bytes) else name.encode())
        os.mkdir(folder)
        for j in range(3):
            good_png(Path(os.fsdecode(folder)) / f"{j}.png", 40 * i + j)
    if bad is not None:
        kind, maker = bad
        maker(Path(os.fsdecode(os.path.join(os.fsencode(root), names[0] if isinstance(names[0], bytes)
                                            else names[0].encode()))) / f"bad-{kind}.png")
    return root


def search(root: Path, out: Path):
    return CliRunner().invoke(app, ["search", "--set", "data.dataset=imagefolder", "--set", f"data.data_dir={root}",
                                    "--set", "data.image_size=8", "--set", "model.arch=fc", "--set",
                                    "model.hidden=[8]", "--set", "search.epochs=1", "--set", "search.max_steps=1",
                                    "--set", "data.test_fraction=0.34", "--out", str(out), "-q"])


def refused_at_start(result, out: Path, fragment: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (result.stderr, result.exception)
    assert fragment in lines[0], lines[0]
    assert not (out / "last.pt").exists() and not (out / "recipe.yaml").exists()  # before any work
    return lines[0]


BAD_IMAGES = {
    "bomb-20000x20000": (lambda p: png(p, 20000, 20000, pixels=False), "more pixels than PIL decodes safely"),
    "tall-1x2000000": (lambda p: png(p, 1, 2_000_000), "1x2000000, its sides more than 64 times apart"),
    "wide-2000000x1": (lambda p: png(p, 2_000_000, 1), "2000000x1, its sides more than 64 times apart"),
    "not-an-image": (lambda p: p.write_bytes(b"\x89PNG garbage"), "cannot decode image"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_hostile_images_are_one_line_at_the_start(tmp_path, kind):
    maker, fragment = BAD_IMAGES[kind]
    root = image_folder(tmp_path / "data", ["cats", "dogs"], (kind, maker))
    line = refused_at_start(search(root, tmp_path / "run"), tmp_path / "run", fragment)
    assert f"bad-{kind}.png" in line


def test_the_imagenet_loader_opens_images_the_same_way(tmp_path):
    from popcli.data.imagenet import SeededImages, image_folder as imagenet_folder

    root = image_folder(tmp_path / "train", ["a", "b"], ("bomb", lambda p: png(p, 20000, 20000, pixels=False)))
    folder = imagenet_folder(root)
    bad = next(i for i, (path, _) in enumerate(folder.samples) if "bad-" in path)
    with pytest.raises(DataError, match="more pixels than PIL decodes safely"):
        SeededImages(folder, [bad], 8)[0, None]
    with open_image(Path(folder.samples[bad - 1][0])) as img:  # the good ones still open
        assert img.size == (12, 12)


@pytest.mark.parametrize("name,shown", [(b"caf\xe9", r"caf\xe9"), ("two\nlines", r"two\nlines"),
                                        ("\x1b[31mred", r"\x1b[31mred"), ("rtl\u202eevil", r"rtl\u202eevil")])
def test_class_names_that_are_not_printable_text_are_refused_when_the_search_starts(tmp_path, name, shown):
    root = image_folder(tmp_path / "data", [name, "plain"])
    line = refused_at_start(search(root, tmp_path / "run"), tmp_path / "run", "is not a usable class name")
    assert "\n" not in line and "\x1b" not in line and "rename the folder" in line
    assert f"'{shown}'" in line
    with pytest.raises(DataError, match=re.escape(shown)):
        read_image_folder(DataConfig(dataset="imagefolder", data_dir=str(root), image_size=8), 0)


def test_printable_class_names_still_search(tmp_path):
    root = image_folder(tmp_path / "data", ["chat noir", "Hund-2", "猫"])
    result = search(root, tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_acc"] is not None


def test_runs_csv_over_a_run_name_that_is_not_utf8(tmp_path):
    runs = tmp_path / "runs"
    for name in (b"plain", b"r\xff\xfeun"):
        folder = os.path.join(os.fsencode(runs), name)
        os.makedirs(folder)
        Path(os.fsdecode(folder), "summary.json").write_text(json.dumps({"test_acc": 0.5, "arch": "fc"}))
    result = CliRunner().invoke(app, ["runs", str(runs), "--csv", str(tmp_path / "index.csv")])
    assert result.exit_code == 0 and "Traceback" not in result.output, (result.output, result.exception)
    text = (tmp_path / "index.csv").read_text(encoding="utf-8")
    assert "r\\xff\\xfeun" in text and "plain" in text
