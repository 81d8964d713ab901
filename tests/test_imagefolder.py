"""data.dataset=imagefolder: the user's class folders (train/ + val/, or one folder split by
data.test_fraction), stats given or computed, class names kept; search -> export -> eval."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from popcli.data import load_data
from popcli.errors import DataError, RecipeError
from popcli.recipe import DataConfig, from_dict

CLASSES = ("cat", "dog", "owl")
COLORS = {"cat": (220, 40, 40), "dog": (40, 200, 60), "owl": (50, 60, 230)}


def make_images(folder, per_class, *, size=(12, 10), gray=False, seed=0):
    """``per_class`` PNGs per class under folder/<class>/: the class color plus noise (W x H = ``size``)."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-30, 31, (size[1], size[0], 3))
            pixels = np.clip(np.array(COLORS[name]) + noise, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels[..., 0] if gray else pixels, "L" if gray else "RGB")
            image.save(folder / name / f"{i:03d}.png")
    return folder


def config(root, **kwargs):
    return DataConfig(dataset="imagefolder", data_dir=str(root), image_size=8, batch_size=8, eval_batch_size=64,
                      augment=False, **kwargs)


def test_one_folder_split_stats_and_class_names(tmp_path):
    make_images(tmp_path / "imgs", 10)
    splits = load_data(config(tmp_path / "imgs", test_fraction=0.2), seed=3)
    info = splits.info
    assert info.class_names == CLASSES and info.num_classes == 3 and info.shape == (3, 8, 8)
    assert (info.train_size, info.test_size) == (24, 6)  # 2 of each class's 10 held out
    # The stats are the training pixels' (in [0, 1], population std), rounded to 6 decimals.
    pixels = splits.train.images.transpose(0, 1).reshape(3, -1).double() / 255
    assert np.allclose(info.mean, pixels.mean(1).numpy(), atol=5e-7, rtol=0)
    assert np.allclose(info.std, pixels.std(1, unbiased=False).numpy(), atol=5e-7, rtol=0)
    test_y = torch.cat([y for _, y in splits.test.batches()])
    assert sorted(test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    # the same seed gives the same split and stats
    again = load_data(config(tmp_path / "imgs", test_fraction=0.2), seed=3)
    assert torch.equal(next(again.test.batches())[0], next(splits.test.batches())[0])
    assert again.info.mean == info.mean and again.info.std == info.std


def test_train_val_layout_given_stats_and_gray(tmp_path):
    make_images(tmp_path / "d" / "train", 4, gray=True)
    make_images(tmp_path / "d" / "val", 2, gray=True, seed=1)
    splits = load_data(config(tmp_path / "d", mean=[0.5], std=[0.25]), seed=0)
    assert splits.info.shape == (1, 8, 8) and splits.info.mean == (0.5,) and splits.info.std == (0.25,)
    assert (splits.info.train_size, splits.info.test_size) == (12, 6)
    x, _ = next(splits.test.batches())
    first = np.asarray(Image.open(tmp_path / "d" / "val" / "cat" / "000.png").resize((10, 8), Image.BILINEAR,
                                                                                       reducing_gap=None).crop((1, 0, 9, 8)))
    expected = (torch.from_numpy(first.copy()).float() * (1 / (255 * 0.25)) - 0.5 / 0.25)
    assert torch.equal(x[0, 0], expected)  # exactly the loader's normalization of the decoded pixels


@pytest.mark.parametrize("make,kwargs,fragment", [
    (lambda r: None, {}, "needs data.data_dir"),
    (lambda r: make_images(r / "x" / "cat", 3), {}, "at least two"),
    (lambda r: (make_images(r / "train", 2), (r / "val" / "other").mkdir(parents=True),
                Image.new("RGB", (4, 4)).save(r / "val" / "other" / "a.png"),
                (r / "val" / "more").mkdir(), Image.new("RGB", (4, 4)).save(r / "val" / "more" / "a.png")), {},
     "same class folders"),
    (lambda r: make_images(r, 1), {}, "cannot give both"),
    (lambda r: make_images(r, 3), {"mean": [0.5]}, "data.mean and data.std"),
    (lambda r: (make_images(r, 3), (r / "cat" / "bad.png").write_bytes(b"not a png")), {}, "cannot decode"),
])
def test_bad_folders_are_one_line_errors(tmp_path, make, kwargs, fragment):
    make(tmp_path)
    cfg = config(tmp_path, **kwargs) if "needs" not in fragment else DataConfig(dataset="imagefolder")
    with pytest.raises(DataError, match=fragment) as err:
        load_data(cfg, seed=0)
    assert "\n" not in str(err.value)


def test_recipe_keys_are_checked():
    with pytest.raises(RecipeError, match="data.test_fraction"):
        from_dict({"data": {"test_fraction": 0.0}})
    assert from_dict({"data": {"mean": [0, 1]}}).data.mean == [0.0, 1.0]


@pytest.mark.slow
def test_imagefolder_search_export_eval(tmp_path):
    from popcli import recipe as recipes
    from popcli.export import export
    from popcli.engine.loop import search

    make_images(tmp_path / "imgs" / "train", 16)
    make_images(tmp_path / "imgs" / "val", 4, seed=1)
    recipe = recipes.load(None, ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'imgs'}", "data.image_size=8",
                                 "data.batch_size=16", "model.arch=conv2", "model.width=0.125", "search.epochs=2",
                                 "search.lr=0.05", "search.threads=1"])
    summary = search(recipe, tmp_path / "run")
    assert summary["dataset"] == "imagefolder" and summary["steps"] == 6
    report = export(tmp_path / "run", tmp_path / "m.safetensors")
    assert report["verified"] and report["data"]["shape"] == [3, 8, 8] and report["data"]["num_classes"] == 3
    result = subprocess.run([sys.executable, "-m", "popcli", "eval", str(tmp_path / "m.safetensors"), "--batch-sizes",
                             "1", "--threads", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    assert evaluated["dataset"] == "imagefolder" and evaluated["test_images"] == 12
    accuracies = {row["engine"]: row["top1"] for row in evaluated["accuracy"]}
    assert all(acc == pytest.approx(summary["test_acc"]) for acc in accuracies.values()), (accuracies, summary)
