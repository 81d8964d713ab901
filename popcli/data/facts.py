"""What popcli knows of each dataset it reads by name, in one table: input shape, classes,
normalization and class names. The loaders, the artifact's preprocessing entry and the export of
old checkpoints all read it here (docs/FORMAT.md, "Preprocessing", lists the same values).

``mean``/``std`` are per channel, of the training pixels scaled to [0, 1]: what the loader
normalizes with (``x = (pixels / 255 - mean) / std``). ``shape`` is one model input [C, H, W] as
popcli loads it (None: the recipe decides, e.g. imagenet's ``data.image_size``); ``num_classes``
None: counted from the folders. ``class_names`` follow the label order of the dataset's own
files (None: not listed here, as cifar100's 100 names). Synthetic data (already standardized),
``imagefolder`` and ``user`` data have no entry: their facts come with the data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Facts:
    shape: tuple[int, int, int] | None
    num_classes: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None


FACTS: dict[str, Facts] = {
    "fashion-mnist": Facts((1, 28, 28), 10, (0.2860,), (0.3530,),
                           ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                            "Ankle boot")),
    "mnist": Facts((1, 28, 28), 10, (0.1307,), (0.3081,), tuple(str(d) for d in range(10))),
    "cifar10": Facts((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                     ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    "cifar100": Facts((3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), None),
    "imagenet": Facts(None, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None),  # torchvision's constants
}
# every value data.dataset takes (recipes); ``user`` is popcli.search's own-Dataset marker, not loadable by name
DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagenet", "imagefolder", "synthetic")


def fixed_input(dataset: str) -> tuple[list[int], int] | None:
    """([C, H, W], classes) of a dataset whose input shape and class count never change, else None."""
    facts = FACTS.get(dataset)
    if facts is None or facts.shape is None or facts.num_classes is None:
        return None
    return list(facts.shape), facts.num_classes


def normalization(dataset: str | None, channels: int) -> tuple[list[float], list[float]]:
    """The (mean, std) ``dataset``'s loader normalizes with; 0 and 1 when unknown (or already
    standardized, or when the channel count is not the dataset's)."""
    facts = FACTS.get(dataset) if dataset else None
    if facts is None or len(facts.mean) != channels:
        return [0.0] * channels, [1.0] * channels
    return list(facts.mean), list(facts.std)


def class_names(dataset: str | None, shape: list[int]) -> list[str] | None:
    """``dataset``'s class names, for a model that reads that dataset's images (``shape``); else None."""
    facts = FACTS.get(dataset) if dataset else None
    if facts is None or facts.class_names is None or facts.shape is None or list(facts.shape) != list(shape):
        return None
    return list(facts.class_names)
