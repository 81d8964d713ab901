"""The typed recipe: one object (model / data / search sections + seed) passed down everywhere.

Recipes are YAML files; every key can be overridden with ``--set section.key=value`` where the
value is parsed as YAML (``--set data.shape=[3,32,32]``). Unknown keys, wrong types and
out-of-range values raise ``RecipeError`` naming the key. ``to_dict`` gives the resolved recipe
that is saved next to every run and inside every artifact.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import RecipeError
from .rng import INITS, MAX_SEED

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
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | cifar10 | cifar100 | imagenet | synthetic
    data_dir: str | None = None  # else $POPCLI_DATA, the user cache, system dataset folders
    download: bool = False  # let torchvision download when nothing is found locally
    batch_size: int = 128
    eval_batch_size: int = 1000
    val_fraction: float = 0.0  # held out from train for model selection ("best" checkpoint)
    augment: bool | None = None  # None: the dataset's standard (CIFAR crop+flip, none for MNISTs)
    workers: int = 4  # loader processes for on-disk datasets (imagenet)
    image_size: int = 224  # imagenet crop size
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])  # synthetic only: [C, H, W]
    num_classes: int = 10  # synthetic only
    train_size: int = 2048  # synthetic only
    test_size: int = 512  # synthetic only


@dataclass
class SearchConfig:
    method: Literal["edge-popup", "supermask", "dense"] = "edge-popup"  # supermask: Zhou et al. 2019
    density: float = 0.5  # fraction of weights KEPT per layer
    global_topk: bool = False  # one top-k across all masked layers instead of per layer
    dense_first: bool = False  # keep the first layer dense (trained weights, not masked)
    dense_last: bool = False  # keep the last layer dense
    epochs: int = 10
    max_steps: int | None = None  # stop after this many training steps in total
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # mixed precision on CUDA: bf16 where supported, else fp16 with a loss scaler (CPU: ignored)
    channels_last: bool = True  # NHWC memory layout for conv models on CUDA (faster tensor-core convs)
    compile: bool = False  # torch.compile the model (long first steps; pays off on long GPU runs)
    threads: int | None = None  # torch CPU threads; None keeps torch's default


@dataclass
class Recipe:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- checking values

_RANGES: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED),
    "model.width": (1e-3, 1e3),
    "data.batch_size": (1, 1 << 20),
    "data.eval_batch_size": (1, 1 << 20),
    "data.val_fraction": (0.0, 0.9),
    "data.workers": (0, 256),
    "data.image_size": (8, 4096),
    "data.num_classes": (2, 100000),
    "data.train_size": (1, 1 << 24),
    "data.test_size": (1, 1 << 24),
    "search.epochs": (0, 100000),
    "search.max_steps": (1, 1 << 40),
    "search.lr": (0.0, 100.0),
    "search.momentum": (0.0, 0.9999),
    "search.weight_decay": (0.0, 1.0),
    "search.warmup_epochs": (0.0, 100000),
    "search.label_smoothing": (0.0, 0.99),
    "search.threads": (1, 1024),
}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(map(str, get_args(tp)))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked (and int->float widened) against the annotation ``tp``."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise RecipeError(f"{key}: {value!r} is not one of: {', '.join(map(str, get_args(tp)))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _coerce(key, value, option)
                except RecipeError:
                    pass
        raise RecipeError(f"{key}: expected {' or '.join(map(_type_name, options))}, got {value!r}")
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _check_range(key: str, value: Any) -> None:
    if key in _RANGES and value is not None:
        lo, hi = _RANGES[key]
        if not lo <= value <= hi:
            raise RecipeError(f"{key}: {value!r} is out of range [{lo}, {hi}]")


def _validate(recipe: Recipe) -> Recipe:
    if not 0.0 < recipe.search.density <= 1.0:
        raise RecipeError(f"search.density: {recipe.search.density!r} must be in (0, 1] (the fraction of weights kept)")
    shape = recipe.data.shape
    if len(shape) != 3 or min(shape) < 1:
        raise RecipeError(f"data.shape: expected [C, H, W] of positive integers, got {shape!r}")
    if any(h < 1 for h in recipe.model.hidden):
        raise RecipeError(f"model.hidden: sizes must be positive, got {recipe.model.hidden!r}")
    if recipe.search.epochs == 0 and recipe.search.max_steps is None:
        raise RecipeError("search.epochs: 0 epochs needs search.max_steps to bound the run")
    return recipe


# --------------------------------------------------------------------------- building


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(data: dict[str, Any] | None) -> Recipe:
    """A validated Recipe from a nested dict (missing keys take their defaults)."""
    data = dict(data or {})
    recipe = Recipe()
    top = _section_types(Recipe)
    for key, value in data.items():
        if key not in top:
            raise RecipeError(f"unknown recipe key {key!r}; valid top-level keys: {', '.join(top)}")
        if key == "seed":
            recipe.seed = _coerce("seed", value, int)
            _check_range("seed", recipe.seed)
            continue
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a section (mapping), got {value!r}")
        section = getattr(recipe, key)
        for sub, subvalue in value.items():
            set_key(recipe, f"{key}.{sub}", subvalue, validate=False)
        setattr(recipe, key, section)
    return _validate(recipe)


def set_key(recipe: Recipe, dotted: str, value: Any, validate: bool = True) -> Recipe:
    """Set ``section.key`` (or ``seed``) on ``recipe`` in place, type- and range-checked."""
    if dotted == "seed":
        recipe.seed = _coerce("seed", value, int)
        _check_range("seed", recipe.seed)
        return _validate(recipe) if validate else recipe
    section_name, _, key = dotted.partition(".")
    sections = {"model": ModelConfig, "data": DataConfig, "search": SearchConfig}
    if section_name not in sections or not key:
        raise RecipeError(f"unknown recipe key {dotted!r}; keys look like seed, model.arch, data.batch_size, search.lr")
    types_ = _section_types(sections[section_name])
    if key not in types_:
        raise RecipeError(f"unknown recipe key {dotted!r}; valid {section_name} keys: {', '.join(types_)}")
    coerced = _coerce(dotted, value, types_[key])
    _check_range(dotted, coerced)
    setattr(getattr(recipe, section_name), key, coerced)
    return _validate(recipe) if validate else recipe


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.lr=0.05"`` -> ("search.lr", 0.05); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: expected section.key=value, e.g. --set search.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(f"--set {text!r}: value is not valid YAML ({err.__class__.__name__})") from None
    return key.strip(), value


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (None: the packaged quick start) and apply ``--set`` overrides."""
    if path is None:
        from importlib.resources import files

        text = files("popcli").joinpath("recipes/quickstart.yaml").read_text()
        source = "the packaged quickstart recipe"
    else:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe {str(path)!r} not found; pass a YAML file (see recipes/README.md)")
        text, source = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping with model/data/search sections")
    recipe = from_dict(data)
    for text_override in overrides or []:
        set_key(recipe, *parse_override(text_override), validate=False)
    return _validate(recipe)


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
