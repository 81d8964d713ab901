"""Where a dataset lives on disk: the search roots, the accepted layouts, and the missing-data error.

Roots, first match wins: ``data.data_dir``, ``$POPCLI_DATA``, the user cache
(``$XDG_CACHE_HOME`` or ``~/.cache``)``/popcli/data``, then the system folders (``SYSTEM_ROOTS``,
where Debian's ``dataset-*`` packages install). At each root a dataset may sit directly in the
root, in torchvision's layout (``FashionMNIST/raw``, ``cifar-10-batches-py``) or in a folder named
after it. This module only finds folders; reading them is ``idx`` and ``folders``' job.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

SYSTEM_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

# Sub-folders of a root to try, most specific first ("" = the root itself).
LAYOUTS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "fashion_mnist", ""),
    "mnist": ("mnist", "MNIST/raw", "MNIST", ""),
    "cifar10": ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", ""),
    "cifar100": ("cifar-100-python", "cifar100/cifar-100-python", "cifar100", ""),
    "imagenet": ("imagenet", "ILSVRC2012", "ImageNet", ""),
}

# A folder holds the dataset if it has any of these (missing siblings are reported when read).
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MARKERS: dict[str, tuple[str, ...]] = {
    "cifar10": ("data_batch_1", "test_batch"),
    "cifar100": ("train", "test"),
    "imagenet": ("train", "val"),
}

_HINTS = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, pass --data-dir DIR, or set data.download=true",
    "mnist": "pass --data-dir DIR (a folder with the four MNIST IDX files), or set data.download=true",
    "cifar10": "pass --data-dir DIR (a folder holding cifar-10-batches-py), or set data.download=true",
    "cifar100": "pass --data-dir DIR (a folder holding cifar-100-python), or set data.download=true",
    "imagenet": "download ILSVRC2012 from image-net.org and pass --data-dir DIR (a folder with train/ and val/ class folders)",
}


def user_cache() -> Path:
    """The user cache root for datasets (also where data.download=true writes)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "popcli" / "data"


def search_roots(data_dir: str | None) -> list[Path]:
    """The roots in resolution order (duplicates removed, order kept)."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("POPCLI_DATA"):
        roots.append(Path(os.environ["POPCLI_DATA"]).expanduser())
    roots.append(user_cache())
    roots.extend(SYSTEM_ROOTS)
    return list(dict.fromkeys(roots))


def _holds(name: str, folder: Path) -> bool:
    if not folder.is_dir():
        return False
    if name in ("fashion-mnist", "mnist"):
        names = {p.name for p in folder.iterdir()}
        return any(n.replace(".idx", "-idx").startswith(stem) for n in names for stem in IDX_STEMS)
    if name == "imagenet":
        return all((folder / m).is_dir() for m in MARKERS[name])
    return any((folder / m).is_file() for m in MARKERS[name])


def in_root(name: str, root: str | Path) -> Path | None:
    """The folder under ``root`` (in one of ``name``'s layouts) that holds it, or None."""
    root = Path(root).expanduser()
    if name not in LAYOUTS:  # imagefolder: the folder named is the dataset itself
        return root if root.is_dir() else None
    for layout in LAYOUTS[name]:
        folder = root / layout if layout else root
        if _holds(name, folder):
            return folder
    return None


def find_dataset(name: str, data_dir: str | None) -> Path | None:
    """The folder holding ``name``: in ``data_dir`` alone when it is given, else the first match
    across the roots x layouts; None when nothing holds it.

    An explicit ``data_dir`` is never silently passed over for another copy of the data: one
    that does not exist is an error, one that lacks the data gives None (``not_found`` then
    names that folder alone).
    """
    if data_dir:
        if not Path(data_dir).expanduser().is_dir():
            raise DataError(f"data folder {data_dir!r} (data.data_dir / --data-dir) does not exist; fix the path, or "
                            "drop data.data_dir to search $POPCLI_DATA, the user cache and the system folders")
        return in_root(name, data_dir)
    for root in search_roots(None):
        folder = in_root(name, root)
        if folder is not None:
            return folder
    return None


def not_found(name: str, data_dir: str | None) -> DataError:
    if data_dir:
        return DataError(f"{name} not found in data folder {data_dir!r} (data.data_dir / --data-dir; looked in it and "
                         f"its sub-folders {', '.join(l for l in LAYOUTS[name] if l)}); put the files there, drop "
                         f"data.data_dir to search the usual places, or {_HINTS[name]}")
    looked = ", ".join(str(r) for r in search_roots(data_dir))
    return DataError(f"{name} not found (looked in: {looked}); {_HINTS[name]}")
