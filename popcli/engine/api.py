"""``popcli.search`` in Python: a recipe, or the user's own subnetified model and data.

``search_api`` is what ``popcli.search(...)`` calls. ``search_model(model, train_data,
test_data, arch=..., run_dir=...)`` runs the same search loop as ``popcli search``
(``loop.search``: checkpoints, metrics, resume, summary) on a model the
user built and converted (``popcli.subnetify``) and on their own ``Dataset``s or
``DataLoader``s (``data.user``). It writes a recipe that describes the model, so that the run
exports and its artifact loads in any process:

- ``arch`` is the user's builder as an import path (``"mypkg.nets:build"``), an entry point or
  a registered name (``models.external``); popcli builds it on the meta device and checks that
  its layers and tensors are exactly the given model's (``models.describe``), else ModelError. A
  model that describes itself (``popcli_description``: create_model) gives its own arch, seed,
  init, model keys and structural search keys (method, density, global top-k, dense layers);
  one from ``popcli.subnetify`` its seed, init and policies (``popcli_conversion``). Arguments
  may change the seed, init and arch; a setting that contradicts how the model was built
  (``STRUCTURAL``) is a ModelError naming the key.
- the density is the model's (every subnet layer must have the same); the weights of its
  Conv2d/Linear layers are drawn from the seed with the init (defaults 0 and signed_constant),
  and its biases and other parameters by their policies: what an artifact regenerates.
- the preprocessing the model was given (``popcli_data_config``: input shape, classes, mean,
  std, class names) is checked against the data and recorded in the run, so that the artifact
  and its ONNX export carry it; afterwards the model describes itself (``popcli.save``).
- other settings are recipe keys: ``epochs=3`` (the search section) or ``"data.batch_size": 64``.

Nothing here prints; progress goes through ``on_event`` as for ``loop.search``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import recipe as recipes
from ..data.base import Splits
from ..data.preprocessing import check_preprocessing, data_config
from ..data.user import describe, user_loader
from ..errors import ModelError
from ..models import init_density, init_weights, masked_layers
from ..models.describe import difference
from ..models.policy import init_params
from ..recipe import Recipe, set_key
from ..recipe.schema import unresolved
from .loop import search

LOOP_ARGS = ("resume", "force", "on_event", "should_stop", "load_artifact")  # popcli.search's own arguments, not recipe keys
STRUCTURAL_SEARCH = ("method", "density", "global_topk", "dense_first", "dense_last", "subspace_dim", "subspace_dtype")
# recipe keys that decide the model's structure: a setting may not contradict the model's own
STRUCTURAL = ("model.width", "model.hidden", "model.batchnorm", "model.biases", "model.norms", "model.params",
              *(f"search.{k}" for k in STRUCTURAL_SEARCH))


def _density(model: nn.Module) -> float:
    """The one density of the model's subnet layers."""
    densities = {float(layer.density) for _, layer in masked_layers(model)}
    if not densities:
        raise ModelError(f"{type(model).__name__} has no subnet layers; convert it first: "
                         f"model = popcli.subnetify(model, density=0.5)")
    if len(densities) > 1:
        raise ModelError(f"the model's subnet layers have different densities {sorted(densities)}; popcli.search "
                         f"needs one density (subnetify the whole model with one value)")
    return densities.pop()


def _own_keys(model: nn.Module) -> tuple[dict[str, Any], str]:
    """({dotted recipe key: value} the model was built with, where they come from): a model that
    describes itself (``popcli_description``: create_model, subnetify(arch=)), else the record of
    ``popcli.subnetify`` (``popcli_conversion``: seed, init and the policies), else nothing."""
    own = getattr(model, "popcli_description", None)
    recipe = own.get("recipe") if isinstance(own, dict) else None
    if isinstance(recipe, Recipe):
        sections = recipe.to_dict()
        keys = {"seed": recipe.seed, **{f"model.{k}": v for k, v in sections["model"].items()}}
        keys.update({f"search.{k}": sections["search"][k] for k in STRUCTURAL_SEARCH})
        return keys, "its own description (create_model / subnetify)"
    conversion = getattr(model, "popcli_conversion", None)
    return (dict(conversion), "popcli.subnetify") if isinstance(conversion, dict) else ({}, "")


def _dotted(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as dotted recipe keys: a bare name is a search key (``epochs`` -> ``search.epochs``)."""
    out = {}
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        if section and section not in ("model", "data", "search"):
            raise ModelError(f"popcli.search: unknown setting {key!r}; pass search keys (epochs=, lr=, max_steps=, "
                             f"...) or dotted recipe keys ('data.eval_batch_size')")
        out[key if section else f"search.{name}"] = value
    return out


def _nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"seed": .., "model": {..}, ...} from dotted keys (what ``recipe.from_dict`` takes)."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        section, _, name = key.partition(".")
        if name:
            out.setdefault(section, {})[name] = value
        else:
            out[section] = value
    return out


def _check_same_build(own: dict[str, Any], source: str, given: dict[str, Any]) -> None:
    """A setting that would describe another model than the one given is refused, naming the key."""
    for key in STRUCTURAL:
        if key in given and key in own and given[key] != own[key]:
            raise ModelError(f"popcli.search: {key}={given[key]!r}, but the model was built with {key}={own[key]!r} "
                             f"({source}); drop the setting, or build the model with it")


def _num_classes(model: nn.Module, test: Any, x: torch.Tensor, config: dict[str, Any]) -> int:
    """The model's class count (its output width), checked against the data's ``.classes`` and the
    ``num_classes`` the model was built with."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x[:1].cpu())
    except (RuntimeError, ValueError, TypeError) as err:
        line = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"input_shape: the model cannot take the data's images {list(x.shape[1:])} "
                         f"({type(err).__name__}: {line})") from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ModelError(f"the model returns {list(out.shape)} for one image; popcli.search needs logits [B, classes]")
    width = int(out.shape[1])
    classes = getattr(getattr(test, "dataset", test), "classes", None)
    if isinstance(classes, (list, tuple)) and classes and len(classes) != width:
        raise ModelError(f"num_classes: the data has {len(classes)} classes (its .classes) but the model outputs "
                         f"{width} logits; build the model with num_classes={len(classes)}")
    if config.get("num_classes") not in (None, width):
        raise ModelError(f"num_classes: the model was built with num_classes={config['num_classes']} but outputs "
                         f"{width} logits")
    return width


def _check_shape(config: dict[str, Any], shape: tuple[int, ...]) -> None:
    if config.get("input_shape") not in (None, list(shape)):
        raise ModelError(f"input_shape: the model was built for {config['input_shape']} (create_model / subnetify) but "
                         f"the data's images are {list(shape)}; build it with input_shape={tuple(shape)}")


def _data_preprocessing(config: dict[str, Any], shape: tuple[int, ...], classes: int, data: Any) -> dict[str, Any]:
    """mean, std and class names the artifact will record: the model's (create_model / subnetify
    arguments), class names else the data's ``.classes``; a disagreement names the key."""
    found = getattr(getattr(data, "dataset", data), "classes", None)
    found = list(found) if isinstance(found, (list, tuple)) and all(isinstance(c, str) for c in found) else None
    names = config.get("class_names")
    if names is not None and found is not None and list(names) != found:
        raise ModelError(f"class_names: the model was given {names[:3]}... but the data's .classes are {found[:3]}...; "
                         f"give the names in the data's label order")
    check_preprocessing(shape, classes, config.get("mean"), config.get("std"), names or found)
    return {"mean": config.get("mean"), "std": config.get("std"), "class_names": names or found}


def _recipe(model: nn.Module, arch: str | None, seed: int | None, init: str | None, batch_size: int,
            settings: dict[str, Any]) -> Recipe:
    """The recipe describing the user's search: the model's own keys, then the arguments."""
    own, source = _own_keys(model)
    given = {k: v for k, v in (("model.arch", arch), ("seed", seed), ("model.init", init)) if v is not None}
    given.update(_dotted(settings))
    _check_same_build(own, source, {**given, "search.density": given.get("search.density", _density(model))})
    keys = {"seed": 0, "model.init": "signed_constant", **own, **given, "search.density": _density(model),
            "data.dataset": "user", "data.batch_size": batch_size}
    if not keys.get("model.arch"):
        raise ModelError("popcli.search(model, ...) needs arch='package.module:function': the function that builds "
                         "this model, so that its artifact can be rebuilt in another process (docs/BRING_YOUR_OWN.md)")
    return recipes.from_dict(_nested(keys))


def _check_arch(model: nn.Module, recipe: Recipe, shape: tuple[int, ...], num_classes: int) -> None:
    """``recipe.model.arch`` must build exactly ``model``'s tensors (so an artifact can rebuild it)."""
    found = difference(model, recipe, shape, num_classes)
    if found is not None:
        raise ModelError(f"arch {recipe.model.arch!r} builds a different model than the one given ({found.detail}); "
                         f"point arch at the function that built this model (same arguments, model.biases/"
                         f"model.norms as subnetify had them), before subnetify")


def search_model(model: nn.Module, train_data: Any, test_data: Any, *, arch: str | None = None,
                 run_dir: str | Path, seed: int | None = None, init: str | None = None, batch_size: int = 128,
                 workers: int = 0, resume: bool = False, force: bool = False,
                 on_event: Callable[[str, dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 load_artifact: Callable[[Path], nn.Module] | None = None, **settings: Any) -> dict[str, Any]:
    """Search the scores of the user's subnetified ``model`` on their own data; the summary
    (with ``"recipe"``: the recipe written to ``run_dir``, which ``popcli export`` uses). The model
    then describes itself (``popcli.save(model, path)``) and carries ``popcli_data_config``."""
    if isinstance(train_data, DataLoader) and train_data.batch_size:
        batch_size = train_data.batch_size  # the loader's batch is the recipe's (images/s, learning rate schedule)
    recipe = _recipe(model, arch, seed, init, batch_size, settings)
    seed = recipe.seed
    config = getattr(model, "popcli_data_config", None) or {}
    probe = user_loader(test_data, train=False, batch_size=batch_size, seed=seed, workers=workers, device="cpu")
    x, _ = next(iter(probe.batches()))
    shape = tuple(int(d) for d in x.shape[1:])
    _check_shape(config, shape)
    classes = _num_classes(model, test_data, x, config)
    given = _data_preprocessing(config, shape, classes, test_data)
    _check_arch(model, recipe, shape, classes)
    init_weights(model, recipe.seed, recipe.model.init, init_density(recipe.search))
    init_params(model, recipe.seed, recipe.model.biases, recipe.model.params)  # what an artifact regenerates

    def data(device: torch.device) -> Splits:
        loaders = (user_loader(source, train=train, batch_size=size, seed=seed, workers=workers, device=device,
                               num_classes=classes)
                   for source, train, size in ((train_data, True, batch_size),
                                               (test_data, False, recipe.data.eval_batch_size)))
        train, test = loaders
        return Splits(train, None, test, describe(train, test, train_data, classes, given))

    summary = search(recipe, run_dir, resume=resume, force=force, on_event=on_event, should_stop=should_stop,
                     user_model=model, user_data=data, load_artifact=load_artifact)
    info = {"shape": list(shape), "num_classes": classes, **{k: v for k, v in given.items() if v is not None}}
    model.popcli_description = {"recipe": recipe, "data_info": info}
    model.popcli_data_config = data_config(recipe.data.dataset, shape, classes, given["mean"], given["std"],
                                           given["class_names"])
    return {**summary, "recipe": recipe.to_dict()}


def search_api(model_or_recipe: Any = None, train_data: Any = None, test_data: Any = None, *,
               run_dir: str | Path | None = None, overrides: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """``popcli.search(...)``: a recipe (a Recipe, a YAML path, or None for the quick start, with
    ``overrides``) searched into ``run_dir``, or ``search_model`` for an ``nn.Module`` and data."""
    if run_dir is None:
        raise ModelError("popcli.search needs run_dir=...: the folder for its checkpoints, metrics and summary")
    if isinstance(model_or_recipe, nn.Module):
        if train_data is None or test_data is None:
            raise ModelError("popcli.search(model, train_data, test_data, ...): give both a train and a test "
                             "Dataset (or DataLoader)")
        return search_model(model_or_recipe, train_data, test_data, run_dir=run_dir, **kwargs)
    if train_data is not None or test_data is not None:
        raise ModelError("popcli.search(recipe, ...) reads its data from the recipe; to search on your own Dataset, "
                         "pass a subnetified model first: popcli.search(model, train_data, test_data, arch=...)")
    loop_args = {k: kwargs.pop(k) for k in LOOP_ARGS if k in kwargs}
    settings = _dotted(kwargs)  # keyword settings, as --set gives them: search keys, or dotted recipe keys
    if isinstance(model_or_recipe, Recipe):  # already resolved: its optimizer keys stay as they are
        recipe = unresolved(model_or_recipe.to_dict())
        for key, value in settings.items():
            set_key(recipe, key, value, validate=False)
        recipe = recipes.from_dict(recipe.to_dict())
    else:  # before the method's defaults apply, as --set (JSON values are YAML)
        recipe = recipes.load(model_or_recipe, [*(overrides or []),
                                                *(f"{k}={json.dumps(v, default=str)}" for k, v in settings.items())])
    return search(recipe, run_dir, **loop_args)
