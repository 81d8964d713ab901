"""popcli.data: synthetic task, IDX / CIFAR / ImageFolder readers, folder resolution, resume."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from popcli.data import DATASETS, DatasetInfo, Loader, Splits, load_data
from popcli.data import resolve
from popcli.data.idx import read_idx
from popcli.data.facts import FACTS
from popcli.data.memory import Augment, crop_flip
from popcli.errors import DataError
from popcli.recipe import DataConfig
from popcli.rng import torch_generator

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def isolated_roots(monkeypatch, tmp_path):
    """No $POPCLI_DATA, an empty user cache and no system folders unless a test sets them."""
    monkeypatch.delenv("POPCLI_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(resolve, "SYSTEM_ROOTS", (tmp_path / "no-system",))


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


def indexed_images(n: int, offset: int = 0) -> np.ndarray:
    """[n, 28, 28] uint8 images whose pixels (0, 0) and (0, 1) encode the index i + offset."""
    images = np.full((n, 28, 28), 7, dtype=np.uint8)
    ids = np.arange(n) + offset
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images


def write_mnist(folder: Path, n_train: int = 64, n_test: int = 32, gz: bool = True) -> Path:
    write_idx(folder / "train-images-idx3-ubyte", indexed_images(n_train), gz)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(n_train) % 10, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", indexed_images(n_test, 10000), gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, gz)
    return folder


def decode_ids(x: torch.Tensor) -> list[int]:
    """Undo Fashion-MNIST normalization and read back the indices of ``indexed_images``."""
    pixels = torch.round((x[:, 0, 0, :2] * FMNIST_STD + FMNIST_MEAN) * 255).long()
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


def fmnist(folder: Path, **kw) -> DataConfig:
    return DataConfig(dataset="fashion-mnist", data_dir=str(folder), **kw)


def synthetic(**kw) -> DataConfig:
    base = dict(dataset="synthetic", shape=[3, 8, 8], num_classes=4, train_size=200, test_size=64, batch_size=32, eval_batch_size=50)
    return DataConfig(**{**base, **kw})


def write_cifar(folder: Path, per_batch: int = 12) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, per_batch))}
        (folder / name).write_bytes(pickle.dumps(entry))
    return folder


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_info():
    splits = load_data(synthetic(), seed=3)
    assert isinstance(splits, Splits) and isinstance(splits.train, Loader)
    assert splits.info == DatasetInfo("synthetic", (3, 8, 8), 4, 200, 0, 64, "synthetic")
    assert splits.val is None
    assert len(splits.train) == 6 and splits.train.batch_size == 32 and splits.train.num_samples == 200
    train = list(splits.train.batches(0))
    assert len(train) == 6 and all(x.shape == (32, 3, 8, 8) for x, _ in train)  # last partial dropped
    x, y = train[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.device.type == "cpu"
    test = list(splits.test.batches())
    assert [len(y) for _, y in test] == [50, 14]  # eval keeps the last partial batch


def test_synthetic_deterministic_per_seed():
    a, b, c = (load_data(synthetic(), seed=s) for s in (1, 1, 2))
    for (xa, ya), (xb, yb) in zip(a.train.batches(2), b.train.batches(2)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(next(a.test.batches())[0], next(c.test.batches())[0])


def test_synthetic_is_learnable():
    """Class means from train classify test well above chance (nearest class mean)."""
    splits = load_data(synthetic(train_size=400, test_size=200), seed=0)
    xs, ys = zip(*splits.train.batches(0))
    x, y = torch.cat(xs).flatten(1), torch.cat(ys)
    means = torch.stack([x[y == k].mean(0) for k in range(4)])  # [K, C*H*W]
    off_diag = torch.cdist(means, means) + torch.eye(4) * 1e9
    assert off_diag.min() > 3.0  # prototypes are far apart relative to the per-pixel noise
    tx, ty = (torch.cat(t) for t in zip(*splits.test.batches()))
    predicted = torch.cdist(tx.flatten(1), means).argmin(1)
    assert (predicted == ty).float().mean() > 0.9
    assert torch.bincount(ty, minlength=4).min() >= 45  # balanced classes


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_and_raw(tmp_path, gz):
    folder = write_mnist(tmp_path / "fm", n_train=64, n_test=30, gz=gz)
    splits = load_data(fmnist(folder, batch_size=16, eval_batch_size=8), seed=0)
    assert splits.info == DatasetInfo("fashion-mnist", (1, 28, 28), 10, 64, 0, 30, str(folder), (FMNIST_MEAN,),
                                      (FMNIST_STD,), FACTS["fashion-mnist"].class_names)
    assert splits.info.class_names[0] == "T-shirt/top" and len(splits.info.class_names) == 10
    xs, ys = zip(*splits.test.batches())
    assert decode_ids(torch.cat(xs)) == list(range(10000, 10030))  # eval: in file order
    assert torch.cat(ys).tolist() == [i % 10 for i in range(30)]
    x = torch.cat(xs)
    assert torch.allclose(x[:, 0, 5, 5], torch.full((30,), (7 / 255 - FMNIST_MEAN) / FMNIST_STD), atol=1e-6)
    train_ids = sorted(i for x, _ in splits.train.batches(0) for i in decode_ids(x))
    assert train_ids == list(range(64))


def test_torchvision_layout_and_dotted_names(tmp_path):
    write_mnist(tmp_path / "root" / "FashionMNIST" / "raw")
    assert load_data(fmnist(tmp_path / "root"), seed=0).info.source == str(tmp_path / "root" / "FashionMNIST" / "raw")
    folder = tmp_path / "kaggle"
    write_idx(folder / "train-images.idx3-ubyte", indexed_images(20))
    write_idx(folder / "train-labels.idx1-ubyte", np.zeros(20))
    write_idx(folder / "t10k-images.idx3-ubyte", indexed_images(5))
    write_idx(folder / "t10k-labels.idx1-ubyte", np.zeros(5))
    cfg = DataConfig(dataset="mnist", data_dir=str(tmp_path / "kaggle"))
    assert load_data(cfg, seed=0).info.train_size == 20


def _corrupt(folder: Path, kind: str) -> Path:
    path = folder / "train-images-idx3-ubyte"
    raw = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    blob = gzip.decompress(raw)
    if kind == "magic":
        path.write_bytes(b"\x00\x00\x08\x01" + blob[4:])
    elif kind == "truncated":
        path.write_bytes(blob[:-100])
    elif kind == "gzip":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "not-gzip":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(b"this is not gzip data at all")
    elif kind == "count":
        path.write_bytes(blob)
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(63))
        (folder / "train-labels-idx1-ubyte.gz").unlink()
        return folder / "train-labels-idx1-ubyte"
    return path


@pytest.mark.parametrize("kind", ["magic", "truncated", "gzip", "not-gzip", "count"])
def test_corrupt_idx_names_the_file(tmp_path, kind):
    folder = write_mnist(tmp_path / "fm")
    bad = _corrupt(folder, kind)
    with pytest.raises(DataError) as err:
        load_data(fmnist(folder), seed=0)
    message = str(err.value)
    assert str(bad) in message and "\n" not in message


def test_read_idx_checks_dimensions(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(5))
    assert read_idx(path, 1).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="magic"):
        read_idx(path, 3)


def test_missing_file_in_folder(tmp_path):
    folder = write_mnist(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_data(fmnist(folder), seed=0)


def test_label_out_of_range(tmp_path):
    folder = write_mnist(tmp_path / "fm")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(32, 10), gz=True)
    with pytest.raises(DataError, match="out of range"):
        load_data(fmnist(folder), seed=0)


# --------------------------------------------------------------------------- resolution


def test_resolution_order(tmp_path, monkeypatch):
    write_mnist(tmp_path / "given", n_train=10)
    write_mnist(tmp_path / "env" / "fashion-mnist", n_train=20)
    write_mnist(tmp_path / "xdg-cache" / "popcli" / "data" / "FashionMNIST" / "raw", n_train=30)
    write_mnist(tmp_path / "system" / "fashion-mnist", n_train=40)
    monkeypatch.setattr(resolve, "SYSTEM_ROOTS", (tmp_path / "system",))
    monkeypatch.setenv("POPCLI_DATA", str(tmp_path / "env"))
    sizes = lambda cfg: load_data(cfg, seed=0).info.train_size  # noqa: E731
    assert sizes(fmnist(tmp_path / "given")) == 10
    assert sizes(DataConfig()) == 20
    monkeypatch.delenv("POPCLI_DATA")
    assert sizes(DataConfig()) == 30
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert sizes(DataConfig()) == 40


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):  # a mistyped --data-dir never falls back
        load_data(fmnist(tmp_path / "nothing-here"), seed=0)
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(DataError) as err:
        load_data(fmnist(tmp_path / "nothing-here"), seed=0)
    message = str(err.value)
    assert "fashion-mnist not found" in message and "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "data.download=true" in message and str(tmp_path / "nothing-here") in message
    with pytest.raises(DataError, match="--data-dir"):
        load_data(DataConfig(dataset="cifar10"), seed=0)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError) as err:
        load_data(DataConfig(dataset="fashion"), seed=0)
    assert all(name in str(err.value) for name in DATASETS)


# --------------------------------------------------------------------------- order, resume, augmentation


@pytest.mark.parametrize("augment", [False, True])
def test_resume_reproduces_the_tail(augment):
    loader = load_data(synthetic(augment=augment), seed=5).train
    assert (loader.augment.active) is augment
    full = list(loader.batches(epoch=3))
    for start in (0, 1, 4, len(full)):
        tail = list(loader.batches(epoch=3, start_step=start))
        assert len(tail) == len(full) - start
        for (xa, ya), (xb, yb) in zip(tail, full[start:]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_epochs_differ_and_positions_checked():
    loader = load_data(synthetic(augment=True), seed=5).train
    assert not torch.equal(next(loader.batches(0))[1], next(loader.batches(1))[1])
    with pytest.raises(DataError):
        next(loader.batches(epoch=0, start_step=-1))


def test_augmentation_changes_pixels_but_not_labels():
    on = load_data(synthetic(augment=True), seed=1).train
    off = load_data(synthetic(augment=False), seed=1).train
    for (xa, ya), (xb, yb) in zip(on.batches(0), off.batches(0)):
        assert torch.equal(ya, yb) and not torch.equal(xa, xb)


def test_crop_flip_matches_a_per_image_reference():
    x = torch.randint(0, 256, (16, 3, 8, 6), dtype=torch.uint8)
    aug = Augment(pad=2, flip=True)
    out = crop_flip(x, aug, torch_generator(0, "t"))
    gen = torch_generator(0, "t")  # the same draws, in the same order
    dy, dx = torch.randint(0, 5, (16,), generator=gen), torch.randint(0, 5, (16,), generator=gen)
    flip = torch.rand(16, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(16):
        ref = padded[b, :, dy[b]:dy[b] + 8, dx[b]:dx[b] + 6]
        assert torch.equal(out[b], ref.flip(2) if flip[b] else ref)


def test_small_train_keeps_one_partial_batch():
    loader = load_data(synthetic(train_size=10, batch_size=32), seed=0).train
    assert len(loader) == 1 and next(loader.batches())[0].shape[0] == 10


# --------------------------------------------------------------------------- validation split


def test_val_split_disjoint_and_deterministic(tmp_path):
    folder = write_mnist(tmp_path / "fm", n_train=300)
    cfg = fmnist(folder, val_fraction=0.2, batch_size=16, eval_batch_size=25)
    splits = load_data(cfg, seed=4)
    assert (splits.info.train_size, splits.info.val_size) == (240, 60)
    train_ids = [i for x, _ in splits.train.batches(0) for i in decode_ids(x)]
    val_ids = [i for x, _ in splits.val.batches() for i in decode_ids(x)]
    assert not set(train_ids) & set(val_ids) and sorted(train_ids + val_ids) == list(range(300))
    again = [i for x, _ in load_data(cfg, seed=4).val.batches() for i in decode_ids(x)]
    other = [i for x, _ in load_data(cfg, seed=5).val.batches() for i in decode_ids(x)]
    assert again == val_ids and other != val_ids


# --------------------------------------------------------------------------- CIFAR and ImageFolder


def test_cifar_folder_default_augmentation(tmp_path):
    write_cifar(tmp_path / "root" / "cifar-10-batches-py")
    splits = load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "root"), batch_size=8), seed=0)
    assert splits.info.shape == (3, 32, 32) and splits.info.train_size == 60 and splits.info.test_size == 12
    assert splits.train.augment == Augment(pad=4, flip=True)
    full = list(splits.train.batches(1))
    for (xa, _), (xb, _) in zip(splits.train.batches(1, start_step=2), full[2:]):
        assert torch.equal(xa, xb)


def test_cifar_corrupt_batch(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path)), seed=0)


def test_imagenet_folder_tree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    cfg = DataConfig(dataset="imagenet", data_dir=str(tmp_path), image_size=16, workers=0, batch_size=4, eval_batch_size=3)
    splits = load_data(cfg, seed=0)
    assert splits.info == DatasetInfo("imagenet", (3, 16, 16), 2, 10, 0, 4, str(tmp_path), (0.485, 0.456, 0.406),
                                      (0.229, 0.224, 0.225), ("cat", "dog"))
    full = list(splits.train.batches(2))
    assert len(full) == 2 and full[0][0].shape == (4, 3, 16, 16)
    tail = list(splits.train.batches(2, start_step=1))
    assert torch.equal(tail[0][0], full[1][0]) and torch.equal(tail[0][1], full[1][1])
    assert [len(y) for _, y in splits.test.batches()] == [3, 1]


# --------------------------------------------------------------------------- the real data


def test_real_fashion_mnist(monkeypatch):
    if not (REAL_FMNIST / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL_FMNIST} is missing on CI; install it with `apt-get install dataset-fashion-mnist`")
        pytest.skip(f"{REAL_FMNIST} not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(resolve, "SYSTEM_ROOTS", (REAL_FMNIST.parent,))
    splits = load_data(DataConfig(dataset="fashion-mnist"), seed=0)
    info = splits.info
    assert (info.train_size, info.test_size, info.shape, info.num_classes) == (60000, 10000, (1, 28, 28), 10)
    assert info.source == str(REAL_FMNIST)
    x, y = next(splits.train.batches())
    assert x.shape == (128, 1, 28, 28) and abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3
    labels = torch.cat([y for _, y in splits.test.batches()])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 1000))
