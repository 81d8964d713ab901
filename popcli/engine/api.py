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
  model that describes itself (``popcli_description``) gives its own arch, seed, init and model
  keys unless the arguments say otherwise.
- the density is the model's (every subnet layer must have the same); the weights of its
  Conv2d/Linear layers are drawn from ``seed`` (default 0) with ``init`` (default
  signed_constant), what an artifact regenerates: whatever weights the model had are replaced.
- other settings are recipe keys: ``epochs=3`` (the search section) or ``"data.batch_size": 64``.

Nothing here prints; progress goes through ``on_event`` as for ``loop.search``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .. import recipe as recipes
from ..data.base import Splits
from ..data.user import describe, user_loader
from ..errors import ModelError
from ..models import init_density, init_weights, masked_layers
from ..models.describe import difference
from ..recipe import Recipe
from .loop import search


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


def _recipe(arch: str, density: float, seed: int, init: str, batch_size: int, settings: dict[str, Any],
            model_keys: dict[str, Any]) -> Recipe:
    """The recipe that describes the user's search (settings: search keys, or dotted ``section.key``)."""
    sections: dict[str, dict[str, Any]] = {"model": {**model_keys, "arch": arch, "init": init},
                                           "data": {"dataset": "user", "batch_size": batch_size},
                                           "search": {"density": density}}
    for key, value in settings.items():
        section, _, name = key.rpartition(".")
        if section and section not in sections:
            raise ModelError(f"popcli.search: unknown setting {key!r}; pass search keys (epochs=, lr=, max_steps=, "
                             f"...) or dotted recipe keys ('data.eval_batch_size')")
        sections[section or "search"][name] = value
    return recipes.from_dict({"seed": seed, **sections})


def _check_arch(model: nn.Module, recipe: Recipe, shape: tuple[int, ...], num_classes: int) -> None:
    """``recipe.model.arch`` must build exactly ``model``'s tensors (so an artifact can rebuild it)."""
    found = difference(model, recipe, shape, num_classes)
    if found is not None:
        raise ModelError(f"arch {recipe.model.arch!r} builds a different model than the one given ({found.detail}); "
                         f"point arch at the function that built this model (same arguments), before subnetify")


def _num_classes(model: nn.Module, test: Any, x: torch.Tensor) -> int:
    """Classes: the dataset's ``.classes`` if it has them, else the model's output width."""
    classes = getattr(getattr(test, "dataset", test), "classes", None)
    if isinstance(classes, (list, tuple)) and classes:
        return len(classes)
    was_training = model.training
    with torch.no_grad():
        out = model.eval()(x[:1].cpu())
    model.train(was_training)
    if out.dim() != 2:
        raise ModelError(f"the model returns {list(out.shape)} for one image; popcli.search needs logits [B, classes]")
    return int(out.shape[1])


def _own_description(model: nn.Module) -> tuple[str | None, int | None, str | None, dict[str, Any]]:
    """(arch, seed, init, model keys) of a model that describes itself (``popcli_description``:
    ``popcli.create_model``, ``popcli.subnetify(..., arch=...)``), else Nones."""
    own = getattr(model, "popcli_description", None)
    recipe = own.get("recipe") if isinstance(own, dict) else None
    if not isinstance(recipe, Recipe):
        return None, None, None, {}
    return recipe.model.arch, recipe.seed, recipe.model.init, recipe.to_dict()["model"]


def search_model(model: nn.Module, train_data: Any, test_data: Any, *, arch: str | None = None,
                 run_dir: str | Path, seed: int | None = None, init: str | None = None, batch_size: int = 128,
                 workers: int = 0, resume: bool = False, force: bool = False,
                 on_event: Callable[[str, dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 **settings: Any) -> dict[str, Any]:
    """Search the scores of the user's subnetified ``model`` on their own data; the summary
    (with ``"recipe"``: the recipe written to ``run_dir``, which ``popcli export`` uses)."""
    own_arch, own_seed, own_init, model_keys = _own_description(model)
    arch = arch or own_arch
    seed = seed if seed is not None else own_seed if own_seed is not None else 0
    init = init or own_init or "signed_constant"
    if not arch:
        raise ModelError("popcli.search(model, ...) needs arch='package.module:function': the function that builds "
                         "this model, so that its artifact can be rebuilt in another process (docs/BRING_YOUR_OWN.md)")
    if isinstance(train_data, DataLoader) and train_data.batch_size:
        batch_size = train_data.batch_size  # the loader's batch is the recipe's (images/s, learning rate schedule)
    cpu = torch.device("cpu")
    probe = user_loader(test_data, train=False, batch_size=batch_size, seed=seed, workers=workers, device=cpu)
    x, _ = next(iter(probe.batches()))
    shape, classes = tuple(int(d) for d in x.shape[1:]), _num_classes(model, test_data, x)
    recipe = _recipe(arch, _density(model), seed, init, batch_size, settings, model_keys)
    _check_arch(model, recipe, shape, classes)
    init_weights(model, recipe.seed, recipe.model.init, init_density(recipe.search))

    def data(device: torch.device) -> Splits:
        train = user_loader(train_data, train=True, batch_size=batch_size, seed=seed, workers=workers, device=device)
        test = user_loader(test_data, train=False, batch_size=recipe.data.eval_batch_size, seed=seed, workers=workers,
                           device=device)
        info = describe(train, test, train_data, classes)
        return Splits(train, None, test, info)

    summary = search(recipe, run_dir, resume=resume, force=force, on_event=on_event, should_stop=should_stop,
                     user_model=model, user_data=data)
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
    recipe = model_or_recipe if isinstance(model_or_recipe, Recipe) else recipes.load(model_or_recipe, overrides)
    return search(recipe, run_dir, **kwargs)
