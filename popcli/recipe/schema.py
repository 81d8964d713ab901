"""The typed recipe: one object (model / data / search sections + seed) passed down everywhere.

The dataclasses are the schema: each field's type, default and comment are the key's reference
(``keys.describe_keys``), ``RANGES`` its numeric range. ``from_dict`` and ``set_key`` check
every value (unknown keys, wrong types and out-of-range values raise ``RecipeError`` naming the
key) and ``resolve`` fills the unset optimizer keys from the method's paper (``popcli.methods``).
``to_dict`` gives the resolved recipe that is saved next to every run and inside every artifact.
Reading YAML is ``io``'s job.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from ..errors import RecipeError, closest, did_you_mean, shown
from ..methods import METHODS, OPTIMIZER_KEYS, optimizer_default
from ..rng import INITS, MAX_SEED

Init = Literal[INITS]  # type: ignore[valid-type]


@dataclass
class ModelConfig:
    arch: str = "conv4"  # a name from `popcli models`
    init: Init = "signed_constant"  # weight distribution (docs/FORMAT.md)
    width: float = 1.0  # channel / unit multiplier
    hidden: list[int] = field(default_factory=lambda: [300, 100])  # fc only: hidden layer sizes
    batchnorm: bool = False  # fc / convN only: non-affine BN after each hidden layer
    biases: Literal["drop", "frozen", "train"] = "drop"  # torchvision models: masked layers' biases (docs/ALGORITHM.md)
    norms: Literal["nonaffine", "train"] = "nonaffine"  # torchvision models: norm gamma/beta removed or trained
    params: Literal["train", "frozen"] = "train"  # other parameters (class token, layer scale, ...)


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | cifar10 | cifar100 | imagenet | imagefolder | synthetic
    data_dir: str | None = None  # else $POPCLI_DATA, the user cache, system dataset folders
    download: bool = False  # let torchvision download when nothing is found locally
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_fraction: float = 0.0  # held out from train for model selection ("best" checkpoint)
    augment: bool | None = None  # None: the dataset's standard (CIFAR crop+flip, none for MNISTs)
    workers: int = 4  # loader processes for on-disk datasets (imagenet)
    image_size: int = 224  # imagenet crop size; imagefolder: images resized + center-cropped to this
    mean: list[float] | None = None  # imagefolder: per-channel mean; None: computed from the train split
    std: list[float] | None = None  # imagefolder: per-channel std; None: computed from the train split
    test_fraction: float = 0.2  # imagefolder without train/ + val/: the share of each class held out as test
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])  # synthetic only: [C, H, W]
    num_classes: int = 10  # synthetic only
    train_size: int = 2048  # synthetic only
    test_size: int = 512  # synthetic only
    permute_task: int | None = None  # a fixed pixel permutation drawn from (seed, task): permuted-MNIST tasks


@dataclass
class SearchConfig:
    method: Literal["edge-popup", "supermask", "biprop", "signed-supermask", "subspace", "dense"] = "edge-popup"  # docs/ALGORITHM.md
    density: float = 0.5  # fraction of weights KEPT per layer
    global_topk: bool = False  # one top-k across all masked layers instead of per layer
    density_schedule: Literal["constant", "anneal"] = "constant"  # anneal: 1.0 -> density (docs/ALGORITHM.md)
    density_anneal_epochs: float = 0.0  # anneal: epochs from 1.0 to search.density (cubic)
    dense_first: bool = False  # keep the first layer dense (trained weights, not masked)
    dense_last: bool = False  # keep the last layer dense
    subspace_dim: int = 1000  # subspace: d, the trained coordinates z (w = w0 + P z, Fastfood P; docs/ALGORITHM.md)
    subspace_dtype: Literal["float32", "float16"] = "float32"  # subspace: z as used and stored (float16: 2 bytes each)
    epochs: int = 10
    max_steps: int | None = None  # stop after this many training steps in total
    checkpoint_every_steps: int | None = None  # also commit last.pt every N steps (a kill loses at most N); null: per epoch
    # optimizer keys: None (unset) takes the method's paper default (popcli.methods), see resolve()
    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    distill_teacher: str | None = None  # knowledge distillation: a teacher run folder, checkpoint (.pt) or artifact (.safetensors); null: off
    distill_temperature: float = 4.0  # distillation: softmax temperature T of teacher and student (Hinton et al. 2015)
    distill_weight: float = 0.5  # distillation: loss = (1 - w) * cross-entropy + w * T^2 * KL(teacher || student)
    iterand_every_steps: int = 0  # IteRand (Chijiwa et al. 2021): re-draw pruned weights every K steps; 0: off (docs/ALGORITHM.md)
    iterand_rate: float = 0.1  # IteRand: probability that a pruned weight is re-drawn in a round (the paper's r)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # mixed precision on CUDA: bf16 where supported, else fp16 with a loss scaler (CPU: ignored)
    channels_last: bool = True  # NHWC memory layout for conv models on CUDA (faster tensor-core convs)
    compile: bool = False  # torch.compile the model (long first steps; pays off on long GPU runs)
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    log: Literal["none", "tensorboard"] = "none"  # tensorboard: scalars in RUN/tensorboard (pip install 'popcli[tensorboard]')
    log_every: int = 50  # steps between logged training scalars


@dataclass
class Recipe:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- checking values

RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED),
    "model.width": (1e-3, 1e3),
    "data.batch_size": (1, 1 << 20),
    "data.eval_batch_size": (1, 1 << 20),
    "data.val_fraction": (0.0, 0.9),
    "data.test_fraction": (0.01, 0.9),
    "data.workers": (0, 256),
    "data.image_size": (8, 4096),
    "data.num_classes": (2, 100000),
    "data.train_size": (1, 1 << 24),
    "data.test_size": (1, 1 << 24),
    "data.permute_task": (0, 1 << 20),
    "search.subspace_dim": (1, 1 << 28),
    "search.epochs": (0, 100000),
    "search.max_steps": (1, 1 << 40),
    "search.checkpoint_every_steps": (1, 1 << 40),
    "search.lr": (0.0, 100.0),
    "search.momentum": (0.0, 0.9999),
    "search.weight_decay": (0.0, 1.0),
    "search.warmup_epochs": (0.0, 100000),
    "search.density_anneal_epochs": (0.0, 100000),
    "search.label_smoothing": (0.0, 0.99),
    "search.distill_temperature": (0.05, 100.0),
    "search.distill_weight": (0.0, 1.0),
    "search.iterand_every_steps": (0, 1 << 40),
    "search.iterand_rate": (0.0, 1.0),
    "search.threads": (1, 1024),
    "search.log_every": (1, 1 << 30),
}


def type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(map(str, get_args(tp)))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


short = shown  # repr cut to one line; a 5000-digit seed is described by its length (errors.shown)


def coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked (and int->float widened) against the annotation ``tp``."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise RecipeError(f"{key}: {short(value)} is not one of: {', '.join(map(str, get_args(tp)))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return coerce(key, value, option)
                except RecipeError:
                    pass
        raise RecipeError(f"{key}: expected {' or '.join(map(type_name, options))}, got {short(value)}")
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list of {type_name(item)}, got {short(value)}")
        return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise RecipeError(f"{key}: expected {type_name(tp)}, got {short(value)}")
    return value


def _check_range(key: str, value: Any) -> None:
    if key in RANGES and value is not None:
        lo, hi = RANGES[key]
        if not lo <= value <= hi:
            raise RecipeError(f"{key}: {short(value)} is out of range [{lo}, {hi}]")


def check_values(recipe: Recipe) -> Recipe:
    if not 0.0 < recipe.search.density <= 1.0:
        raise RecipeError(f"search.density: {short(recipe.search.density)} must be in (0, 1] (the fraction of weights kept)")
    shape = recipe.data.shape
    if len(shape) != 3 or min(shape) < 1:
        raise RecipeError(f"data.shape: expected [C, H, W] of positive integers, got {short(shape)}")
    if any(h < 1 for h in recipe.model.hidden):
        raise RecipeError(f"model.hidden: sizes must be positive, got {short(recipe.model.hidden)}")
    _check_schedule(recipe.search)
    _check_subspace(recipe.search)
    if recipe.search.distill_teacher is not None and not recipe.search.distill_teacher.strip():
        raise RecipeError("search.distill_teacher: an empty path; give a teacher run folder, checkpoint or artifact, "
                          "or null to turn distillation off")
    _check_iterand(recipe.search)
    if recipe.search.epochs == 0 and recipe.search.max_steps is None:
        raise RecipeError("search.epochs: 0 epochs needs search.max_steps to bound the run")
    return recipe


def _check_schedule(search: SearchConfig) -> None:
    if search.density_schedule == "constant":
        return
    method = METHODS.get(search.method)
    if method is not None and not method.topk:
        raise RecipeError(f"search.density_schedule: {search.density_schedule} needs a top-k method (edge-popup, "
                          f"biprop, signed-supermask); {search.method} does not rank scores at a density")
    if search.density_anneal_epochs <= 0:
        raise RecipeError("search.density_anneal_epochs: anneal needs a positive number of epochs, e.g. "
                          "--set search.density_anneal_epochs=3")


def _check_iterand(search: SearchConfig) -> None:
    """IteRand re-draws the frozen weights of edge-popup's masked layers (other methods' rules
    depend on the weights in other ways: biprop's alpha, supermask's sampling)."""
    if not search.iterand_every_steps:
        return
    if search.method != "edge-popup":
        raise RecipeError(f"search.iterand_every_steps: IteRand applies to edge-popup, not {search.method}; set "
                          f"search.method=edge-popup or search.iterand_every_steps=0")
    if search.iterand_rate <= 0.0:
        raise RecipeError("search.iterand_rate: 0 re-draws nothing; give a probability in (0, 1] (the paper uses "
                          "0.1) or set search.iterand_every_steps=0")
def _check_subspace(search: SearchConfig) -> None:
    """subspace trains z only, every weight kept: density 1.0, no global top-k."""
    if search.method != "subspace":
        return
    if search.density != 1.0:
        raise RecipeError(f"search.density: {short(search.density)}, but search.method subspace trains every weight "
                          f"in a random subspace (no mask): set search.density=1.0")
    if search.global_topk:
        raise RecipeError("search.global_topk: search.method subspace ranks no scores (every weight kept); set "
                          "search.global_topk=false")


# --------------------------------------------------------------------------- building


def resolve(recipe: Recipe) -> Recipe:
    """Fill every unset (None) optimizer key of ``recipe.search`` with its method's paper default,
    in place; what is resolved stays, so a saved recipe keeps its values (idempotent)."""
    for key in OPTIMIZER_KEYS:
        if getattr(recipe.search, key) is None:
            setattr(recipe.search, key, optimizer_default(recipe.search.method, key, recipe.search.subspace_dim))
    return recipe


@functools.lru_cache(maxsize=None)
def _section_types(cls: type) -> dict[str, Any]:  # cached: get_type_hints costs ~5 ms a call
    return typing.get_type_hints(cls)


def from_dict(data: dict[str, Any] | None) -> Recipe:
    """A validated, resolved Recipe from a nested dict (missing keys take their defaults)."""
    return check_values(resolve(unresolved(data)))


def unresolved(data: dict[str, Any] | None) -> Recipe:
    """A validated Recipe from a nested dict, its unset optimizer keys still None."""
    data = dict(data or {})
    recipe = Recipe()
    top = _section_types(Recipe)
    for key, value in data.items():
        if key not in top:
            raise RecipeError(f"unknown recipe key {short(key)}{did_you_mean(key, top)}; valid top-level keys: "
                              f"{', '.join(top)}")
        if key == "seed":
            recipe.seed = coerce("seed", value, int)
            _check_range("seed", recipe.seed)
            continue
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a section (mapping), got {short(value)}")
        section = getattr(recipe, key)
        for sub, subvalue in value.items():
            set_key(recipe, f"{key}.{sub}", subvalue, validate=False)
        setattr(recipe, key, section)
    return check_values(recipe)


def all_keys() -> list[str]:
    """Every recipe key, dotted (``seed``, ``model.arch``, ...), in schema order."""
    sections = {"model": ModelConfig, "data": DataConfig, "search": SearchConfig}
    return ["seed", *(f"{name}.{key}" for name, cls in sections.items() for key in _section_types(cls))]


def closest_key(word: str) -> str | None:
    """The recipe key a mistyped or section-less ``word`` most likely means ("density" ->
    "search.density", "search.densty" -> "search.density"), or None."""
    keys = all_keys()
    if word in keys:
        return word
    by_name = {key.rsplit(".", 1)[-1]: key for key in keys}
    name = str(word).rsplit(".", 1)[-1]
    if name in by_name:  # "density" or "model.density": the key of that name
        return by_name[name]
    return closest(word, keys) or by_name.get(closest(name, by_name) or "")


def suggest_key(word: str) -> str:
    """" (did you mean 'search.density'?)" for a mistyped or section-less key, or ""."""
    found = closest_key(word)
    return f" (did you mean {found!r}?)" if found and found != word else ""


def set_key(recipe: Recipe, dotted: str, value: Any, validate: bool = True) -> Recipe:
    """Set ``section.key`` (or ``seed``) on ``recipe`` in place, type- and range-checked."""
    if dotted == "seed":
        recipe.seed = coerce("seed", value, int)
        _check_range("seed", recipe.seed)
        return check_values(recipe) if validate else recipe
    section_name, _, key = dotted.partition(".")
    sections = {"model": ModelConfig, "data": DataConfig, "search": SearchConfig}
    if section_name not in sections or not key:
        raise RecipeError(f"unknown recipe key {short(dotted)}{suggest_key(dotted)}; keys look like "
                          f"seed, model.arch, data.batch_size, search.lr (popcli recipe show lists them)")
    types_ = _section_types(sections[section_name])
    if key not in types_:
        raise RecipeError(f"unknown recipe key {short(dotted)}{suggest_key(dotted)}; valid "
                          f"{section_name} keys: {', '.join(types_)}")
    coerced = coerce(dotted, value, types_[key])
    _check_range(dotted, coerced)
    setattr(getattr(recipe, section_name), key, coerced)
    return check_values(recipe) if validate else recipe
