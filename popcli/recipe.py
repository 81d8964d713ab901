"""The typed recipe: one object (model / data / search sections + seed) passed down everywhere.

Recipes are YAML files; every key can be overridden with ``--set section.key=value`` where the
value is parsed as YAML (``--set data.shape=[3,32,32]``). Unknown keys, wrong types and
out-of-range values raise ``RecipeError`` naming the key; so do files that are not UTF-8 text,
hold no mapping (empty or only comments), or repeat a key. ``to_dict`` gives the resolved recipe
that is saved next to every run and inside every artifact.
"""

from __future__ import annotations

import dataclasses
import functools
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
    method: Literal["edge-popup", "supermask", "biprop", "signed-supermask", "dense"] = "edge-popup"  # docs/ALGORITHM.md
    density: float = 0.5  # fraction of weights KEPT per layer
    global_topk: bool = False  # one top-k across all masked layers instead of per layer
    density_schedule: Literal["constant", "anneal"] = "constant"  # anneal: 1.0 -> density (docs/ALGORITHM.md)
    density_anneal_epochs: float = 0.0  # anneal: epochs from 1.0 to search.density (cubic)
    dense_first: bool = False  # keep the first layer dense (trained weights, not masked)
    dense_last: bool = False  # keep the last layer dense
    epochs: int = 10
    max_steps: int | None = None  # stop after this many training steps in total
    # optimizer keys: None (unset) takes the method's paper default (popcli.methods), see resolve()
    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
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

_RANGES: dict[str, tuple[float, float]] = {
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
    "search.epochs": (0, 100000),
    "search.max_steps": (1, 1 << 40),
    "search.lr": (0.0, 100.0),
    "search.momentum": (0.0, 0.9999),
    "search.weight_decay": (0.0, 1.0),
    "search.warmup_epochs": (0.0, 100000),
    "search.density_anneal_epochs": (0.0, 100000),
    "search.label_smoothing": (0.0, 0.99),
    "search.threads": (1, 1024),
    "search.log_every": (1, 1 << 30),
}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(map(str, get_args(tp)))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _short(value: Any) -> str:
    """repr(value), cut to fit one line of an error message (a 5000-digit seed)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` checked (and int->float widened) against the annotation ``tp``."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise RecipeError(f"{key}: {_short(value)} is not one of: {', '.join(map(str, get_args(tp)))}")
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
        raise RecipeError(f"{key}: expected {' or '.join(map(_type_name, options))}, got {_short(value)}")
    if origin is list:
        (item,) = get_args(tp)
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list of {_type_name(item)}, got {_short(value)}")
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise RecipeError(f"{key}: expected {_type_name(tp)}, got {_short(value)}")
    return value


def _check_range(key: str, value: Any) -> None:
    if key in _RANGES and value is not None:
        lo, hi = _RANGES[key]
        if not lo <= value <= hi:
            raise RecipeError(f"{key}: {_short(value)} is out of range [{lo}, {hi}]")


def _validate(recipe: Recipe) -> Recipe:
    if not 0.0 < recipe.search.density <= 1.0:
        raise RecipeError(f"search.density: {_short(recipe.search.density)} must be in (0, 1] (the fraction of weights kept)")
    shape = recipe.data.shape
    if len(shape) != 3 or min(shape) < 1:
        raise RecipeError(f"data.shape: expected [C, H, W] of positive integers, got {_short(shape)}")
    if any(h < 1 for h in recipe.model.hidden):
        raise RecipeError(f"model.hidden: sizes must be positive, got {_short(recipe.model.hidden)}")
    _check_schedule(recipe.search)
    if recipe.search.epochs == 0 and recipe.search.max_steps is None:
        raise RecipeError("search.epochs: 0 epochs needs search.max_steps to bound the run")
    return recipe


def _check_schedule(search: SearchConfig) -> None:
    from .methods import METHODS

    if search.density_schedule == "constant":
        return
    method = METHODS.get(search.method)
    if method is not None and not method.topk:
        raise RecipeError(f"search.density_schedule: {search.density_schedule} needs a top-k method (edge-popup, "
                          f"biprop, signed-supermask); {search.method} does not rank scores at a density")
    if search.density_anneal_epochs <= 0:
        raise RecipeError("search.density_anneal_epochs: anneal needs a positive number of epochs, e.g. "
                          "--set search.density_anneal_epochs=3")


# --------------------------------------------------------------------------- building


def resolve(recipe: Recipe) -> Recipe:
    """Fill every unset (None) optimizer key of ``recipe.search`` with its method's paper default,
    in place; what is resolved stays, so a saved recipe keeps its values (idempotent)."""
    from .methods import OPTIMIZER_KEYS, optimizer_default

    for key in OPTIMIZER_KEYS:
        if getattr(recipe.search, key) is None:
            setattr(recipe.search, key, optimizer_default(recipe.search.method, key))
    return recipe


@functools.lru_cache(maxsize=None)
def _section_types(cls: type) -> dict[str, Any]:  # cached: get_type_hints costs ~5 ms a call
    return typing.get_type_hints(cls)


def from_dict(data: dict[str, Any] | None) -> Recipe:
    """A validated, resolved Recipe from a nested dict (missing keys take their defaults)."""
    return _validate(resolve(_unresolved(data)))


def _unresolved(data: dict[str, Any] | None) -> Recipe:
    """A validated Recipe from a nested dict, its unset optimizer keys still None."""
    data = dict(data or {})
    recipe = Recipe()
    top = _section_types(Recipe)
    for key, value in data.items():
        if key not in top:
            raise RecipeError(f"unknown recipe key {_short(key)}; valid top-level keys: {', '.join(top)}")
        if key == "seed":
            recipe.seed = _coerce("seed", value, int)
            _check_range("seed", recipe.seed)
            continue
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a section (mapping), got {_short(value)}")
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
        raise RecipeError(f"unknown recipe key {_short(dotted)}; keys look like seed, model.arch, data.batch_size, search.lr")
    types_ = _section_types(sections[section_name])
    if key not in types_:
        raise RecipeError(f"unknown recipe key {_short(dotted)}; valid {section_name} keys: {', '.join(types_)}")
    coerced = _coerce(dotted, value, types_[key])
    _check_range(dotted, coerced)
    setattr(getattr(recipe, section_name), key, coerced)
    return _validate(recipe) if validate else recipe


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping repeating a key (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise RecipeError(f"key {_short(key)} appears twice (line {key_node.start_mark.line + 1}); keep one")
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed as YAML with duplicate keys refused; RecipeError naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{source}: nested too deeply to read; a recipe is two levels of mappings") from None
    except (ValueError, OverflowError) as err:  # e.g. a 5000-digit integer
        raise RecipeError(f"{source}: a value cannot be read ({str(err).splitlines()[0][:120]})") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"search.lr=0.05"`` -> ("search.lr", 0.05); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {_short(text)}: expected section.key=value, e.g. --set search.lr=0.05")
    return key.strip(), parse_yaml(raw, f"--set {text[:80]!r}") if raw.strip() else None


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (a file, a packaged recipe's name such as ``cifar10-conv4``, or None: the
    packaged quick start) and apply ``--set`` overrides."""
    if path is None:
        from importlib.resources import files

        text = files("popcli").joinpath("recipes/quickstart.yaml").read_text()
        source = "the packaged quickstart recipe"
    else:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            from .catalog import packaged_text, unknown

            text, source = packaged_text(str(path)), f"the packaged recipe {str(path)!r}"
            if text is None:
                raise unknown(str(path))
        else:
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise RecipeError(f"recipe {source!r} is not UTF-8 text (a binary file?); pass a YAML recipe") from None
            except OSError as err:
                raise RecipeError(f"recipe {source!r} cannot be read ({err.strerror}); check the path") from None
    if "\x00" in text:
        raise RecipeError(f"recipe {source!r} holds NUL bytes (a binary file?); pass a YAML recipe")
    data = parse_yaml(text, source)
    if data is None:
        raise RecipeError(f"recipe {source!r} is empty (nothing but blank lines or comments); write its model/data/"
                          "search sections, or omit the recipe for the quick start")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping with model/data/search sections")
    recipe = _unresolved(data)  # the method's defaults apply after the overrides (--set search.method=...)
    for text_override in overrides or []:
        set_key(recipe, *parse_override(text_override), validate=False)
    return _validate(resolve(recipe))


def dump(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
